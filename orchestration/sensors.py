"""Sensors: a new shard dropped into ``data/raw`` (or listed in ``data/raw/manifest.txt``) becomes a partition and
a run that processes it alone."""

import dagster as dg

from orchestration.jobs import nightly_incremental
from orchestration.partitions import SHARDS, shard_keys
from orchestration.resources import NyxSettings


@dg.sensor(job=nightly_incremental, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Registers new OBELICS shards in data/raw as partitions and requests their processing.")
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


SENSORS = [new_shard_sensor]
