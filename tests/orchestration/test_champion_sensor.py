"""A champion moved with the CLI (``nyx registry promote``/``rollback``) is reported to Dagster by
``champion_alias_sensor`` as a materialisation of ``champion_model``, so the UI and the registry agree (issue 15,
item 7); with nothing moved the sensor skips."""

from __future__ import annotations

import dagster as dg
from typer.testing import CliRunner

from nyx import registry as reg
from orchestration.sensors import CHAMPION_ASSET, champion_alias_sensor, champion_in_dagster

NAME = "nyx-retriever"


def _evaluate(instance, settings, mlflow):
    with dg.build_sensor_context(instance=instance, resources={"settings": settings, "mlflow": mlflow}) as ctx:
        return champion_alias_sensor(ctx)


def _report(instance, result) -> None:
    """What the daemon does with a sensor's asset events."""
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def test_cli_promotion_and_rollback_are_reported_on_champion_model(tmp_path, tmp_resources):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = reg.client(uri)
    client.create_registered_model(NAME)
    versions = []
    for i in range(2):
        src = tmp_path / f"m{i}"
        src.mkdir()
        versions.append(str(client.create_model_version(NAME, source=src.as_uri()).version))
    settings, mlflow = tmp_resources["settings"], tmp_resources["mlflow"]  # on the registry at uri
    instance = dg.DagsterInstance.ephemeral()

    # no champion anywhere: nothing to report
    assert isinstance(_evaluate(instance, settings, mlflow), dg.SkipReason)

    # the pipeline promoted v1 (a champion_model materialisation says so)
    reg.promote(client, NAME, versions[0])
    instance.report_runless_asset_event(
        dg.AssetMaterialization(CHAMPION_ASSET, metadata={"champion_version": versions[0]})
    )
    assert isinstance(_evaluate(instance, settings, mlflow), dg.SkipReason)

    # an operator promotes v2 with the CLI: the sensor reports it, once
    runner = CliRunner()
    from nyx.cli import app

    assert runner.invoke(app, ["registry", "promote", versions[1], "--tracking-uri", uri]).exit_code == 0
    result = _evaluate(instance, settings, mlflow)
    assert isinstance(result, dg.SensorResult) and len(result.asset_events) == 1
    event = result.asset_events[0]
    assert event.asset_key == CHAMPION_ASSET
    assert event.metadata["champion_version"].value == versions[1]
    assert event.metadata["previous_champion"].value == versions[0]
    _report(instance, result)
    assert champion_in_dagster(instance) == versions[1]
    assert isinstance(_evaluate(instance, settings, mlflow), dg.SkipReason)

    # and a rollback with the CLI goes back in Dagster too
    assert runner.invoke(app, ["registry", "rollback", "--tracking-uri", uri]).exit_code == 0
    result = _evaluate(instance, settings, mlflow)
    _report(instance, result)
    assert champion_in_dagster(instance) == versions[0]


def test_champion_sensor_is_in_the_code_location_and_runs_by_default(definitions):
    sensor = definitions.resolve_sensor_def("champion_alias_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
