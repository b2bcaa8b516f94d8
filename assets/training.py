"""Training assets: ``stage1_checkpoint`` and ``stage2_checkpoint``.

Both run :mod:`nyx.train.tracked` as an external process through Dagster Pipes, with the command built by the
``launcher`` resource (plain Python here; ``torchrun``/``deepspeed`` on GPUs and several nodes). Each training is one
MLflow run (params, step metrics, tags linking the Dagster run, asset, code version and DVC md5 of the data); the
result is registered as a version of the profile's ``promotion.registered_model``. The life cycle itself (what to
train, skip/resume/fresh, dev evaluation, registration, the typed ``nyx_state.json``) is :mod:`nyx.train.stage`. A
killed training resumes from its last checkpoint and
continues the same MLflow run when the asset is materialised again; a finished one is not retrained unless its
inputs, settings or code version changed.
"""

import math
from typing import Any

import dagster as dg
from pydantic import Field

from assets.lib.metadata import data_snapshot_md5, md_image, readable_metadata
from assets.lib.profile import ProfileConfig, embedding_store, profile_for
from nyx.train.stage import CODE_VERSIONS
from orchestration.launcher import TrainingLauncher
from orchestration.resources import DvcResource, MlflowResource, NyxSettings


class TrainingAssetConfig(ProfileConfig):
    force_retrain: bool = Field(False, description="train again even if a finished run matches inputs and code")


def finished_stage(settings: NyxSettings, stage: str):
    """The :class:`nyx.train.stage.StageState` of a finished stage (a clear Failure otherwise)."""
    from nyx.train.stage import StageNotFinished
    from nyx.train.stage import finished_stage as finished

    try:
        return finished(settings.paths, stage)
    except StageNotFinished as e:
        raise dg.Failure(str(e)) from None


def run_stage(
    context: dg.AssetExecutionContext,
    stage: str,
    config: TrainingAssetConfig,
    settings: NyxSettings,
    mlflow: MlflowResource,
    dvc: DvcResource,
    launcher: TrainingLauncher,
    pipes: dg.PipesClient,
) -> dg.MaterializeResult:
    """Plan (skip / resume / fresh), launch ``nyx.train.tracked`` through Pipes, then evaluate on dev and register
    (:mod:`nyx.train.stage` holds the life cycle; this function only wires Dagster to it)."""
    from nyx.train.stage import StageNotFinished, finish_stage, plan_stage, stage_train_config, start_stage

    profile = profile_for(settings, config)
    paths = settings.paths
    try:
        spec = stage_train_config(profile, stage, paths)
    except (StageNotFinished, FileNotFoundError) as e:
        raise dg.Failure(str(e)) from None
    client = mlflow.client()
    plan = plan_stage(
        stage, spec, force=config.force_retrain, run_exists=lambda rid: _run_exists(client, rid), md5=dvc.md5
    )
    if plan.note:
        context.log.warning(f"{stage}: {plan.note}")
    if plan.action == "skip":
        context.log.info(f"{stage}: finished run {plan.state.mlflow_run_id} matches inputs and code; not retraining")
        context.instance.add_run_tags(context.run_id, mlflow.dagster_run_tags(context, plan.state.mlflow_run_id))
        return dg.MaterializeResult(metadata=_metadata(plan.state, mlflow, skipped=True))

    def create_run(tags: dict[str, str]) -> str:
        tags = {
            **tags,
            "dagster.run_id": context.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "nyx.profile": settings.profile,
            "dvc.data_md5": data_snapshot_md5(dvc) or "unversioned",
        }
        return client.create_run(
            mlflow.experiment_id(), run_name=f"{stage}-{context.run_id[:8]}", tags=tags
        ).info.run_id

    state = start_stage(plan, registered_model=profile.promotion.registered_model, create_run=create_run)
    if plan.action == "resume":
        context.log.info(
            f"{stage}: resuming MLflow run {state.mlflow_run_id} from the last checkpoint in {plan.out_dir}"
        )
        client.set_tag(state.mlflow_run_id, "nyx.resumed_by_dagster_run", context.run_id)
    mlflow.link_runs(context, state.mlflow_run_id)
    command = launcher.command("nyx.train.tracked", ["--config", str(plan.config_path)], profile.launch)
    env = {**mlflow.env(), "MLFLOW_RUN_ID": state.mlflow_run_id, **launcher.env}
    context.log.info(f"{stage}: launching {' '.join(command)}")
    invocation = pipes.run(
        command=command, context=context, env=env, extras={"stage": stage, "mlflow_run_id": state.mlflow_run_id}
    )
    pipes_meta = {}
    for result in invocation.get_results():
        pipes_meta.update(getattr(result, "metadata", None) or {})
    from nyx.train.stage import TRAIN_RESULT_FILE
    from nyx.utils.io import read_json

    # before anything is registered: the run must have had the processes the profile's batch sizes assume
    expected = launcher.resolved(profile.launch).world_size
    got = int(read_json(plan.out_dir / TRAIN_RESULT_FILE).get("world_size") or 0)
    if got != expected:
        raise dg.Failure(
            f"{stage} trained with {got} process(es) but {expected} were launched (profile launch "
            "settings and launcher resource): check the machine's devices and the launcher"
        )
    state = finish_stage(
        plan,
        state,
        dev_folder=paths.nyxqa / "dev",
        client=client,
        tags={"dagster.run_id": context.run_id},
        info=context.log.info,
        store=embedding_store(settings, profile),
    )
    meta = _metadata(state, mlflow, skipped=False, launcher=launcher.resolved(profile.launch).kind)
    meta.update({k: v for k, v in pipes_meta.items() if k not in meta})
    return dg.MaterializeResult(metadata=readable_metadata(meta))


def _run_exists(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
        return True
    except Exception:
        return False


#: MLflow run tag naming how the training processes were started (``python``, ``torchrun`` or ``deepspeed``)
LAUNCHER_TAG = "nyx.launcher"


def _launch_metadata(client, state, launcher: str | None) -> dict[str, Any]:
    """How the run really ran: the launcher (recorded on the MLflow run as :data:`LAUNCHER_TAG` when ``launcher`` is
    given, i.e. right after training; read back from it for a finished run that is not retrained), processes, the
    accelerate backend and the ZeRO stage (``none`` without DeepSpeed) from the run's ``train_result.json``."""
    summary = state.summary or {}
    if launcher:
        client.set_tag(state.mlflow_run_id, LAUNCHER_TAG, launcher)
    else:
        try:
            launcher = client.get_run(state.mlflow_run_id).data.tags.get(LAUNCHER_TAG)
        except Exception:
            launcher = None
    zero = summary.get("zero_stage")
    return {
        "launcher": launcher or "unknown (trained before the launcher was recorded)",
        "distributed_type": str(summary.get("distributed_type") or "unknown"),
        "zero_stage": f"ZeRO-{int(zero)}" if isinstance(zero, (int, float)) else "none",
    }


def _loss_curve(mlflow: MlflowResource, state) -> dg.MarkdownMetadataValue:
    """The run's loss at every logged step (MLflow history) as an inlined PNG the Dagster UI renders."""
    from nyx.eval.plots import loss_figure

    points = _loss_points(mlflow, state.mlflow_run_id)
    title = f"{state.stage} training loss"
    return md_image(
        loss_figure(points, title=title),
        title,
        caption=f"{len(points)} logged step(s); every step in the [MLflow run]({mlflow.run_url(state.mlflow_run_id)}).",
    )


def _metadata(state, mlflow: MlflowResource, skipped: bool, launcher: str | None = None) -> dict[str, Any]:
    """The materialisation metadata of a training asset (rounded for reading, valid JSON): run, model version, the
    launcher and ZeRO stage the run really used, the loss curve and the dev metrics."""
    summary = state.summary or {}
    meta: dict[str, Any] = {
        "retrained": not skipped,
        "mlflow_run": dg.MetadataValue.url(mlflow.run_url(state.mlflow_run_id)),
        "mlflow_run_id": state.mlflow_run_id,
        "registered_model": state.registered_model,
        "model_version": state.model_version or "",
        "model_uri": state.model_uri,
        "model_version_page": dg.MetadataValue.url(
            mlflow.model_version_url(state.registered_model, state.model_version or "0")
        ),
        "final_dir": dg.MetadataValue.path(state.final_dir or ""),
        "start_model": state.start_model,
        "adapter": state.is_adapter,
        "global_step": int(summary.get("global_step") or 0),
    }
    for key in ("world_size", "global_batch_size"):
        if summary.get(key) is not None:
            meta[key] = int(summary[key])
    if summary.get("resumed_from_step") is not None:
        meta["resumed_from_step"] = int(summary["resumed_from_step"])
    meta.update(_launch_metadata(mlflow.client(), state, launcher))
    for key in ("first_loss", "last_loss"):
        v = summary.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            meta[key] = float(v)
    meta["loss_curve"] = _loss_curve(mlflow, state)
    dev = state.dev
    if dev:
        head = "| dim | " + " | ".join(k for k in dev[0] if k != "dim") + " |"
        sep = "|" + "---|" * len(dev[0])
        body = [
            "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()) + " |" for r in dev
        ]
        meta["dev_retrieval"] = dg.MetadataValue.md("\n".join([head, sep, *body]))
        meta["dev_ndcg@10"] = float(dev[0].get("ndcg@10", 0.0))
        meta["dev_recall@10"] = float(dev[0].get("recall@10", 0.0))
    if state.dev_start:
        start = state.dev_start[0]
        meta["dev_ndcg@10_start_model"] = float(start.get("ndcg@10", 0.0))
        meta["dev_recall@10_start_model"] = float(start.get("recall@10", 0.0))
    return readable_metadata(meta)


@dg.asset(
    group_name="stage1",
    kinds={"pytorch", "mlflow"},  # the launcher that ran: metadata `launcher`
    deps=["nyxqa", "hard_negatives", "training_sources", "data_snapshot"],
    pool="gpu",
    code_version=CODE_VERSIONS["stage1"],
)
def stage1_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingAssetConfig,
    settings: NyxSettings,
    mlflow: MlflowResource,
    dvc: DvcResource,
    launcher: TrainingLauncher,
    pipes: dg.ResourceParam[dg.PipesClient],
) -> dg.MaterializeResult:
    """Stage 1: contrastive training (InfoNCE, in-batch + hard negatives, Matryoshka losses) of the backbone on
    NyxQA train with mined hard negatives (+ any extra sets of the profile), registered as a version of the
    profile's registered model with its dev-split retrieval metrics at every Matryoshka dimension."""
    return run_stage(context, "stage1", config, settings, mlflow, dvc, launcher, pipes)


@dg.asset(
    group_name="stage2",
    kinds={"pytorch", "mlflow"},  # the launcher that ran: metadata `launcher`
    deps=["stage1_checkpoint", "feedback_preferences", "feedback_snapshot"],
    pool="gpu",
    code_version=CODE_VERSIONS["stage2"],
)
def stage2_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingAssetConfig,
    settings: NyxSettings,
    mlflow: MlflowResource,
    dvc: DvcResource,
    launcher: TrainingLauncher,
    pipes: dg.ResourceParam[dg.PipesClient],
) -> dg.MaterializeResult:
    """Stage 2: VLM-feedback alignment. Fine-tunes on the feedback triples, either continuing from the Stage-1
    model (`continue`: a LoRA Stage 1 is continued as the same adapter) or retraining from the base on the
    Stage-1 mix plus the feedback (`retrain`)."""
    return run_stage(context, "stage2", config, settings, mlflow, dvc, launcher, pipes)


def _loss_points(mlflow: MlflowResource, run_id: str) -> list[tuple[int, float, float]]:
    client = mlflow.client()
    epochs = {m.step: m.value for m in client.get_metric_history(run_id, "epoch")}
    return [(m.step, m.value, epochs.get(m.step, 0.0)) for m in client.get_metric_history(run_id, "loss")]


def _loss_check(
    settings: NyxSettings, mlflow: MlflowResource, stage: str, tolerance: float = 0.0
) -> dg.AssetCheckResult:
    """Loss finite at every step, and late in the run below early in the run (times ``1 + tolerance``: Stage 2
    starts from a trained model, where a flat loss is no failure); see :func:`nyx.train.stage.loss_trend`."""
    from nyx.train.stage import loss_trend

    state = finished_stage(settings, stage)
    trend = loss_trend(_loss_points(mlflow, state.mlflow_run_id))
    if not trend["comparable"]:
        return dg.AssetCheckResult(passed=False, description=trend["reason"])
    passed = trend["finite"] and trend["last"] < trend["first"] * (1 + tolerance)
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "logged_steps": trend["logged"],
            "all_finite": trend["finite"],
            "compared": trend["how"],
            "mean_early": trend["first"],
            "mean_late": trend["last"],
            "tolerance": tolerance,
        },
    )


def _loads_check(settings: NyxSettings, mlflow: MlflowResource, stage: str) -> dg.AssetCheckResult:
    import mlflow as mlflow_lib
    import numpy as np

    state = finished_stage(settings, stage)
    mlflow.client()
    model = mlflow_lib.pyfunc.load_model(state.model_uri)
    sample = [
        {"id": "q", "kind": "query", "content": [{"type": "text", "text": "Which town has the red bridge?"}]},
        {"id": "d", "kind": "document", "content": [{"type": "text", "text": "The bridge of Alder is red."}]},
    ]
    import pandas as pd

    out = model.predict(pd.DataFrame(sample))
    emb = np.array(out["embedding"].tolist(), dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1)
    ok = bool(np.isfinite(emb).all() and np.allclose(norms, 1.0, atol=1e-3))
    return dg.AssetCheckResult(
        passed=ok,
        metadata={
            "model_uri": state.model_uri,
            "dim": int(emb.shape[1]),
            "norms": dg.MetadataValue.json([float(x) for x in norms]),
        },
    )


@dg.asset_check(asset=stage1_checkpoint, blocking=True, description="training loss finite and falling over the run")
def stage1_loss_decreasing(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loss_check(settings, mlflow, "stage1")


@dg.asset_check(asset=stage1_checkpoint, blocking=True, description="the registered model loads by URI and embeds")
def stage1_model_loads(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loads_check(settings, mlflow, "stage1")


@dg.asset_check(
    asset=stage2_checkpoint, blocking=True, description="training loss finite and not rising (within 10%) over the run"
)
def stage2_loss_not_rising(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loss_check(settings, mlflow, "stage2", tolerance=0.10)


@dg.asset_check(asset=stage2_checkpoint, blocking=True, description="the registered model loads by URI and embeds")
def stage2_model_loads(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loads_check(settings, mlflow, "stage2")
