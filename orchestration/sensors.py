"""Sensors: a new shard dropped into ``data/raw`` (or listed in ``data/raw/manifest.txt``) becomes a partition and
a run that processes it alone; a champion moved outside Dagster (``nyx registry promote``/``rollback``, the MLflow UI)
is reported on ``champion_model``."""

import dagster as dg

from orchestration.jobs import nightly_incremental
from orchestration.partitions import SHARDS, shard_keys
from orchestration.resources import MlflowResource, NyxSettings

CHAMPION_ASSET = dg.AssetKey("champion_model")


@dg.sensor(
    job=nightly_incremental,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Registers new OBELICS shards in data/raw as partitions and requests their processing.",
)
def new_shard_sensor(context: dg.SensorEvaluationContext, settings: NyxSettings):
    on_disk = shard_keys(settings.paths)
    known = set(context.instance.get_dynamic_partitions(SHARDS.name))
    new = [k for k in on_disk if k not in known]
    if not new:
        return dg.SkipReason(f"no new shard in {settings.paths.raw} ({len(on_disk)} known)")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"new-{k}", partition_key=k) for k in new],
        dynamic_partitions_requests=[SHARDS.build_add_request(new)],
    )


def champion_in_dagster(instance: dg.DagsterInstance) -> str | None:
    """The champion version Dagster last recorded on ``champion_model`` (its latest materialisation's
    ``champion_version``), ``None`` when it never did."""
    event = instance.get_latest_materialization_event(CHAMPION_ASSET)
    mat = event.asset_materialization if event is not None else None
    value = mat.metadata.get("champion_version") if mat is not None else None
    value = getattr(value, "value", value)
    return None if value in (None, "none") else str(value)


def champion_change(
    instance: dg.DagsterInstance, settings: NyxSettings, mlflow: MlflowResource
) -> dg.AssetMaterialization | None:
    """A materialisation of ``champion_model`` recording the registry's ``champion`` alias when it differs from what
    Dagster last recorded (a promotion or rollback made with the CLI or in the MLflow UI); ``None`` when they agree."""
    from nyx.registry import CHAMPION, alias_version

    name = settings.load_profile().promotion.registered_model
    client = mlflow.client()
    current = alias_version(client, name, CHAMPION)
    known = champion_in_dagster(instance)
    if current is None or current == known:
        return None
    version = client.get_model_version(name, current)
    return dg.AssetMaterialization(
        asset_key=CHAMPION_ASSET,
        description=f"champion moved outside Dagster: {name} version {known or 'none'} -> {current}",
        metadata={
            "champion_version": current,
            "previous_champion": known or "none",
            "changed_by": "the registry (nyx registry promote/rollback or the MLflow UI), seen by champion_alias_sensor",  # noqa: E501
            "alias_source_run": version.run_id or "none",
            "model_version_page": dg.MetadataValue.url(mlflow.model_version_url(name, current)),
        },
    )


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[CHAMPION_ASSET],
    description="Reports a champion alias moved outside Dagster (nyx registry promote/rollback, the MLflow UI) "
    "as a materialisation of champion_model, so that the UI and the registry agree.",
)
def champion_alias_sensor(context: dg.SensorEvaluationContext, settings: NyxSettings, mlflow: MlflowResource):
    change = champion_change(context.instance, settings, mlflow)
    if change is None:
        return dg.SkipReason("the registry's champion is the one Dagster recorded")
    return dg.SensorResult(asset_events=[change])


#: Evaluates the assets' automation conditions (``eager()`` on chunks, QA, NyxQA, hard negatives, feedback): declared
#: here rather than left to Dagster's implicit default, so its name, target and default status are in the code.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Materialises assets whose automation condition is true (upstream changed); stopped by default.",
)

SENSORS = [new_shard_sensor, champion_alias_sensor, automation_sensor]
