"""``champion_model``: the promotion gate on the MLflow registry (aliases ``champion``/``challenger``)."""

from pathlib import Path

import dagster as dg

from assets.lib.profile import ProfileConfig, profile_for
from orchestration.resources import MlflowResource, NyxSettings


@dg.asset(group_name="registry", kinds={"mlflow"}, deps=["eval_report"], code_version="champion-v1")
def champion_model(
    context: dg.AssetExecutionContext, settings: NyxSettings, mlflow: MlflowResource, config: ProfileConfig
) -> dg.MaterializeResult:
    """Chooses the challenger on the **dev** split (the better of Stage 1 and Stage 2 on the first gate metric) and
    compares it with the current `champion` on the profile's gate metrics and margins, also on dev: test metrics
    never select a model. On pass the `champion` alias moves to the challenger and the previous champion is
    recorded (roll back with `nyx registry rollback`); on fail nothing moves and the `champion_gate` check says
    why. The record (`reports/promotion.json`) names the split and both stages' dev metrics."""
    from nyx.registry import CHALLENGER, SELECTION_SPLIT, gate, promote
    from nyx.train.stage import StageNotFinished, best_stage, load_stage
    from nyx.utils.io import write_json

    profile = profile_for(settings, config)
    name = profile.promotion.registered_model
    metric = next(iter(profile.promotion.gate_metrics), "ndcg@10")
    try:
        best, by_stage = best_stage(settings.paths, metric)
    except (StageNotFinished, ValueError) as e:
        raise dg.Failure(str(e)) from None
    challenger = best.model_version
    stages = {}
    for stage in ("stage1", "stage2"):
        state = load_stage(settings.paths, stage)
        if state is not None and state.finished:
            stages[stage] = {
                "model_version": state.model_version,
                "registered_model": state.registered_model,
                f"{SELECTION_SPLIT}_metrics": state.dev[0] if state.dev else {},
            }
    if best.registered_model != name:
        raise dg.Failure(
            f"{best.stage} was registered as {best.registered_model!r} but the profile promotes "
            f"{name!r}: train it again under this profile (force_retrain) or fix promotion.registered_model"
        )
    c = mlflow.client()
    _verify_weights(c, name, best)
    c.set_registered_model_alias(name, CHALLENGER, challenger)
    decision = gate(c, name, challenger, profile.promotion.gate_metrics)
    previous = promote(c, name, challenger) if decision.passed and not decision.unchanged else None
    record = {
        **decision.to_json(),
        "challenger_stage": best.stage,
        "selection_metric": metric,
        "stages": stages,
        "previous_champion": previous,
        "dagster_run_id": context.run_id,
    }
    write_json(record, settings.paths.reports / "promotion.json")
    outcome = "unchanged" if decision.unchanged else "promoted" if decision.passed else "not promoted"
    context.log.info(f"{outcome}: " + "; ".join(decision.reasons))
    return dg.MaterializeResult(
        metadata={
            "promoted": decision.passed and not decision.unchanged,
            "unchanged": decision.unchanged,
            "challenger_version": challenger,
            "challenger_stage": best.stage,
            "decided_on": SELECTION_SPLIT,
            f"{SELECTION_SPLIT}_{metric}_by_stage": dg.MetadataValue.json(by_stage),
            "champion_version": challenger if decision.passed else (decision.champion or "none"),
            "previous_champion": previous or (decision.champion or "none"),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "compared": dg.MetadataValue.json(decision.compared),
            "model_version_page": dg.MetadataValue.url(mlflow.model_version_url(name, challenger)),
            "rollback": dg.MetadataValue.md("`nyx registry rollback` (moves `champion` back to the previous version)"),
        }
    )


def _verify_weights(client, name: str, state) -> None:
    """The challenger's weights, as registered (the model version's artifact), match the manifest digest recorded
    on the version when it was registered: nothing altered since is promoted."""
    import mlflow

    from nyx.serving.pyfunc import ARTIFACT_KEY
    from nyx.train.stage import WEIGHTS_TAG
    from nyx.utils.integrity import IntegrityError, verify_manifest

    version = client.get_model_version(name, state.model_version)
    expected = (version.tags or {}).get(WEIGHTS_TAG)
    if not expected:
        raise dg.Failure(
            f"version {state.model_version} of {name!r} has no {WEIGHTS_TAG} tag: register it again "
            "(force_retrain) before promoting"
        )
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{state.model_version}"))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    try:
        verify_manifest(local / flavor["artifacts"][ARTIFACT_KEY]["path"], expected_digest=expected)
    except IntegrityError as e:
        raise dg.Failure(f"not promoting version {state.model_version}: {e}") from None


@dg.asset_check(
    asset=champion_model,
    blocking=True,
    description="the challenger passed the promotion gate (or already is the champion)",
)
def champion_gate(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.utils.io import read_json

    record = read_json(settings.paths.reports / "promotion.json")
    return dg.AssetCheckResult(
        passed=bool(record["passed"]),
        metadata={
            "unchanged": bool(record.get("unchanged", False)),
            "challenger": record["challenger"],
            "champion_before": record.get("champion") or "none",
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in record["reasons"])),
        },
    )
