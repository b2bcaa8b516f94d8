"""The life cycle of one training stage, whatever starts it (a Dagster asset, a script, a notebook).

A stage (``stage1``: contrastive training on NyxQA; ``stage2``: VLM-feedback alignment) goes through:

1. :func:`stage_train_config`: the :class:`~nyx.train.config.TrainConfig` the profile asks for, with its data
   sources and the input files whose content it depends on. Stage 2 ``continue`` builds on Stage 1: a LoRA
   Stage 1 is continued as an adapter (``init_adapter``, on Stage 1's base model), a fully fine-tuned one is
   loaded as the model; ``retrain`` starts again from the base on the Stage-1 mix plus the feedback.
2. :func:`plan_stage`: skip (a finished run matches config, inputs and code), resume (a run with the same
   fingerprint was interrupted) or start fresh; the fingerprint hashes all three.
3. The caller launches ``python -m nyx.train.tracked --config <out>/train_config.json`` (one process or many).
4. :func:`finish_stage`: dev-split retrieval metrics of the trained model and of the model it started from,
   logged to the stage's MLflow run; the model registered as a version of the profile's registered model,
   with its dev metrics on the version (what promotion decides on: the test split never selects a model).

All of it is recorded in ``<checkpoints>/<stage>/nyx_state.json`` as a :class:`StageState`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nyx.paths import DataPaths
from nyx.registry import SELECTION_SPLIT  # the split every model choice is made on; test metrics are only reported
from nyx.train.config import TrainConfig
from nyx.train.trainer import find_latest_checkpoint
from nyx.utils.integrity import is_verified, verify_manifest

log = logging.getLogger(__name__)

STATE_FILE = "nyx_state.json"
TRAIN_CONFIG_FILE = "train_config.json"
TRAIN_RESULT_FILE = "train_result.json"
STAGES = ("stage1", "stage2")
CODE_VERSIONS = {"stage1": "stage1-v2", "stage2": "stage2-v2"}
#: Model-version tag holding the digest of the weights' manifest (nyx.utils.integrity)
WEIGHTS_TAG = "nyx.weights_sha256"

if TYPE_CHECKING:
    from nyx.index.store import EmbeddingStore

Stage = Literal["stage1", "stage2"]


class StageNotFinished(RuntimeError):
    """A stage's result is needed but the stage has not finished training."""


class StageState(BaseModel):
    """What ``nyx_state.json`` records about a stage's latest run."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    status: Literal["running", "finished"]
    fingerprint: str
    mlflow_run_id: str
    registered_model: str
    base_model: str = Field(description="the backbone (profile model) the stage's weights derive from")
    start_model: str = Field(description="what training started from: a model folder, or base + init_adapter")
    init_adapter: str | None = None
    final_dir: str | None = None
    is_adapter: bool = Field(False, description="final_dir holds a LoRA adapter (on base_model), not full weights")
    model_version: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict, description="train_result.json of the run")
    dev: list[dict[str, Any]] = Field(default_factory=list, description="dev retrieval rows, one per dim")
    dev_start: list[dict[str, Any]] = Field(default_factory=list, description="the same for the start model")

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def model_uri(self) -> str:
        return f"models:/{self.registered_model}/{self.model_version}" if self.model_version else ""

    def dev_metric(self, metric: str) -> float | None:
        """``metric`` at the full dimension on the dev split (the first row of :attr:`dev`)."""
        if not self.dev:
            return None
        value = self.dev[0].get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    @classmethod
    def load(cls, out_dir: Path) -> StageState | None:
        path = Path(out_dir) / STATE_FILE
        if not path.exists():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except ValueError as e:
            raise ValueError(
                f"{path} is not a Nyx stage state ({e}); delete the folder to train this stage again"
            ) from None

    def save(self, out_dir: Path) -> None:
        from nyx.utils.io import write_json

        write_json(json.loads(self.model_dump_json()), Path(out_dir) / STATE_FILE)


def stage_dir(paths: DataPaths, stage: str) -> Path:
    return paths.checkpoints / stage


def load_stage(paths: DataPaths, stage: str) -> StageState | None:
    return StageState.load(stage_dir(paths, stage))


def finished_stage(paths: DataPaths, stage: str) -> StageState:
    """The state of a finished stage; :class:`StageNotFinished` otherwise."""
    state = load_stage(paths, stage)
    if state is None or not state.finished or not state.final_dir:
        raise StageNotFinished(
            f"{stage} has not finished training (state: {state.status if state else 'none'} "
            f"in {stage_dir(paths, stage)}); materialise it first"
        )
    return state


def model_spec(state: StageState) -> str:
    """What :class:`nyx.retrieval.NyxRetriever` / ``NyxEncoder.from_pretrained`` loads for a finished stage.

    An adapter folder names its base model in ``adapter_config.json``, so the folder alone is enough."""
    if not state.final_dir:
        raise StageNotFinished(f"{state.stage} has no final model")
    return state.final_dir


# ----------------------------------------------------------------------------------------------------------
# 1. What to train
# ----------------------------------------------------------------------------------------------------------


@dataclass
class StageInputs:
    """The training config of a stage and the files whose content decides whether it must run again."""

    config: TrainConfig
    inputs: dict[str, Path]
    base_model: str

    @property
    def start_model(self) -> str:
        return self.config.init_adapter or self.config.model


def _stage1_sources(paths: DataPaths, profile) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """NyxQA train (capped at ``stage1.nyxqa_cap``) and every declared external source as the Nyx triples the
    ``training_sources`` asset converted it into (:mod:`nyx.train.sources`), with its mixing weight. Each converted
    file is an input (``source.<name>``): its md5 enters the fingerprint and the MLflow tag
    ``dvc.md5.source.<name>``, so an edited source file (converted again) trains Stage 1 again."""
    from nyx.train.sources import converted_file

    sources = [
        {
            "name": "nyxqa",
            "kind": "nyxqa",
            "path": str(paths.nyxqa / "train"),
            "hard_negatives": str(paths.hard_negatives / "train.jsonl"),
            "cap": profile.stage1.nyxqa_cap,
        }
    ]
    inputs = {"nyxqa": paths.nyxqa / "train", "hard_negatives": paths.hard_negatives / "train.jsonl"}
    for src in profile.stage1.extra_sources:
        triples = converted_file(paths, src.name)
        if not triples.is_file():
            raise FileNotFoundError(
                f"training source {src.name!r} is not converted ({triples} missing): materialise training_sources first"
            )
        sources.append({"name": src.name, "kind": "triples", "path": str(triples), "weight": src.weight})
        inputs[f"source.{src.name}"] = triples
    return sources, inputs


def stage_train_config(profile, stage: str, paths: DataPaths) -> StageInputs:
    """The :class:`TrainConfig` of ``stage`` under ``profile`` (output under ``paths.checkpoints``)."""
    out = stage_dir(paths, stage)
    base_model = str(profile.model)
    if stage == "stage1":
        train = {"model": base_model, **profile.stage1.train}
        base_model = str(train["model"])
        sources, inputs = _stage1_sources(paths, profile)
    elif stage == "stage2":
        feedback = paths.feedback / "train_triples.jsonl"
        if not feedback.exists() or not feedback.read_text().strip():
            raise FileNotFoundError(f"no feedback triples in {feedback}: materialise feedback_preferences first")
        sources = [{"name": "feedback", "kind": "triples", "path": str(feedback)}]
        inputs = {"feedback": feedback}
        train = {"model": base_model, **profile.stage2.train}
        base_model = str(train["model"])
        if profile.stage2.mode == "continue":
            s1 = finished_stage(paths, "stage1")
            base_model = s1.base_model
            lora = dict(train.get("lora") or {})
            stage2_lora = lora.get("enabled", True)
            if s1.is_adapter and stage2_lora:
                # continue Stage 1's adapter on Stage 1's base: Stage 2 at step 0 *is* Stage 1, and its saved
                # adapter names the base model, so it reloads as base + (Stage 1 trained further)
                train.update(model=s1.base_model, init_adapter=s1.final_dir)
            else:
                # full Stage-1 weights (or a Stage-1 adapter merged on load, for a fully fine-tuned Stage 2)
                train["model"] = s1.final_dir
            inputs["stage1"] = Path(s1.final_dir)
        else:
            s1_sources, s1_inputs = _stage1_sources(paths, profile)
            sources = s1_sources + sources
            inputs.update(s1_inputs)
    else:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    for key in ("max_pixels", "min_pixels"):
        if key in train:
            raise ValueError(f"{stage}.train.{key}: the pixel budget is set once, in images.{key}")
    train.update({"data": sources, "output_dir": str(out), **profile.encoder_overrides()})
    return StageInputs(config=TrainConfig.model_validate(train), inputs=inputs, base_model=base_model)


# ----------------------------------------------------------------------------------------------------------
# 2. Skip, resume or start
# ----------------------------------------------------------------------------------------------------------


def fingerprint(config: TrainConfig, input_md5s: dict[str, str], code_version: str) -> str:
    """Hash of the training config (without where it resumes from), the inputs' md5s and the code version."""
    cfg = json.loads(config.model_copy(update={"resume_from_checkpoint": None}).model_dump_json())
    blob = json.dumps({"train": cfg, "inputs": input_md5s, "code": code_version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class StagePlan:
    stage: str
    action: Literal["skip", "resume", "fresh"]
    out_dir: Path
    spec: StageInputs
    fingerprint: str
    input_md5s: dict[str, str]
    code_version: str
    state: StageState | None = None
    #: why the plan is not the obvious one (a finished model that failed verification)
    note: str = ""

    @property
    def config_path(self) -> Path:
        return self.out_dir / TRAIN_CONFIG_FILE


def plan_stage(
    stage: str,
    spec: StageInputs,
    *,
    force: bool = False,
    run_exists: Callable[[str], bool],
    md5: Callable[[Path], str] | None = None,
) -> StagePlan:
    """Decide what to do; ``run_exists(run_id)`` tells whether the state's MLflow run still exists."""
    if md5 is None:
        from nyx.versioning.dvc import dvc_md5 as md5
    out = Path(spec.config.output_dir)
    input_md5s = {name: md5(p) for name, p in spec.inputs.items()}
    code_version = CODE_VERSIONS[stage]
    fp = fingerprint(spec.config, input_md5s, code_version)
    state = StageState.load(out)
    same = state is not None and state.fingerprint == fp and not force
    note = ""
    if same and state.finished:
        ok, reason = is_verified(state.final_dir) if state.final_dir else (False, "no final model recorded")
        if ok:
            action = "skip"
        else:
            # never evaluate or register weights that are not the ones written: train again, from the last
            # checkpoint that verifies when there is one (the trainer skips those that do not)
            resumable = run_exists(state.mlflow_run_id) and find_latest_checkpoint(out) is not None
            action = "resume" if resumable else "fresh"
            note = f"the finished model failed verification ({reason}): training again ({action})"
            state = state.model_copy(update={"status": "running"})
    elif same and state.status == "running" and run_exists(state.mlflow_run_id):
        action = "resume"
    else:
        action = "fresh"
    return StagePlan(
        stage=stage,
        action=action,
        out_dir=out,
        spec=spec,
        fingerprint=fp,
        input_md5s=input_md5s,
        code_version=code_version,
        state=state,
        note=note,
    )


def start_stage(
    plan: StagePlan,
    *,
    registered_model: str,
    create_run: Callable[[dict[str, str]], str],
    tags: dict[str, str] | None = None,
) -> StageState:
    """A fresh start: clear the folder, open an MLflow run (``create_run(tags) -> run_id``), write the state and
    the train config. On resume the state is kept and only the config is rewritten (resuming from ``latest``)."""
    from nyx.utils.io import write_json

    if plan.action == "skip":
        raise ValueError(f"{plan.stage}: nothing to start, a finished run matches")
    if plan.action == "resume":
        assert plan.state is not None
        state = plan.state
        state.save(plan.out_dir)  # "running" again (a finished model that failed verification is retrained)
        config = plan.spec.config.model_copy(update={"resume_from_checkpoint": "latest"})
    else:
        if plan.out_dir.exists():
            shutil.rmtree(plan.out_dir)
        plan.out_dir.mkdir(parents=True)
        cfg = plan.spec.config
        run_tags = {
            "nyx.stage": plan.stage,
            "nyx.code_version": plan.code_version,
            "nyx.base_model": plan.spec.base_model,
            "nyx.fingerprint": plan.fingerprint,
            "nyx.start_model": plan.spec.start_model,
            **{f"dvc.md5.{k}": v for k, v in plan.input_md5s.items()},
            **(tags or {}),
        }
        run_id = create_run(run_tags)
        state = StageState(
            stage=plan.stage,
            status="running",
            fingerprint=plan.fingerprint,
            mlflow_run_id=run_id,
            registered_model=registered_model,
            base_model=plan.spec.base_model,
            start_model=plan.spec.start_model,
            init_adapter=cfg.init_adapter,
        )
        state.save(plan.out_dir)
        config = cfg.model_copy(update={"resume_from_checkpoint": None})
    write_json(json.loads(config.model_dump_json()), plan.config_path)
    return state


# ----------------------------------------------------------------------------------------------------------
# 4. Evaluate on dev, register
# ----------------------------------------------------------------------------------------------------------


def evaluate_dev(
    model: str,
    dev_folder: Path,
    label: str = "trained model",
    info: Callable[[str], None] = log.info,
    encoder_overrides: dict[str, Any] | None = None,
    store: EmbeddingStore | None = None,
) -> list[dict[str, Any]]:
    """Retrieval metrics of ``model`` (a folder, an adapter folder, a profile name) on the dev split at every
    Matryoshka dimension. With a ``store``, corpus embeddings the model already has are reused and new ones kept
    (:mod:`nyx.index.store`): the same model never encodes the same corpus twice."""
    from nyx.data.beir import load_beir
    from nyx.eval.retrieval import matryoshka_sweep
    from nyx.retrieval import NyxRetriever

    ds = load_beir(dev_folder)
    retriever = NyxRetriever(model=str(model), encoder_overrides=encoder_overrides)
    retriever.index(list(ds.corpus.values()), store=store, source=f"dev-{label.replace(' ', '_')}", progress=info)
    if store is not None:
        info(f"{SELECTION_SPLIT} corpus, {label}: {retriever.last_encode.to_dict()}")
    rows = matryoshka_sweep(retriever, list(ds.queries.values()), ds.qrels)
    info(
        f"{SELECTION_SPLIT} retrieval, {label}: "
        + "; ".join(f"dim {r['dim']}: R@10={r.get('recall@10', 0):.3f} nDCG@10={r.get('ndcg@10', 0):.3f}" for r in rows)
    )
    return rows


def _metric_name(prefix: str, key: str, dim: Any) -> str:
    from nyx.tracking import metric_key

    return f"{prefix}_{metric_key(key)}_dim{dim}"


def finish_stage(
    plan: StagePlan,
    state: StageState,
    *,
    dev_folder: Path,
    client,
    tags: dict[str, str] | None = None,
    info: Callable[[str], None] = log.info,
    store: EmbeddingStore | None = None,
) -> StageState:
    """After training: dev metrics (trained and start model) in the MLflow run, the model registered with its dev
    metrics on the version, and the finished state saved. ``client`` is an ``MlflowClient`` whose tracking URI is
    also the active one (``mlflow.set_tracking_uri``)."""
    import mlflow

    from nyx.registry import record_metrics
    from nyx.serving.pyfunc import log_retriever_model
    from nyx.utils.io import read_json

    summary = read_json(plan.out_dir / TRAIN_RESULT_FILE)
    final_dir = Path(summary["final_dir"])
    weights = verify_manifest(final_dir)  # IntegrityError names the file: nothing is evaluated or registered
    # the trained model carries its pixel budget in its folder; the start model gets the one it trained with
    budget = {
        k: v
        for k, v in (("max_pixels", plan.spec.config.max_pixels), ("min_pixels", plan.spec.config.min_pixels))
        if v is not None
    }
    dev = evaluate_dev(str(final_dir), dev_folder, "trained model", info, store=store)
    dev_start = evaluate_dev(state.start_model, dev_folder, "start model", info, encoder_overrides=budget, store=store)
    name = state.registered_model
    with mlflow.start_run(run_id=state.mlflow_run_id):
        for prefix, rows in ((SELECTION_SPLIT, dev), (f"{SELECTION_SPLIT}_start", dev_start)):
            for row in rows:
                mlflow.log_metrics(
                    {
                        _metric_name(prefix, k, row["dim"]): float(v)
                        for k, v in row.items()
                        if k not in ("dim", "n_queries") and isinstance(v, (int, float))
                    }
                )
        model_info = log_retriever_model(
            final_dir,
            name="model",
            registered_model_name=name,
            tags={"nyx.stage": plan.stage, "nyx.base_model": state.base_model},
        )
    version = str(model_info.registered_model_version)
    for k, v in {
        "nyx.stage": plan.stage,
        "nyx.base_model": state.base_model,
        "nyx.mlflow_run_id": state.mlflow_run_id,
        "nyx.fingerprint": plan.fingerprint,
        WEIGHTS_TAG: weights,
        **(tags or {}),
    }.items():
        client.set_model_version_tag(name, version, k, v)
    if dev:
        record_metrics(client, name, version, _full_dim_metrics(dev[0]), split=SELECTION_SPLIT)
    state = state.model_copy(
        update={
            "status": "finished",
            "final_dir": str(final_dir),
            "is_adapter": (final_dir / "adapter_config.json").is_file(),
            "model_version": version,
            "summary": summary,
            "dev": dev,
            "dev_start": dev_start,
        }
    )
    state.save(plan.out_dir)
    return state


def _full_dim_metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k not in ("dim", "n_queries") and isinstance(v, (int, float))}


# ----------------------------------------------------------------------------------------------------------
# Choosing between the stages
# ----------------------------------------------------------------------------------------------------------


def best_stage(paths: DataPaths, metric: str) -> tuple[StageState, dict[str, float | None]]:
    """The finished stage with the higher dev ``metric`` (full dimension; Stage 2 on a tie), and every finished
    stage's value. Test metrics never enter."""
    finished = [s for s in (load_stage(paths, st) for st in STAGES) if s is not None and s.finished]
    if not finished:
        raise StageNotFinished("no finished Stage-1 or Stage-2 model to choose from")
    values = {s.stage: s.dev_metric(metric) for s in finished}
    missing = [st for st, v in values.items() if v is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} has no {SELECTION_SPLIT} {metric}: cannot choose between stages")
    best = max(finished, key=lambda s: (values[s.stage], STAGES.index(s.stage)))
    return best, values


# ----------------------------------------------------------------------------------------------------------
# Is the loss falling?
# ----------------------------------------------------------------------------------------------------------


def loss_trend(points: list[tuple[int, float, float]]) -> dict[str, Any]:
    """Compare the loss early and late in a run, from logged ``(step, loss, epoch)`` points.

    A logged loss is the mean over one batch (or a few): how hard the batch is moves it as much as training does in a
    short run. With two or more complete epochs the comparison is of the *same examples*: the mean loss of the first
    epoch against the last complete one. With fewer, the first and last fifth of the logged values."""
    import math

    if len(points) < 2:
        return {"comparable": False, "reason": f"{len(points)} logged loss value(s), need at least 2"}
    points = sorted(points)
    finite = all(math.isfinite(loss) for _, loss, _ in points)
    by_epoch: dict[int, list[float]] = {}
    for _, loss, epoch in points:
        by_epoch.setdefault(max(0, math.ceil(round(epoch, 6)) - 1), []).append(loss)
    complete = int(math.floor(round(points[-1][2], 6)))
    if complete >= 2:
        first, last = by_epoch[0], by_epoch[complete - 1]
        how = f"mean of epoch 1 vs epoch {complete} (the same examples)"
    else:
        n = max(1, len(points) // 5)
        first, last = [p[1] for p in points[:n]], [p[1] for p in points[-n:]]
        how = f"mean of the first vs last {n} logged value(s)"
    return {
        "comparable": True,
        "finite": finite,
        "first": sum(first) / len(first),
        "last": sum(last) / len(last),
        "how": how,
        "logged": len(points),
    }
