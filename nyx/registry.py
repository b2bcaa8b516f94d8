"""Model registry operations on the registered retriever (the profile's ``promotion.registered_model``, default
``nyx-retriever``): aliases ``champion``/``challenger``, a recorded previous champion, the promotion gate and
one-command rollback (``nyx registry rollback``). MLflow 3 aliases, never stages.

Metrics are recorded on a version per split (tags ``eval.<split>.<metric>``). The gate decides on the **dev** split
only: test metrics are reported, never used to select a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nyx.tracking import metric_key, metric_name

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_TAG = "nyx.previous_champion"
METRIC_TAG_PREFIX = "eval."
#: The only split a model may be chosen on.
SELECTION_SPLIT = "dev"
#: model-version tags naming the version's corpus index (a folder ``nyx.retrieval.load_retriever`` opens) and the
#: corpus it was built from (a BEIR folder): what ``nyx serve models:/<name>@<alias>`` searches
INDEX_DIR_TAG = "nyx.index_dir"
CORPUS_PATH_TAG = "nyx.corpus_path"


@dataclass
class GateDecision:
    challenger: str
    champion: str | None
    passed: bool
    split: str = SELECTION_SPLIT
    #: the challenger already is the champion: nothing new to promote (a pass: nothing to move, nothing wrong)
    unchanged: bool = False
    reasons: list[str] = field(default_factory=list)
    compared: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "challenger": self.challenger,
            "champion": self.champion,
            "passed": self.passed,
            "split": self.split,
            "unchanged": self.unchanged,
            "reasons": self.reasons,
            "compared": self.compared,
        }


def client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(c, name: str, alias: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def _tag_prefix(split: str) -> str:
    if not split or "." in split:
        raise ValueError(f"bad split name {split!r}")
    return f"{METRIC_TAG_PREFIX}{split}."


def version_metrics(c, name: str, version: str, split: str) -> dict[str, float]:
    """The ``split`` metrics recorded on a version (``{"ndcg@10": 0.41, ...}``)."""
    tags = c.get_model_version(name, version).tags or {}
    prefix = _tag_prefix(split)
    out = {}
    for k, v in tags.items():
        if k.startswith(prefix):
            try:
                out[metric_name(k[len(prefix) :])] = float(v)
            except ValueError:
                pass
    return out


def all_version_metrics(c, name: str, version: str) -> dict[str, dict[str, float]]:
    """Every split's metrics of a version: ``{"dev": {...}, "test": {...}}``."""
    splits = {
        k[len(METRIC_TAG_PREFIX) :].split(".", 1)[0]
        for k in (c.get_model_version(name, version).tags or {})
        if k.startswith(METRIC_TAG_PREFIX) and k.count(".") >= 2
    }
    return {s: version_metrics(c, name, version, s) for s in sorted(splits)}


def record_metrics(c, name: str, version: str, metrics: dict[str, float], *, split: str) -> None:
    """Record ``split`` metrics on a version (``dev``: what the gate decides on; ``test``: reported only)."""
    prefix = _tag_prefix(split)
    for k, v in metrics.items():
        # MLflow tag names cannot hold '@': "ndcg@10" on dev is stored as "eval.dev.ndcg_at_10"
        c.set_model_version_tag(name, version, f"{prefix}{metric_key(k)}", f"{float(v):.6f}")


def gate(c, name: str, challenger: str, margins: dict[str, float], split: str = SELECTION_SPLIT) -> GateDecision:
    """Does ``challenger`` beat the current champion by each metric's margin, on the ``dev`` split? With no
    champion, any challenger with every gate metric recorded passes. Any other split is refused: the test split
    is for reporting, and a model chosen on it would have its test numbers inflated."""
    if split != SELECTION_SPLIT:
        raise ValueError(
            f"the promotion gate decides on the {SELECTION_SPLIT!r} split, not {split!r}: test metrics "
            "never select a model"
        )
    champion = alias_version(c, name, CHAMPION)
    ch_m = version_metrics(c, name, challenger, split)
    decision = GateDecision(challenger=challenger, champion=champion, passed=True, split=split)
    if champion == challenger:
        decision.reasons.append(
            f"version {challenger} already is the champion: nothing new to promote (champion v{challenger} unchanged)"
        )
        decision.unchanged = True
        return decision
    cp_m = version_metrics(c, name, champion, split) if champion else {}
    for metric, margin in margins.items():
        new, old = ch_m.get(metric), cp_m.get(metric) if champion else None
        decision.compared[metric] = {"challenger": new, "champion": old, "margin": margin}
        if new is None:
            decision.passed = False
            decision.reasons.append(f"challenger v{challenger} has no recorded {split} {metric}")
        elif champion is not None and old is not None and not new > old + margin:
            decision.passed = False
            decision.reasons.append(
                f"{split} {metric}: challenger {new:.4f} does not beat champion {old:.4f} + {margin}"
            )
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
