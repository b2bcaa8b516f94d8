"""``champion_model``: the promotion gate on the MLflow registry (aliases ``champion``/``challenger``)."""

import dagster as dg

from assets.common import ProfileConfig, profile_for
from assets.training import stage_state
from orchestration.resources import MlflowResource, NyxSettings


@dg.asset(group_name="registry", kinds={"mlflow"}, deps=["eval_report"], code_version="champion-v1")
def champion_model(context: dg.AssetExecutionContext, settings: NyxSettings, mlflow: MlflowResource,
                   config: ProfileConfig) -> dg.MaterializeResult:
    """Compares the challenger (the newest Stage-2 version, else Stage-1) with the current ``champion`` on the
    profile's gate metrics and margins (test split). On pass the ``champion`` alias moves to the challenger and the
    previous champion is recorded (roll back with ``nyx registry rollback``); on fail nothing moves and the
    ``champion_gate`` check says why."""
    from nyx.registry import CHALLENGER, gate, promote
    from nyx.utils.io import write_json

    profile = profile_for(settings, config)
    name = profile.promotion.registered_model
    challenger = None
    for stage in ("stage2", "stage1"):
        state = stage_state(settings.paths.checkpoints / stage)
        if state.get("status") == "finished":
            challenger = state["model_version"]
            break
    if challenger is None:
        raise dg.Failure("no finished Stage-1 or Stage-2 model to consider")
    c = mlflow.client()
    c.set_registered_model_alias(name, CHALLENGER, challenger)
    decision = gate(c, name, challenger, profile.promotion.gate_metrics)
    previous = promote(c, name, challenger) if decision.passed else None
    record = {**decision.to_json(), "previous_champion": previous, "dagster_run_id": context.run_id}
    write_json(record, settings.paths.reports / "promotion.json")
    context.log.info(("promoted" if decision.passed else "not promoted") + ": " + "; ".join(decision.reasons))
    return dg.MaterializeResult(metadata={
        "promoted": decision.passed, "challenger_version": challenger,
        "champion_version": challenger if decision.passed else (decision.champion or "none"),
        "previous_champion": previous or (decision.champion or "none"),
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        "compared": dg.MetadataValue.json(decision.compared),
        "model_version_page": dg.MetadataValue.url(mlflow.model_version_url(name, challenger)),
        "rollback": dg.MetadataValue.md("`nyx registry rollback` (moves `champion` back to the previous version)"),
    })


@dg.asset_check(asset=champion_model, blocking=True, description="the challenger passed the promotion gate")
def champion_gate(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.utils.io import read_json

    record = read_json(settings.paths.reports / "promotion.json")
    return dg.AssetCheckResult(passed=bool(record["passed"]), metadata={
        "challenger": record["challenger"], "champion_before": record.get("champion") or "none",
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in record["reasons"])),
    })
