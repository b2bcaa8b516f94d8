"""A run whose process was killed (a real SIGKILL while it holds a `gpu` pool slot) is found, marked failed with the
reason, and its slot freed, so the next run is not blocked; a waiting step is told who holds the slot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from tests.paths import REPO

#: a child that materialises an asset in pool `gpu` that never ends, as `make run` does (same tags)
CHILD = """
import sys, time
import dagster as dg
from orchestration.stale_runs import run_tags

@dg.asset(pool="gpu")
def trains_for_ever():
    print("holding", flush=True)
    time.sleep(600)

dg.materialize([trains_for_ever], instance=dg.DagsterInstance.get(), tags=run_tags())
"""


@dg.asset(pool="gpu")
def quick():
    return 1


def _gpu(instance):
    return instance.event_log_storage.get_concurrency_info("gpu")


@pytest.fixture()
def instance(tmp_path, monkeypatch):
    from orchestration.instance_setup import ensure_instance

    home = ensure_instance(tmp_path / "dh")  # pools with default_limit 1, as `make run` sets up
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    inst = dg.DagsterInstance.get()
    yield inst
    inst.dispose()


def test_killed_run_is_marked_failed_its_slot_freed_and_the_next_run_goes_through(instance):
    from orchestration.stale_runs import clean_stale_runs, pool_waits

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not _gpu(instance).claimed_slots:
            assert child.poll() is None and time.time() < deadline, child.stdout.read()[-3000:]
            time.sleep(0.2)
        held_by = _gpu(instance).claimed_slots[0].run_id
        assert clean_stale_runs(instance) == []  # alive: left alone
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert instance.get_run_by_id(held_by).status == dg.DagsterRunStatus.STARTED  # what kill -9 leaves behind
    assert [c.run_id for c in _gpu(instance).claimed_slots] == [held_by]

    cleaned = clean_stale_runs(instance)
    assert [c.run_id for c in cleaned] == [held_by] and "is gone" in cleaned[0].reason
    run = instance.get_run_by_id(held_by)
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = [e for e in instance.all_logs(held_by) if e.dagster_event and e.dagster_event.is_run_failure]
    assert failure and "is gone" in failure[-1].dagster_event.message
    assert _gpu(instance).claimed_slots == [] and pool_waits(instance) == []
    assert clean_stale_runs(instance) == []  # nothing left to clean

    result = dg.materialize([quick], instance=instance)  # would wait for the dead run's slot for ever before
    assert result.success


def test_pool_waits_names_the_run_holding_the_slot(instance):
    from orchestration.stale_runs import pool_waits

    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("gpu")
    storage.claim_concurrency_slot("gpu", "run-a", "stage1_checkpoint")
    storage.claim_concurrency_slot("gpu", "run-b", "stage2_checkpoint")
    assert pool_waits(instance) == [
        "run run-b step stage2_checkpoint waits for pool 'gpu' (1 slot(s)), held by run run-a (step stage1_checkpoint)"
    ]
