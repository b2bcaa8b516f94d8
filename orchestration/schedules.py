"""Schedules: nightly incremental processing and weekly retraining. Off by default; the profile turns them on
(``NYX_SCHEDULES=on`` or the ``paper`` profile), or switch them on in the UI."""

import os

import dagster as dg

from orchestration.jobs import nightly_incremental, weekly_retrain
from orchestration.partitions import SHARDS


def _default_status() -> dg.DefaultScheduleStatus:
    on = os.environ.get("NYX_SCHEDULES", "").lower() in ("1", "on", "true") or os.environ.get("NYX_PROFILE") == "paper"
    return dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED


@dg.schedule(
    job=nightly_incremental,
    cron_schedule="0 2 * * *",
    default_status=_default_status(),
    description="02:00 daily: process every shard whose chunks are missing (new shards).",
)
def nightly_incremental_schedule(context: dg.ScheduleEvaluationContext):
    known = context.instance.get_dynamic_partitions(SHARDS.name)
    done = context.instance.get_materialized_partitions(dg.AssetKey("corpus_chunks"))  # one query, not one per shard
    todo = [k for k in known if k not in done]
    if not todo:
        return dg.SkipReason("no shard without chunks")
    return [
        dg.RunRequest(run_key=f"nightly-{k}-{context.scheduled_execution_time:%Y%m%d}", partition_key=k) for k in todo
    ]


weekly_retrain_schedule = dg.ScheduleDefinition(
    job=weekly_retrain,
    cron_schedule="0 3 * * 0",
    default_status=_default_status(),
    description="Sundays 03:00: Stage 1 -> feedback -> Stage 2 -> evaluation -> promotion.",
)

SCHEDULES = [nightly_incremental_schedule, weekly_retrain_schedule]
