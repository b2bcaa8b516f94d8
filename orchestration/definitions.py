"""The Nyx code location: every asset and check under ``assets/``, resources, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg

import assets
from orchestration.jobs import JOBS, graph_jobs
from orchestration.launcher import TrainingLauncher
from orchestration.resources import DvcResource, MlflowResource, NyxSettings
from orchestration.schedules import SCHEDULES
from orchestration.sensors import SENSORS


def resources() -> dict:
    return {
        "settings": NyxSettings(),
        "mlflow": MlflowResource(),
        "dvc": DvcResource(),
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
