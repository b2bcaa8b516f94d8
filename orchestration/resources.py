"""Dagster resources: settings/profile, MLflow tracking and registry, DVC."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
from pydantic import Field

from nyx.paths import REPO_ROOT, DataPaths
from nyx.versioning.dvc import Dvc, dvc_md5


class NyxSettings(dg.ConfigurableResource):
    """Which profile the pipeline runs (``sample`` or ``paper``) and where its data lives.

    The profile comes from the launchpad config or the ``NYX_PROFILE`` environment variable.
    """

    profile: str = Field(default_factory=lambda: os.environ.get("NYX_PROFILE", "sample"))
    data_dir: str = Field(default_factory=lambda: os.environ.get("NYX_DATA_DIR", str(REPO_ROOT / "data")))
    overrides: dict[str, Any] = Field(
        default_factory=lambda: json.loads(os.environ.get("NYX_PROFILE_OVERRIDES", "{}")),
        description="nested profile overrides for every asset (a run's launchpad config adds its own on top)")

    @property
    def paths(self) -> DataPaths:
        return DataPaths.at(self.data_dir)

    def load_profile(self, run_overrides: dict[str, Any] | None = None):
        from nyx.profiles import load_profile

        return load_profile(self.profile, self.overrides).with_overrides(run_overrides)


class MlflowResource(dg.ConfigurableResource):
    """MLflow 3 tracking and model registry: sqlite backend under ``mlflow/``, explicit artifact root."""

    tracking_uri: str = Field(
        default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}")
    )
    artifact_root: str = Field(default_factory=lambda: str(REPO_ROOT / "mlflow" / "artifacts"))
    experiment: str = "nyx"
    ui_url: str = "http://127.0.0.1:5000"

    def _prepare(self) -> str:
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        exp = mlflow.get_experiment_by_name(self.experiment)
        if exp is None:
            exp_id = mlflow.create_experiment(self.experiment, artifact_location=Path(self.artifact_root).as_uri())
        else:
            exp_id = exp.experiment_id
        return exp_id

    def experiment_id(self) -> str:
        return self._prepare()

    def client(self):
        from mlflow import MlflowClient

        self._prepare()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @contextlib.contextmanager
    def start_run(self, run_name: str | None = None, run_id: str | None = None, tags: dict[str, Any] | None = None) -> Iterator[Any]:
        import mlflow

        exp_id = self._prepare()
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id, run_name=run_name, tags=tags) as run:
            yield run

    def env(self) -> dict[str, str]:
        """Variables that let an external process (Pipes, torchrun) log to the same store."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_EXPERIMENT_ID": self._prepare(),
                "MLFLOW_DISABLE_TELEMETRY": "true"}

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self._prepare()}/runs/{run_id}"

    def model_version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"


class DvcResource(dg.ConfigurableResource):
    """DVC over the repository: ``add``/``push``/``status`` and md5s (used as Dagster data versions)."""

    repo_dir: str = Field(default_factory=lambda: os.environ.get("NYX_REPO_DIR", str(REPO_ROOT)))
    remote_url: str = Field(default_factory=lambda: os.environ.get("NYX_DVC_REMOTE", ".dvc_remote"))
    target: str = "data"

    def dvc(self) -> Dvc:
        return Dvc(Path(self.repo_dir), remote_url=self.remote_url)

    def md5(self, path: str | os.PathLike) -> str:
        """DVC's md5 of any file or folder (the same value ``dvc add`` would record)."""
        return dvc_md5(path)
