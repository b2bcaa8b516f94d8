"""Dagster resources: settings/profile, MLflow tracking and registry, DVC."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from nyx.paths import REPO_ROOT, DataPaths
from nyx.settings import PipelineProfile
from nyx.versioning.dvc import Dvc, dvc_md5
from orchestration.profile_config import given, overrides_model

#: the profile's settings, every one optional, as a Dagster config schema (:mod:`orchestration.profile_config`)
ProfileOverrides = overrides_model(PipelineProfile)


def environment_overrides() -> dict[str, Any] | None:
    """The deployment's profile overrides, ``NYX_PROFILE_OVERRIDES`` (JSON), checked against the same typed schema as
    the launchpad's (an unknown setting is an error naming it). Read when a profile is built, in the process that
    runs the step."""
    raw = os.environ.get("NYX_PROFILE_OVERRIDES", "").strip()
    if not raw:
        return None
    try:
        return given(ProfileOverrides(**json.loads(raw)))
    except (ValueError, TypeError) as e:
        raise ValueError(f"NYX_PROFILE_OVERRIDES is not valid profile overrides: {e}") from None


class NyxSettings(dg.ConfigurableResource):
    """Which profile the pipeline runs (``sample`` or ``paper``) and where its data lives.

    The profile comes from the launchpad config or the ``NYX_PROFILE`` environment variable, the data folder from
    ``NYX_DATA_DIR`` (both bound in :mod:`orchestration.definitions`; unset, the defaults here).
    """

    profile: str = "sample"
    data_dir: str = str(REPO_ROOT / "data")
    overrides: ProfileOverrides = Field(  # type: ignore[valid-type]
        default_factory=ProfileOverrides,
        description="nested profile overrides for every asset, on top of NYX_PROFILE_OVERRIDES (a run's launchpad "
        "config adds its own on top); typed like the assets' ``overrides``: the launchpad refuses "
        "unknown settings",
    )

    @property
    def paths(self) -> DataPaths:
        return DataPaths.at(self.data_dir)

    def load_profile(self, run_overrides: dict[str, Any] | None = None):
        from nyx.settings import load_profile

        return (
            load_profile(self.profile, environment_overrides())
            .with_overrides(given(self.overrides))
            .with_overrides(run_overrides)
        )


class MlflowResource(dg.ConfigurableResource):
    """MLflow 3 tracking and model registry: sqlite backend under ``mlflow/``, explicit artifact root.

    ``tracking_uri`` and ``dagster_ui_url`` come from ``MLFLOW_TRACKING_URI`` and ``NYX_DAGSTER_UI_URL`` (bound in
    :mod:`orchestration.definitions`; unset, the defaults here)."""

    tracking_uri: str = f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}"
    artifact_root: str = str(REPO_ROOT / "mlflow" / "artifacts")
    experiment: str = "nyx"
    ui_url: str = "http://127.0.0.1:5000"
    dagster_ui_url: str = Field(
        default="http://127.0.0.1:3000", description="the Dagster UI, for the dagster.run_url tag of MLflow runs"
    )

    _experiment_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Once per run: the store's folders, and the experiment created or looked up."""
        self._prepare()

    def _prepare(self) -> str:
        """Point the MLflow client library at this store (every call: other resources in the same process may have
        pointed it elsewhere) and return the experiment id (looked up once per resource instance)."""
        import mlflow

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if self._experiment_id is None:
            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
            exp = mlflow.get_experiment_by_name(self.experiment)
            if exp is None:
                self._experiment_id = mlflow.create_experiment(
                    self.experiment, artifact_location=Path(self.artifact_root).as_uri()
                )
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def experiment_id(self) -> str:
        return self._prepare()

    def client(self):
        from mlflow import MlflowClient

        self._prepare()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @contextlib.contextmanager
    def start_run(
        self, run_name: str | None = None, run_id: str | None = None, tags: dict[str, Any] | None = None
    ) -> Iterator[Any]:
        import mlflow

        exp_id = self._prepare()
        with mlflow.start_run(
            run_id=run_id, experiment_id=None if run_id else exp_id, run_name=run_name, tags=tags
        ) as run:
            yield run

    def env(self) -> dict[str, str]:
        """Variables that let an external process (Pipes, torchrun) log to the same store."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_EXPERIMENT_ID": self._prepare(),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self._prepare()}/runs/{run_id}"

    def link_runs(self, context: dg.AssetExecutionContext, run_id: str) -> None:
        """Link the Dagster run of ``context`` and the MLflow run ``run_id`` both ways: the Dagster run gets the tags
        ``mlflow/<asset>`` (the MLflow run id) and ``mlflow/<asset>_url`` (shown on the run's page and searchable in
        the runs list; one pair per asset, as one Dagster run of ``weekly_retrain`` holds several MLflow runs), the
        MLflow run the tags ``dagster.run_id`` and ``dagster.run_url``. A run resumed by a later Dagster run
        keeps its first
        ``dagster.run_id`` and points ``dagster.run_url`` at the latest."""
        client = self.client()
        if "dagster.run_id" not in client.get_run(run_id).data.tags:
            client.set_tag(run_id, "dagster.run_id", context.run_id)
        client.set_tag(run_id, "dagster.run_url", f"{self.dagster_ui_url}/runs/{context.run_id}")
        context.instance.add_run_tags(context.run_id, self.dagster_run_tags(context, run_id))

    def dagster_run_tags(self, context: dg.AssetExecutionContext, run_id: str) -> dict[str, str]:
        """The Dagster run tags naming the MLflow run ``run_id`` of ``context``'s asset."""
        asset = context.asset_key.to_python_identifier()
        return {f"mlflow/{asset}": run_id, f"mlflow/{asset}_url": self.run_url(run_id)}

    def model_version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"


class DvcResource(dg.ConfigurableResource):
    """DVC over the repository: ``add``/``push``/``status`` and md5s (used as Dagster data versions).

    ``repo_dir`` and ``remote_url`` come from ``NYX_REPO_DIR`` and ``NYX_DVC_REMOTE`` (bound in
    :mod:`orchestration.definitions`; unset, the defaults here)."""

    repo_dir: str = str(REPO_ROOT)
    remote_url: str = ".dvc_remote"
    target: str = "data"

    def dvc(self) -> Dvc:
        return Dvc(Path(self.repo_dir), remote_url=self.remote_url)

    def md5(self, path: str | os.PathLike) -> str:
        """DVC's md5 of any file or folder (the same value ``dvc add`` would record)."""
        return dvc_md5(path)
