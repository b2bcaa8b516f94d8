"""Reporting from a training process: MLflow metrics and, when launched by Dagster Pipes, logs and the final
materialisation. Only rank 0 reports; other ranks get a reporter that does nothing.

The launching asset creates (or continues) the MLflow run and passes ``MLFLOW_RUN_ID``/``MLFLOW_TRACKING_URI``
in the environment; ``torchrun``/``deepspeed`` forward those to every rank. Dagster Pipes variables are only read on
rank 0 (multi-node DeepSpeed does not forward them).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any


def metric_key(name: str) -> str:
    """A metric name as MLflow stores it (metric and tag names cannot hold '@'): ``ndcg@10`` -> ``ndcg_at_10``. The
    one place the project spells this."""
    return name.replace("@", "_at_")


def metric_name(key: str) -> str:
    """The inverse of :func:`metric_key`: ``ndcg_at_10`` -> ``ndcg@10``."""
    return key.replace("_at_", "@")


log = logging.getLogger(__name__)


def process_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


class TrainingReporter:
    """``on_log(step, metrics)`` -> MLflow step metrics (+ a Pipes log line); ``finish(metadata)`` -> Pipes report."""

    def __init__(self, enabled: bool | None = None, pipes: bool | None = None, log_every_pipes: int = 1):
        self.enabled = process_rank() == 0 if enabled is None else enabled
        self._mlflow_run = os.environ.get("MLFLOW_RUN_ID") if self.enabled else None
        self._pipes_cm = None
        self.pipes = None
        self._log_every = max(1, log_every_pipes)
        #: step -> loss already in the MLflow run (a resumed run replays the steps after its last checkpoint)
        self._logged: dict[int, float] | None = None
        self.replayed: dict[str, float] = {"steps": 0, "max_abs_loss_diff": 0.0}
        want_pipes = ("DAGSTER_PIPES_CONTEXT" in os.environ) if pipes is None else pipes
        if self.enabled and want_pipes:
            from dagster_pipes import open_dagster_pipes

            self._pipes_cm = open_dagster_pipes()
            self.pipes = self._pipes_cm.__enter__()
        if self._mlflow_run:
            import mlflow

            mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri()))

    def log_params(self, params: dict[str, Any]) -> None:
        if not self._mlflow_run:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = MlflowClient()
        existing = client.get_run(self._mlflow_run).data.params
        flat = {k: str(v)[:6000] for k, v in _flatten(params).items() if k not in existing}
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            client.log_batch(self._mlflow_run, params=items[i : i + 100])

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {
            metric_key(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        if self._mlflow_run and clean and self._already_logged(step, clean):
            return
        if self._mlflow_run and clean:
            import time

            from mlflow import MlflowClient
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            MlflowClient().log_batch(self._mlflow_run, metrics=[Metric(k, v, ts, step) for k, v in clean.items()])
        if self.pipes is not None and step % self._log_every == 0:
            self.pipes.log.info(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in clean.items()))

    def _already_logged(self, step: int, clean: dict[str, float]) -> bool:
        """True when the run already holds ``step`` (logged before a kill, replayed after the resume): it is not
        logged twice. The replayed loss is compared with the logged one; the largest difference is kept and
        reported as the run tag ``nyx.replayed_max_abs_loss_diff`` (0 on the same machine: the checkpoint restores
        weights, optimizer, scheduler and RNG, and the batches follow from the seed and the step)."""
        if self._logged is None:
            from mlflow import MlflowClient

            assert self._mlflow_run is not None  # on_log asks only when it logs to an MLflow run
            self._logged = {m.step: m.value for m in MlflowClient().get_metric_history(self._mlflow_run, "loss")}
        if step not in self._logged:
            return False
        self.replayed["steps"] += 1
        if "loss" in clean:
            diff = abs(clean["loss"] - self._logged[step])
            self.replayed["max_abs_loss_diff"] = max(self.replayed["max_abs_loss_diff"], diff)
        if self.pipes is not None:
            self.pipes.log.info(f"step {step} already logged before the resume; not logged again")
        return True

    def info(self, msg: str) -> None:
        if self.enabled:
            log.info(msg)
            if self.pipes is not None:
                self.pipes.log.info(msg)

    def finish(self, metadata: dict[str, Any] | None = None) -> None:
        if self._mlflow_run and self.replayed["steps"]:
            from mlflow import MlflowClient

            client = MlflowClient()
            client.set_tag(self._mlflow_run, "nyx.replayed_steps", str(int(self.replayed["steps"])))
            client.set_tag(
                self._mlflow_run, "nyx.replayed_max_abs_loss_diff", f"{self.replayed['max_abs_loss_diff']:.3g}"
            )
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=_pipes_metadata(metadata or {}))
        self.close()

    def close(self) -> None:
        if self._pipes_cm is not None:
            self._pipes_cm.__exit__(None, None, None)
            self._pipes_cm = None
            self.pipes = None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _pipes_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for k, v in meta.items():
        if isinstance(v, bool) or v is None:
            out[k] = {"raw_value": str(v), "type": "text"}
        elif isinstance(v, int):
            out[k] = {"raw_value": v, "type": "int"}
        elif isinstance(v, float):
            out[k] = {"raw_value": v if math.isfinite(v) else str(v), "type": "float" if math.isfinite(v) else "text"}
        elif isinstance(v, (dict, list)):
            out[k] = {"raw_value": v, "type": "json"}
        else:
            out[k] = {"raw_value": str(v), "type": "text"}
    return out
