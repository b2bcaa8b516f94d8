"""The Nyx code location: every asset and check under ``assets/``, resources, jobs, schedules and sensors.

The resources are bound to the deployment's environment here, and only here: ``NYX_PROFILE``, ``NYX_DATA_DIR``,
``MLFLOW_TRACKING_URI``, ``NYX_DAGSTER_UI_URL``, ``NYX_REPO_DIR`` and ``NYX_DVC_REMOTE``. Every one is optional: an
unset variable leaves the resource's default (the ``sample`` profile, the repository's ``data/``, ``mlflow/`` and
``.dvc_remote``), so ``make run``, ``dagster dev`` and the tests work with any of them set or none.
"""

from __future__ import annotations

import dagster as dg

import assets
from orchestration.jobs import JOBS, graph_jobs
from orchestration.launcher import TrainingLauncher
from orchestration.resources import DvcResource, MlflowResource, NyxSettings
from orchestration.schedules import SCHEDULES
from orchestration.sensors import SENSORS


def _from_env(**variables: str) -> dict[str, str]:
    """``field="VARIABLE"`` pairs to the fields whose variable is set, with its value; a field whose variable is
    unset is left out, so that the resource keeps its default (``dg.EnvVar`` alone fails on an unset variable)."""
    return {field: value for field, name in variables.items() if (value := dg.EnvVar(name).get_value()) is not None}


def resources() -> dict:
    return {
        "settings": NyxSettings(**_from_env(profile="NYX_PROFILE", data_dir="NYX_DATA_DIR")),
        "mlflow": MlflowResource(**_from_env(tracking_uri="MLFLOW_TRACKING_URI", dagster_ui_url="NYX_DAGSTER_UI_URL")),
        "dvc": DvcResource(**_from_env(repo_dir="NYX_REPO_DIR", remote_url="NYX_DVC_REMOTE")),
        "launcher": TrainingLauncher(),
        # how training processes are run: a local subprocess here; swap in dagster-k8s's PipesK8sClient to run
        # them as Kubernetes pods (docs/scaling.md)
        "pipes": dg.PipesSubprocessClient(),
    }


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.components.load_defs(assets)
    return dg.Definitions.merge(
        loaded,
        dg.Definitions(resources=resources(), jobs=[*JOBS, *graph_jobs(loaded)], schedules=SCHEDULES, sensors=SENSORS),
    )
