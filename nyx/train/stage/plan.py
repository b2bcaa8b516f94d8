"""Step 2 of a stage (:mod:`nyx.train.stage`), skip, resume or start: the fingerprint of config, inputs and code,
the :class:`StagePlan` that compares it with the recorded state, and the start (MLflow run, state, train config)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nyx.train.checkpoints import find_latest_checkpoint
from nyx.train.config import TrainConfig
from nyx.train.stage.inputs import StageInputs
from nyx.train.stage.state import StageState
from nyx.utils.integrity import is_verified

TRAIN_CONFIG_FILE = "train_config.json"
CODE_VERSIONS = {"stage1": "stage1-v2", "stage2": "stage2-v2"}


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
        from nyx.versioning.dvc import dvc_md5

        md5 = dvc_md5
    out = Path(spec.config.output_dir)
    input_md5s = {name: md5(p) for name, p in spec.inputs.items()}
    code_version = CODE_VERSIONS[stage]
    fp = fingerprint(spec.config, input_md5s, code_version)
    state = StageState.load(out)
    same = state is not None and state.fingerprint == fp and not force
    note = ""
    action: Literal["skip", "resume", "fresh"]
    if same and state is not None and state.finished:
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
    elif same and state is not None and state.status == "running" and run_exists(state.mlflow_run_id):
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
