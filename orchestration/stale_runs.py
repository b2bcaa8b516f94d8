"""Runs left behind by a killed process, and who holds a pool slot.

``make run`` executes in-process, with no daemon to notice that a run's process died: a run killed with ``kill -9``
stays STARTED for ever and keeps its ``gpu`` pool slot, and the next run waits for that slot. So every run this
driver starts carries its process id and host (:func:`run_tags`); before starting, :func:`clean_stale_runs` marks
the runs whose process is gone as failed (with the reason) and frees their pool slots, and slots still held by runs
that have ended are freed too. While a run waits for a slot, :class:`PoolWatcher` says which run holds it.
(With ``dagster dev`` the daemon's run monitoring does the same for launched runs: ``run_monitoring`` in
``dagster.yaml``, ``free_slots_after_run_end_seconds``.)
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

PID_TAG = "nyx/pid"
HOST_TAG = "nyx/host"


def run_tags() -> dict[str, str]:
    """Tags that let a later run tell whether this one's process is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass
class CleanedRun:
    run_id: str
    was: str
    reason: str

    def line(self) -> str:
        return f"run {self.run_id} ({self.was}): {self.reason}"


def clean_stale_runs(instance: dg.DagsterInstance) -> list[CleanedRun]:
    """Mark this host's STARTING/STARTED runs whose process is gone as failed, free their pool slots, and free
    slots held by runs that have ended. Runs of other hosts, or without the pid tag, are left alone: nothing here
    can tell whether they are alive."""
    from dagster import DagsterRunStatus, RunsFilter

    host = socket.gethostname()
    cleaned: list[CleanedRun] = []
    active = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]))
    for run in active:
        pid, run_host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if pid is None or run_host != host or _alive(int(pid)):
            continue
        reason = (
            f"its process {pid} on {host} is gone (killed?): marked failed and its pool slots freed before a new run"
        )
        instance.report_run_failed(run, reason)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        cleaned.append(CleanedRun(run.run_id, run.status.value, reason))
    for run_id in sorted(instance.event_log_storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            if not any(c.run_id == run_id for c in cleaned):
                was = run.status.value if run is not None else "deleted"
                cleaned.append(CleanedRun(run_id, was, "the run had ended but still held pool slots: freed"))
    return cleaned


def pool_waits(instance: dg.DagsterInstance) -> list[str]:
    """One line per step waiting for a pool slot, naming the runs and steps that hold the pool's slots."""
    storage = instance.event_log_storage
    lines = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        waiting = [p for p in info.pending_steps if p.assigned_timestamp is None]
        if not waiting:
            continue
        holders = ", ".join(f"run {c.run_id} (step {c.step_key})" for c in info.claimed_slots) or "nobody (yet)"
        for p in waiting:
            lines.append(
                f"run {p.run_id} step {p.step_key} waits for pool {pool!r} "
                f"({info.slot_count} slot(s)), held by {holders}"
            )
    return lines


class PoolWatcher:
    """Every ``interval`` seconds while active, report (print) every step waiting for a pool slot and who holds it."""

    def __init__(self, instance: dg.DagsterInstance, interval: float = 30.0, report: Callable[[str], None] = print):
        self.instance, self.interval, self.report = instance, interval, report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nyx-pool-watcher", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for line in pool_waits(self.instance):
                    self.report(line)
            except Exception as e:  # a watcher never breaks the run it watches
                self.report(f"pool watcher: {type(e).__name__}: {e}")

    def __enter__(self) -> PoolWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
