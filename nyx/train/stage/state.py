"""What ``<checkpoints>/<stage>/nyx_state.json`` records about a stage's latest run (:class:`StageState`), reading it
back (a finished stage, the model it serves) and choosing between the finished stages on dev."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nyx.paths import DataPaths
from nyx.registry import SELECTION_SPLIT  # the split every model choice is made on; test metrics are only reported

STATE_FILE = "nyx_state.json"
STAGES = ("stage1", "stage2")

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


def best_stage(paths: DataPaths, metric: str) -> tuple[StageState, dict[str, float | None]]:
    """The finished stage with the higher dev ``metric`` (full dimension; Stage 2 on a tie), and every finished
    stage's value. Test metrics never enter."""
    finished = [s for s in (load_stage(paths, st) for st in STAGES) if s is not None and s.finished]
    if not finished:
        raise StageNotFinished("no finished Stage-1 or Stage-2 model to choose from")
    values: dict[str, float | None] = {s.stage: s.dev_metric(metric) for s in finished}
    missing = [st for st, v in values.items() if v is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} has no {SELECTION_SPLIT} {metric}: cannot choose between stages")
    best = max(finished, key=lambda s: (values[s.stage], STAGES.index(s.stage)))
    return best, values
