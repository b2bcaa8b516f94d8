"""The shard sensor and the nightly schedule: a new shard file in ``data/raw`` becomes a dynamic partition and a run
request for the nightly job, then the sensor skips; the schedule requests only shards without chunks; schedules are
stopped by default and running when ``NYX_SCHEDULES`` is on or under the paper profile."""

from __future__ import annotations

import datetime as dt
import importlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from orchestration.resources import NyxSettings

SHARD_KEYS = ["shard-00000", "shard-00001"]


def _evaluate_sensor(instance: dg.DagsterInstance, data_dir: Path):
    from orchestration.sensors import new_shard_sensor

    ctx = dg.build_sensor_context(instance=instance, resources={"settings": NyxSettings(data_dir=str(data_dir))})
    return new_shard_sensor(ctx)


def test_new_shard_file_in_raw_triggers_a_run_request_and_partition_then_skips(tmp_path, sample_raw):
    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    shutil.copy(sample_raw / "shard-00000.parquet", data / "raw")
    shutil.copytree(sample_raw / "images", data / "raw" / "images")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["shard-00000"])  # already known

    # nothing new yet -> skip
    assert isinstance(_evaluate_sensor(instance, data), dg.SkipReason)

    # a new shard is dropped into raw (a half-copied hidden file must be ignored)
    (data / "raw" / ".shard-00002.parquet.partial").write_bytes(b"PAR1")
    shutil.copy(sample_raw / "shard-00001.parquet", data / "raw")
    result = _evaluate_sensor(instance, data)
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["shard-00001"]
    assert result.run_requests[0].run_key  # idempotent: the daemon will not launch the same shard twice
    (add,) = result.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert add.partitions_def_name == "shards" and list(add.partition_keys) == ["shard-00001"]

    # the daemon applies the add request; the next evaluation finds nothing new
    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    assert isinstance(_evaluate_sensor(instance, data), dg.SkipReason)


def test_sensor_run_request_targets_the_nightly_job_with_a_valid_partition(tmp_path, sample_raw, definitions):
    shutil.copytree(sample_raw, tmp_path / "data" / "raw")
    defs = definitions
    sensor = defs.resolve_sensor_def("new_shard_sensor")
    assert sensor.job_name == "nightly_incremental"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate_sensor(instance, tmp_path / "data")
    instance.add_dynamic_partitions("shards", list(result.dynamic_partitions_requests[0].partition_keys))
    job = defs.resolve_job_def("nightly_incremental")
    keys = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(keys) == SHARD_KEYS


def test_nightly_schedule_requests_only_shards_without_chunks(definitions):
    from orchestration.schedules import nightly_incremental_schedule

    when = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC)
    repo = definitions.get_repository_def()  # run requests are resolved against the nightly job's partitions
    with dg.instance_for_test() as instance:  # schedule contexts need an instance reference, not an ephemeral one

        def tick():
            ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo)
            return nightly_incremental_schedule.evaluate_tick(ctx)

        assert tick().skip_message and not tick().run_requests  # no shard registered yet

        instance.add_dynamic_partitions("shards", SHARD_KEYS)
        assert sorted(r.partition_key for r in tick().run_requests) == SHARD_KEYS

        instance.report_runless_asset_event(dg.AssetMaterialization("corpus_chunks", partition="shard-00000"))
        requests = tick().run_requests
        assert [r.partition_key for r in requests] == ["shard-00001"]
        assert "20260105" in requests[0].run_key  # one run per shard and night

        instance.report_runless_asset_event(dg.AssetMaterialization("corpus_chunks", partition="shard-00001"))
        assert tick().skip_message and not tick().run_requests


@pytest.mark.parametrize("var,value", [("NYX_SCHEDULES", "on"), ("NYX_PROFILE", "paper")])
def test_schedules_default_running_when_nyx_schedules_is_on_or_paper_profile(monkeypatch, var, value):
    import orchestration.schedules as mod

    monkeypatch.delenv("NYX_SCHEDULES", raising=False)
    monkeypatch.delenv("NYX_PROFILE", raising=False)
    monkeypatch.setenv(var, value)
    try:
        importlib.reload(mod)
        assert {s.default_status for s in mod.SCHEDULES} == {dg.DefaultScheduleStatus.RUNNING}
    finally:
        monkeypatch.delenv(var)
        importlib.reload(mod)
    assert {s.default_status for s in mod.SCHEDULES} == {dg.DefaultScheduleStatus.STOPPED}
