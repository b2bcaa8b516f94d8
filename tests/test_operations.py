"""Operating the pipeline: the shard sensor and nightly schedule, a two-shard backfill in one run, the DVC
snapshot -> change -> restore round-trip, atomic outputs under SIGKILL and concurrent writers, the code location's
jobs/schedules/sensors, and the commands the training launcher builds."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from nyx.data.records import Record, read_jsonl, write_jsonl
from orchestration.resources import DvcResource, NyxSettings

SHARD_KEYS = ["shard-00000", "shard-00001"]


@pytest.fixture(scope="module")
def sample_raw(tmp_path_factory) -> Path:
    """Two small OBELICS shards (+ images), generated once for the module."""
    from nyx.data.sample import generate_sample

    root = tmp_path_factory.mktemp("sample")
    generate_sample(root / "raw", n_docs=12, seed=5, n_shards=2)
    return root / "raw"


def _load_defs() -> dg.Definitions:
    from orchestration.definitions import defs

    return defs()


# --------------------------------------------------------------------------------------------------------------
# 1. sensor and schedule
# --------------------------------------------------------------------------------------------------------------


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


def test_sensor_run_request_targets_the_nightly_job_with_a_valid_partition(tmp_path, sample_raw):
    shutil.copytree(sample_raw, tmp_path / "data" / "raw")
    defs = _load_defs()
    sensor = defs.resolve_sensor_def("new_shard_sensor")
    assert sensor.job_name == "nightly_incremental"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate_sensor(instance, tmp_path / "data")
    instance.add_dynamic_partitions("shards", list(result.dynamic_partitions_requests[0].partition_keys))
    job = defs.resolve_job_def("nightly_incremental")
    keys = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(keys) == SHARD_KEYS


def test_nightly_schedule_requests_only_shards_without_chunks():
    from orchestration.schedules import nightly_incremental_schedule

    when = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC)
    repo = _load_defs().get_repository_def()  # run requests are resolved against the nightly job's partitions
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


# --------------------------------------------------------------------------------------------------------------
# 2. backfill
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_shard_backfill_materialises_both_partitions_in_one_run(tmp_path, sample_raw):
    import assets.nyxqa
    import assets.raw
    from assets.nyxqa import corpus_chunks
    from assets.raw import raw_documents

    shutil.copytree(sample_raw, tmp_path / "data" / "raw")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", SHARD_KEYS)
    assert corpus_chunks.backfill_policy == dg.BackfillPolicy.single_run()
    checks = dg.load_asset_checks_from_modules([assets.raw, assets.nyxqa])
    result = dg.materialize(
        [raw_documents, corpus_chunks, *checks],
        selection=[raw_documents, corpus_chunks],
        instance=instance,
        resources={
            "settings": NyxSettings(data_dir=str(tmp_path / "data")),
            "dvc": DvcResource(repo_dir=str(tmp_path)),
        },
        tags={
            "dagster/asset_partition_range_start": SHARD_KEYS[0],
            "dagster/asset_partition_range_end": SHARD_KEYS[-1],
        },
    )
    assert result.success
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    assert sorted(m.partition for m in mats if m.asset_key == dg.AssetKey("corpus_chunks")) == SHARD_KEYS
    # single-run backfill policy: one corpus_chunks step handled both shards
    steps = [e for e in result.all_events if e.is_step_success and e.step_key == "corpus_chunks"]
    assert len(steps) == 1
    assert instance.get_materialized_partitions(dg.AssetKey("corpus_chunks")) == set(SHARD_KEYS)
    for key in SHARD_KEYS:
        chunks = read_jsonl(tmp_path / "data" / "chunks" / f"{key}.jsonl")
        assert chunks and all(c.id.split("#")[0] for c in chunks)
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "raw_documents_valid": True,
        "corpus_chunks_valid": True,
    }


# --------------------------------------------------------------------------------------------------------------
# 3. DVC snapshot / change / restore
# --------------------------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_dvc_snapshot_change_and_restore_round_trip(tmp_path, monkeypatch):
    from assets.versioning import data_snapshot
    from nyx.versioning.dvc import dvc_md5

    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    data = repo / "data"
    (data / "documents").mkdir(parents=True)
    (data / "documents" / "shard-00000.jsonl").write_text('{"id": "a", "content": [{"type": "text", "text": "v1"}]}\n')
    (data / "raw").mkdir()
    (data / "raw" / "manifest.txt").write_text("shard-00000.parquet\n")
    _git(repo, "init", "-q")
    (tmp_path / "link").symlink_to(repo)  # the data folder reached through a symlink is still inside the repo
    resources = {
        "settings": NyxSettings(data_dir=str(tmp_path / "link" / "data")),
        "dvc": DvcResource(repo_dir=str(repo), remote_url=str(tmp_path / "remote")),
    }

    def snapshot(message: str) -> tuple[str, str]:
        result = dg.materialize([data_snapshot], instance=dg.DagsterInstance.ephemeral(), resources=resources)
        mat = result.asset_materializations_for_node("data_snapshot")[0]
        md5 = mat.metadata["dvc_md5"].value
        assert mat.metadata["status_clean"].value is True
        _git(repo, "add", "data.dvc", ".gitignore", ".dvc")
        _git(repo, "commit", "-q", "-m", message)
        return md5, _git(repo, "rev-parse", "HEAD")

    md5_v1, rev_v1 = snapshot("data v1")
    assert md5_v1 == dvc_md5(data) and md5_v1.endswith(".dir")
    assert list((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the remote"

    (data / "documents" / "shard-00000.jsonl").write_text('{"id": "a", "content": [{"type": "text", "text": "v2"}]}\n')
    (data / "documents" / "shard-00001.jsonl").write_text('{"id": "b", "content": [{"type": "text", "text": "new"}]}\n')
    md5_v2, _ = snapshot("data v2")
    assert md5_v2 != md5_v1
    assert dvc_md5(data) == md5_v2 == resources["dvc"].dvc().tracked_md5("data")

    # restore v1: git checkout REV -- data.dvc && dvc checkout data.dvc
    _git(repo, "checkout", rev_v1, "--", "data.dvc")
    dvc = resources["dvc"].dvc()
    dvc.checkout("data")
    assert dvc_md5(data) == md5_v1
    assert "v1" in (data / "documents" / "shard-00000.jsonl").read_text()
    assert not (data / "documents" / "shard-00001.jsonl").exists()
    assert dvc.status("data") == {}

    # and from the remote alone: empty the local cache, pull v1 back
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(data)
    dvc.pull("data")
    assert dvc_md5(data) == md5_v1


# --------------------------------------------------------------------------------------------------------------
# 4. atomic outputs
# --------------------------------------------------------------------------------------------------------------

_SLOW_WRITER = r"""
import sys, time
from nyx.data.records import Record, write_jsonl

def records():
    for i in range(100_000):
        yield Record.from_text(f"new-{i}", "x" * 1000)
        if i == 200:                      # ~200 KB written: past every buffer, on disk in the temporary file
            print("writing", flush=True)
        if i > 200:
            time.sleep(0.01)

write_jsonl(records(), sys.argv[1])
"""


def _tmp_siblings(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")]


def test_killed_write_leaves_the_previous_output_readable(tmp_path):
    out = tmp_path / "chunks" / "shard-00000.jsonl"
    previous = [Record.from_text(f"old-{i}", f"old text {i}") for i in range(50)]
    write_jsonl(previous, out)
    before = out.read_bytes()

    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout.readline().strip() == "writing", "writer never started"
        (tmp,) = _tmp_siblings(out)
        deadline = time.time() + 10
        while tmp.stat().st_size < 100_000 and time.time() < deadline:
            time.sleep(0.05)
        assert tmp.stat().st_size >= 100_000  # the kill really lands mid-write
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert out.read_bytes() == before
    assert [r.id for r in read_jsonl(out)] == [r.id for r in previous]
    # the orphaned temporary file is hidden and not picked up by readers that glob for outputs
    assert _tmp_siblings(out) and list(out.parent.glob("*.jsonl")) == [out]


def test_concurrent_writers_leave_one_complete_version_never_a_mix(tmp_path):
    out = tmp_path / "shard.jsonl"
    n = 3000
    write_jsonl([Record.from_text(f"old-{i}", "old") for i in range(n)], out)
    start = threading.Barrier(3)
    done = threading.Event()
    seen: list[set[str]] = []
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            start.wait()
            for _ in range(5):
                write_jsonl((Record.from_text(f"{tag}-{i}", tag * 50) for i in range(n)), out)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        start.wait()
        while not done.is_set():
            lines = out.read_text().splitlines()
            tags = {json.loads(ln)["id"].split("-")[0] for ln in lines}
            seen.append(tags if len(lines) == n else {"TRUNCATED"})

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    rt = threading.Thread(target=reader)
    for t in (*threads, rt):
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    rt.join(60)

    assert not errors, errors
    assert seen and all(len(s) == 1 and s <= {"old", "a", "b"} for s in seen), [s for s in seen if len(s) != 1]
    final = read_jsonl(out)
    assert len(final) == n and len({r.id.split("-")[0] for r in final}) == 1
    assert not _tmp_siblings(out)  # every temporary file was renamed or removed


# --------------------------------------------------------------------------------------------------------------
# 5. code location: jobs, schedules, sensors; training launcher
# --------------------------------------------------------------------------------------------------------------


def test_code_location_has_jobs_schedules_and_sensor_stopped_by_default(monkeypatch):
    monkeypatch.delenv("NYX_SCHEDULES", raising=False)
    monkeypatch.delenv("NYX_PROFILE", raising=False)
    defs = _load_defs()
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs} >= {"nightly_incremental", "weekly_retrain"}
    nightly = defs.resolve_job_def("nightly_incremental")
    weekly = defs.resolve_job_def("weekly_retrain")
    assert {k.to_user_string() for k in nightly.asset_layer.executable_asset_keys} >= {"raw_documents", "corpus_chunks"}
    assert "champion_model" in {k.to_user_string() for k in weekly.asset_layer.executable_asset_keys}
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["nightly_incremental_schedule"].job_name == "nightly_incremental"
    assert schedules["weekly_retrain_schedule"].job_name == "weekly_retrain"
    import orchestration.schedules as mod

    importlib.reload(mod)
    assert {s.default_status for s in mod.SCHEDULES} == {dg.DefaultScheduleStatus.STOPPED}
    assert defs.resolve_sensor_def("new_shard_sensor").default_status == dg.DefaultSensorStatus.STOPPED


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


def _torchrun_args(cmd: list[str]):
    from torch.distributed.run import get_args_parser

    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    return get_args_parser().parse_args(cmd[3:])


def test_launcher_starts_the_processes_the_profile_means():
    """paper: 8 processes under torchrun (20 per GPU x 8 = 160 in-batch candidates); rehearsal: 2; sample: 1."""
    from nyx.profiles import load_profile
    from orchestration.launcher import TrainingLauncher

    paper = _torchrun_args(TrainingLauncher().command("nyx.train.tracked", [], load_profile("paper").launch))
    assert paper.nproc_per_node == "8" and paper.nnodes == "1"
    assert load_profile("paper").stage1.train["per_device_batch_size"] * load_profile("paper").launch.world_size == 160
    rehearsal = _torchrun_args(TrainingLauncher().command("nyx.train.tracked", [], load_profile("rehearsal").launch))
    assert rehearsal.nproc_per_node == "2"
    assert TrainingLauncher().command("m", [], load_profile("sample").launch) == [sys.executable, "-m", "m"]
    # a deployment may override the counts (e.g. 4 GPUs); the trainer then logs the global batch it got
    assert (
        _torchrun_args(TrainingLauncher(nproc_per_node=4).command("m", [], load_profile("paper").launch)).nproc_per_node
        == "4"
    )


def test_launcher_builds_python_and_single_node_torchrun_commands():
    from orchestration.launcher import TrainingLauncher

    assert TrainingLauncher().command("nyx.train.tracked", ["--config", "c.json"]) == [
        sys.executable,
        "-m",
        "nyx.train.tracked",
        "--config",
        "c.json",
    ]
    with pytest.raises(dg.Failure, match="torchrun"):
        TrainingLauncher(nproc_per_node=2).command("nyx.train.tracked", [])

    cmd = TrainingLauncher(kind="torchrun", nproc_per_node=8).command("nyx.train.tracked", ["--config", "c.json"])
    args = _torchrun_args(cmd)
    # one node: a free port per launch, so two pipelines on one machine do not collide (EADDRINUSE)
    other = _torchrun_args(TrainingLauncher(kind="torchrun", nproc_per_node=8).command("m", []))
    assert any(a.startswith("--master_port=") for a in cmd) and int(args.master_port) >= 1024
    assert int(other.master_port) >= 1024
    assert _torchrun_args(TrainingLauncher(kind="torchrun", master_port=29511).command("m", [])).master_port == 29511
    assert args.nproc_per_node == "8" and args.nnodes == "1"
    assert args.module and args.training_script == "nyx.train.tracked"
    assert args.training_script_args == ["--config", "c.json"]


def test_launcher_builds_multi_node_torchrun_with_rendezvous():
    from orchestration.launcher import TrainingLauncher

    launcher = TrainingLauncher(
        kind="torchrun", nproc_per_node=8, nnodes=4, node_rank=2, rdzv_endpoint="trainer-0.nyx:29400"
    )
    args = _torchrun_args(launcher.command("nyx.train.tracked", ["--config", "c.json"]))
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("4", "8", 2)
    assert args.rdzv_backend == "c10d" and args.rdzv_endpoint == "trainer-0.nyx:29400"
    assert args.training_script == "nyx.train.tracked" and args.training_script_args == ["--config", "c.json"]
    # several nodes without an endpoint or a fixed port: refused (a port picked here means nothing to other nodes)
    with pytest.raises(dg.Failure, match="fixed master_port"):
        TrainingLauncher(kind="torchrun", nnodes=2).command("m", [])
    # without an explicit endpoint the master address/port is the rendezvous point
    args = _torchrun_args(
        TrainingLauncher(kind="torchrun", nnodes=2, master_addr="10.0.0.1", master_port=29500).command("m", [])
    )
    assert args.rdzv_endpoint == "10.0.0.1:29500"


def test_launcher_builds_deepspeed_command_with_hostfile(tmp_path):
    from deepspeed.launcher.runner import parse_args

    from orchestration.launcher import TrainingLauncher

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=8\nnode-b slots=8\n")
    launcher = TrainingLauncher(
        kind="deepspeed", nproc_per_node=8, nnodes=2, master_addr="node-a", master_port=29600, hostfile=str(hostfile)
    )
    cmd = launcher.command("nyx.train.tracked", ["--config", "c.json"])
    assert Path(cmd[0]).name == "deepspeed"
    args = parse_args(cmd[1:])
    assert (args.num_gpus, args.num_nodes, args.hostfile) == (8, 2, str(hostfile))
    assert (args.master_addr, args.master_port) == ("node-a", 29600)
    assert args.module and args.user_script == "nyx.train.tracked" and args.user_args == ["--config", "c.json"]
    # several nodes without a host file would silently train on one node
    with pytest.raises(dg.Failure, match="hostfile"):
        TrainingLauncher(kind="deepspeed", nproc_per_node=8, nnodes=2).command("nyx.train.tracked", [])
