"""The Nyx code location: every asset and check under ``assets/``, resources, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg

import assets
from orchestration.resources import DvcResource, MlflowResource, NyxSettings


def resources() -> dict:
    return {"settings": NyxSettings(), "mlflow": MlflowResource(), "dvc": DvcResource()}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.components.load_defs(assets),
        dg.Definitions(resources=resources()),
    )
