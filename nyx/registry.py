"""Model registry operations on ``nyx-retriever``: aliases ``champion``/``challenger``, a recorded previous champion,
the promotion gate and one-command rollback (``nyx registry rollback``). MLflow 3 aliases, never stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_TAG = "nyx.previous_champion"
METRIC_TAG_PREFIX = "eval."


@dataclass
class GateDecision:
    challenger: str
    champion: str | None
    passed: bool
    reasons: list[str] = field(default_factory=list)
    compared: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"challenger": self.challenger, "champion": self.champion, "passed": self.passed,
                "reasons": self.reasons, "compared": self.compared}


def client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(c, name: str, alias: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def version_metrics(c, name: str, version: str) -> dict[str, float]:
    tags = c.get_model_version(name, version).tags or {}
    out = {}
    for k, v in tags.items():
        if k.startswith(METRIC_TAG_PREFIX):
            try:
                out[k[len(METRIC_TAG_PREFIX):].replace("_at_", "@")] = float(v)
            except ValueError:
                pass
    return out


def record_metrics(c, name: str, version: str, metrics: dict[str, float]) -> None:
    for k, v in metrics.items():
        # MLflow tag names cannot hold '@': "ndcg@10" is stored as "eval.ndcg_at_10"
        c.set_model_version_tag(name, version, f"{METRIC_TAG_PREFIX}{k.replace('@', '_at_')}", f"{float(v):.6f}")


def gate(c, name: str, challenger: str, margins: dict[str, float]) -> GateDecision:
    """Does ``challenger`` beat the current champion by each metric's margin? With no champion, any challenger
    with every gate metric recorded passes."""
    champion = alias_version(c, name, CHAMPION)
    ch_m = version_metrics(c, name, challenger)
    decision = GateDecision(challenger=challenger, champion=champion, passed=True)
    if champion == challenger:
        decision.reasons.append(f"version {challenger} already is the champion")
        decision.passed = False
        return decision
    cp_m = version_metrics(c, name, champion) if champion else {}
    for metric, margin in margins.items():
        new, old = ch_m.get(metric), cp_m.get(metric) if champion else None
        decision.compared[metric] = {"challenger": new, "champion": old, "margin": margin}
        if new is None:
            decision.passed = False
            decision.reasons.append(f"challenger v{challenger} has no recorded {metric}")
        elif champion is not None and old is not None and not new > old + margin:
            decision.passed = False
            decision.reasons.append(f"{metric}: challenger {new:.4f} does not beat champion {old:.4f} + {margin}")
    if decision.passed:
        decision.reasons.append("no champion yet" if champion is None else "beats the champion on every gate metric")
    return decision


def promote(c, name: str, version: str) -> str | None:
    """Point ``champion`` at ``version``; remember the previous champion for rollback. Returns the previous one."""
    previous = alias_version(c, name, CHAMPION)
    if previous and previous != version:
        c.set_registered_model_tag(name, PREVIOUS_TAG, previous)
    c.set_registered_model_alias(name, CHAMPION, version)
    return previous


def rollback(c, name: str) -> tuple[str, str]:
    """Move ``champion`` back to the recorded previous champion. Returns (from, to)."""
    model = c.get_registered_model(name)
    previous = (model.tags or {}).get(PREVIOUS_TAG)
    current = alias_version(c, name, CHAMPION)
    if not previous:
        raise ValueError(f"no previous champion recorded for {name!r}: nothing to roll back to")
    c.set_registered_model_alias(name, CHAMPION, previous)
    if current:
        c.set_registered_model_tag(name, PREVIOUS_TAG, current)
    return current or "", previous
