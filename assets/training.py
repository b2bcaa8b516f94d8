"""Training assets: ``stage1_checkpoint`` and ``stage2_checkpoint``.

Both run :mod:`nyx.train.tracked` as an external process through Dagster Pipes, with the command built by the
``launcher`` resource (plain Python here; ``torchrun``/``deepspeed`` on GPUs and several nodes). Each training is one
MLflow run (params, step metrics, tags linking the Dagster run, asset, code version and DVC md5 of the data); the
result is registered as a version of ``nyx-retriever``. A killed training resumes from its last checkpoint and
continues the same MLflow run when the asset is materialised again; a finished one is not retrained unless its
inputs, settings or code version changed.
"""

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.common import ProfileConfig, profile_for
from orchestration.launcher import TrainingLauncher
from orchestration.resources import DvcResource, MlflowResource, NyxSettings

STAGE1_CODE_VERSION = "stage1-v1"
STAGE2_CODE_VERSION = "stage2-v1"
STATE_FILE = "nyx_state.json"


class TrainingAssetConfig(ProfileConfig):
    force_retrain: bool = Field(False, description="train again even if a finished run matches inputs and code")


def stage_state(output_dir: Path) -> dict[str, Any]:
    p = output_dir / STATE_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def _save_state(output_dir: Path, state: dict[str, Any]) -> None:
    from nyx.utils.io import write_json

    write_json(state, output_dir / STATE_FILE)


def finished_model_dir(settings: NyxSettings, stage: str) -> Path:
    """The final model folder of a finished stage (raises a clear Failure otherwise)."""
    out = settings.paths.checkpoints / stage
    state = stage_state(out)
    if state.get("status") != "finished":
        raise dg.Failure(f"{stage} has not finished training (state: {state.get('status', 'none')}); materialise it")
    return Path(state["final_dir"])


def _fingerprint(train_cfg: dict[str, Any], input_md5s: dict[str, str], code_version: str) -> str:
    blob = json.dumps({"train": train_cfg, "inputs": input_md5s, "code": code_version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_training(
    context: dg.AssetExecutionContext,
    *,
    stage: str,
    code_version: str,
    train_settings: dict[str, Any],
    sources: list[dict[str, Any]],
    inputs: dict[str, Path],
    init_adapter: str | None,
    settings: NyxSettings,
    mlflow: MlflowResource,
    dvc: DvcResource,
    launcher: TrainingLauncher,
    pipes: dg.PipesClient,
    force: bool,
    dev_folder: Path,
    base_model: str,
) -> dg.MaterializeResult:
    from nyx.train.trainer import TrainConfig
    from nyx.utils.io import write_json

    paths = settings.paths
    out = paths.checkpoints / stage
    input_md5s = {name: dvc.md5(p) for name, p in inputs.items()}
    cfg_dict = dict(train_settings)
    cfg_dict.update({"data": sources, "init_adapter": init_adapter, "output_dir": str(out)})
    train_cfg = TrainConfig.model_validate(cfg_dict)
    fingerprint = _fingerprint(json.loads(train_cfg.model_dump_json()), input_md5s, code_version)
    state = stage_state(out)

    if not force and state.get("fingerprint") == fingerprint and state.get("status") == "finished":
        context.log.info(f"{stage}: finished run {state['mlflow_run_id']} matches inputs and code; not retraining")
        return dg.MaterializeResult(metadata=_metadata(state, mlflow, skipped=True))

    client = mlflow.client()
    resume = (not force and state.get("fingerprint") == fingerprint and state.get("status") == "running"
              and _run_exists(client, state.get("mlflow_run_id")))
    if resume:
        run_id = state["mlflow_run_id"]
        context.log.info(f"{stage}: resuming MLflow run {run_id} from the last checkpoint in {out}")
        client.set_tag(run_id, "nyx.resumed_by_dagster_run", context.run_id)
    else:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        tags = {
            "dagster.run_id": context.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
            "nyx.stage": stage, "nyx.code_version": code_version, "nyx.profile": settings.profile,
            "nyx.base_model": base_model, "nyx.fingerprint": fingerprint,
            "dvc.data_md5": _snapshot_md5(dvc) or "unversioned",
            **{f"dvc.md5.{k}": v for k, v in input_md5s.items()},
        }
        run = client.create_run(mlflow.experiment_id(), run_name=f"{stage}-{context.run_id[:8]}", tags=tags)
        run_id = run.info.run_id
        state = {"fingerprint": fingerprint, "mlflow_run_id": run_id, "status": "running", "stage": stage}
        _save_state(out, state)

    train_cfg = train_cfg.model_copy(update={"resume_from_checkpoint": "latest" if resume else None})
    cfg_path = out / "train_config.json"
    write_json(json.loads(train_cfg.model_dump_json()), cfg_path)
    command = launcher.command("nyx.train.tracked", ["--config", str(cfg_path)])
    env = {**mlflow.env(), "MLFLOW_RUN_ID": run_id, **launcher.env}
    context.log.info(f"{stage}: launching {' '.join(command)}")
    invocation = pipes.run(command=command, context=context, env=env, extras={"stage": stage, "mlflow_run_id": run_id})
    pipes_meta = {}
    for result in invocation.get_results():
        pipes_meta.update(getattr(result, "metadata", None) or {})

    summary = json.loads((out / "train_result.json").read_text())
    final_dir = Path(summary["final_dir"])
    dev = _evaluate_dev(final_dir, dev_folder, context)
    # the model training started from, on the same dev split: what this training must beat
    start_dev = _evaluate_dev(train_cfg.model, dev_folder, context, label="start model")
    import mlflow as mlflow_lib

    from nyx.serving.pyfunc import log_retriever_model

    with mlflow.start_run(run_id=run_id):
        for prefix, rows in (("dev", dev), ("dev_start", start_dev)):
            for row in rows:
                mlflow_lib.log_metrics({f"{prefix}_{k.replace('@', '_at_')}_dim{row['dim']}": float(v)
                                        for k, v in row.items()
                                        if k not in ("dim", "n_queries") and isinstance(v, (int, float))})
        info = log_retriever_model(final_dir, name="model", registered_model_name="nyx-retriever",
                                   tags={"nyx.stage": stage, "nyx.base_model": base_model})
    version = str(info.registered_model_version)
    for k, v in {"nyx.stage": stage, "nyx.base_model": base_model, "nyx.mlflow_run_id": run_id,
                 "dagster.run_id": context.run_id, "nyx.fingerprint": fingerprint}.items():
        client.set_model_version_tag("nyx-retriever", version, k, v)
    state.update({"status": "finished", "final_dir": str(final_dir), "model_version": version,
                  "model_uri": f"models:/nyx-retriever/{version}", "summary": summary, "dev": dev,
                  "dev_start": start_dev})
    _save_state(out, state)
    meta = _metadata(state, mlflow, skipped=False)
    meta.update({k: v for k, v in pipes_meta.items() if k not in meta})
    return dg.MaterializeResult(metadata=meta)


def _run_exists(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
        return True
    except Exception:
        return False


def _snapshot_md5(dvc: DvcResource) -> str | None:
    try:
        return dvc.dvc().tracked_md5("data")
    except Exception:
        return None


def _evaluate_dev(model: Path | str, dev_folder: Path, context, label: str = "trained model") -> list[dict[str, Any]]:
    """Retrieval metrics of a model on the dev split at every Matryoshka dimension."""
    from nyx.data.beir import load_beir
    from nyx.eval.retrieval import matryoshka_sweep
    from nyx.retrieval import NyxRetriever

    ds = load_beir(dev_folder)
    retriever = NyxRetriever(model=str(model))
    retriever.index(list(ds.corpus.values()))
    rows = matryoshka_sweep(retriever, list(ds.queries.values()), ds.qrels)
    context.log.info(f"dev retrieval, {label}: " + "; ".join(
        f"dim {r['dim']}: R@10={r.get('recall@10', 0):.3f} nDCG@10={r.get('ndcg@10', 0):.3f}" for r in rows))
    return rows


def _metadata(state: dict[str, Any], mlflow: MlflowResource, skipped: bool) -> dict[str, Any]:
    dev = state.get("dev") or []
    summary = state.get("summary") or {}
    meta: dict[str, Any] = {
        "retrained": not skipped,
        "mlflow_run": dg.MetadataValue.url(mlflow.run_url(state["mlflow_run_id"])),
        "mlflow_run_id": state["mlflow_run_id"],
        "model_version": state.get("model_version", ""),
        "model_uri": state.get("model_uri", ""),
        "model_version_page": dg.MetadataValue.url(mlflow.model_version_url("nyx-retriever",
                                                                            state.get("model_version", "0"))),
        "final_dir": dg.MetadataValue.path(state.get("final_dir", "")),
        "global_step": int(summary.get("global_step") or 0),
    }
    if summary.get("resumed_from_step") is not None:
        meta["resumed_from_step"] = int(summary["resumed_from_step"])
    for key in ("first_loss", "last_loss"):
        v = summary.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            meta[key] = float(v)
    if dev:
        head = "| dim | " + " | ".join(k for k in dev[0] if k != "dim") + " |"
        sep = "|" + "---|" * len(dev[0])
        body = ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()) + " |"
                for r in dev]
        meta["dev_retrieval"] = dg.MetadataValue.md("\n".join([head, sep, *body]))
        full = dev[0]
        meta["dev_ndcg@10"] = float(full.get("ndcg@10", 0.0))
        meta["dev_recall@10"] = float(full.get("recall@10", 0.0))
    if state.get("dev_start"):
        start = state["dev_start"][0]
        meta["dev_ndcg@10_start_model"] = float(start.get("ndcg@10", 0.0))
        meta["dev_recall@10_start_model"] = float(start.get("recall@10", 0.0))
    return meta


def _stage1_sources(settings: NyxSettings, profile) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    paths = settings.paths
    sources = [{"name": "nyxqa", "kind": "nyxqa", "path": str(paths.nyxqa / "train"),
                "hard_negatives": str(paths.hard_negatives / "train.jsonl")}]
    sources += [dict(s) for s in profile.stage1.extra_sources]
    return sources, {"nyxqa": paths.nyxqa / "train", "hard_negatives": paths.hard_negatives / "train.jsonl"}


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow", "deepspeed"},
    deps=["nyxqa", "hard_negatives", "data_snapshot"],
    pool="gpu",
    code_version=STAGE1_CODE_VERSION,
)
def stage1_checkpoint(context: dg.AssetExecutionContext, config: TrainingAssetConfig, settings: NyxSettings,
                      mlflow: MlflowResource, dvc: DvcResource, launcher: TrainingLauncher,
                      pipes: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """Stage 1: contrastive training (InfoNCE, in-batch + hard negatives, Matryoshka losses) of the backbone on
    NyxQA train with mined hard negatives (+ any extra sets of the profile), registered as a ``nyx-retriever``
    version with its dev-split retrieval metrics at every Matryoshka dimension."""
    profile = profile_for(settings, config)
    sources, inputs = _stage1_sources(settings, profile)
    train = {"model": profile.model, **profile.stage1.train}
    return run_training(context, stage="stage1", code_version=STAGE1_CODE_VERSION, train_settings=train,
                        sources=sources, inputs=inputs, init_adapter=None, settings=settings, mlflow=mlflow,
                        dvc=dvc, launcher=launcher, pipes=pipes, force=config.force_retrain,
                        dev_folder=settings.paths.nyxqa / "dev", base_model=str(train["model"]))


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow", "deepspeed"},
    deps=["stage1_checkpoint", "feedback_preferences"],
    pool="gpu",
    code_version=STAGE2_CODE_VERSION,
)
def stage2_checkpoint(context: dg.AssetExecutionContext, config: TrainingAssetConfig, settings: NyxSettings,
                      mlflow: MlflowResource, dvc: DvcResource, launcher: TrainingLauncher,
                      pipes: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    """Stage 2: VLM-feedback alignment. Fine-tunes on the feedback triples, either continuing from the Stage-1
    model (``continue``) or retraining from the base on the Stage-1 mix plus the feedback (``retrain``)."""
    profile = profile_for(settings, config)
    paths = settings.paths
    feedback = paths.feedback / "train_triples.jsonl"
    if not feedback.exists() or not feedback.read_text().strip():
        raise dg.Failure(f"no feedback triples in {feedback}: materialise feedback_preferences first")
    sources = [{"name": "feedback", "kind": "triples", "path": str(feedback)}]
    inputs = {"feedback": feedback}
    train = {"model": profile.model, **profile.stage2.train}
    init_adapter = None
    if profile.stage2.mode == "continue":
        train["model"] = str(finished_model_dir(settings, "stage1"))
    else:
        s1_sources, s1_inputs = _stage1_sources(settings, profile)
        sources = s1_sources + sources
        inputs.update(s1_inputs)
    return run_training(context, stage="stage2", code_version=STAGE2_CODE_VERSION, train_settings=train,
                        sources=sources, inputs=inputs, init_adapter=init_adapter, settings=settings,
                        mlflow=mlflow, dvc=dvc, launcher=launcher, pipes=pipes, force=config.force_retrain,
                        dev_folder=paths.nyxqa / "dev", base_model=str(profile.model))


def _loss_history(mlflow: MlflowResource, run_id: str) -> list[float]:
    return [m.value for m in sorted(mlflow.client().get_metric_history(run_id, "loss"), key=lambda m: m.step)]


def _loss_check(settings: NyxSettings, mlflow: MlflowResource, stage: str,
                tolerance: float = 0.0) -> dg.AssetCheckResult:
    """Loss finite at every step, and the mean of the last fifth of the steps below the first fifth's
    (times ``1 + tolerance``: Stage 2 starts from a trained model, where a flat loss is no failure)."""
    state = stage_state(settings.paths.checkpoints / stage)
    losses = _loss_history(mlflow, state["mlflow_run_id"])
    if len(losses) < 2:
        return dg.AssetCheckResult(passed=False, metadata={"logged_steps": len(losses)},
                                   description="fewer than two logged loss values")
    finite = all(math.isfinite(x) for x in losses)
    n = max(1, len(losses) // 5)
    first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
    return dg.AssetCheckResult(passed=finite and last < first * (1 + tolerance), metadata={
        "logged_steps": len(losses), "all_finite": finite, "mean_first_fifth": first, "mean_last_fifth": last,
        "tolerance": tolerance})


def _loads_check(settings: NyxSettings, mlflow: MlflowResource, stage: str) -> dg.AssetCheckResult:
    import mlflow as mlflow_lib
    import numpy as np

    state = stage_state(settings.paths.checkpoints / stage)
    mlflow.client()
    model = mlflow_lib.pyfunc.load_model(state["model_uri"])
    sample = [{"id": "q", "kind": "query", "content": [{"type": "text", "text": "Which town has the red bridge?"}]},
              {"id": "d", "kind": "document", "content": [{"type": "text", "text": "The bridge of Alder is red."}]}]
    import pandas as pd

    out = model.predict(pd.DataFrame(sample))
    emb = np.array(out["embedding"].tolist(), dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1)
    ok = bool(np.isfinite(emb).all() and np.allclose(norms, 1.0, atol=1e-3))
    return dg.AssetCheckResult(passed=ok, metadata={"model_uri": state["model_uri"], "dim": int(emb.shape[1]),
                                                    "norms": dg.MetadataValue.json([float(x) for x in norms])})


@dg.asset_check(asset=stage1_checkpoint, blocking=True, description="training loss finite and falling over the run")
def stage1_loss_decreasing(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loss_check(settings, mlflow, "stage1")


@dg.asset_check(asset=stage1_checkpoint, blocking=True, description="the registered model loads by URI and embeds")
def stage1_model_loads(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loads_check(settings, mlflow, "stage1")


@dg.asset_check(asset=stage2_checkpoint, blocking=True,
                description="training loss finite and not rising (within 10%) over the run")
def stage2_loss_not_rising(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loss_check(settings, mlflow, "stage2", tolerance=0.10)


@dg.asset_check(asset=stage2_checkpoint, blocking=True, description="the registered model loads by URI and embeds")
def stage2_model_loads(settings: NyxSettings, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _loads_check(settings, mlflow, "stage2")
