"""Dagster wiring: the MLflow resource sets up its store once per instance, and the automation sensor is declared."""

import mlflow

from orchestration.resources import MlflowResource


def test_mlflow_resource_looks_up_its_experiment_once_and_still_points_the_library_at_its_store(tmp_path, monkeypatch):
    lookups = []
    real = mlflow.get_experiment_by_name
    monkeypatch.setattr(mlflow, "get_experiment_by_name", lambda name: lookups.append(name) or real(name))
    res = MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/a.db", artifact_root=str(tmp_path / "art"))
    other = MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/b.db", artifact_root=str(tmp_path / "art-b"))
    first = res.experiment_id()
    other.client()  # another store in the same process moves the library's global URI
    assert res.experiment_id() == first and res.client() is not None
    assert mlflow.get_tracking_uri() == res.tracking_uri  # pointed back at its own store
    assert lookups == ["nyx", "nyx"]  # once per resource instance, not once per call


def test_automation_sensor_is_declared_stopped_over_every_asset(definitions):
    import dagster as dg

    sensors = {s.name: s for s in definitions.get_repository_def().sensor_defs}
    auto = sensors["default_automation_condition_sensor"]
    assert isinstance(auto, dg.AutomationConditionSensorDefinition)
    assert auto.default_status == dg.DefaultSensorStatus.STOPPED
