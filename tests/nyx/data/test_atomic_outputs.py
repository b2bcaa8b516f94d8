"""Atomic outputs: a writer killed mid-write (a real SIGKILL) leaves the previous output readable, and concurrent
writers leave one complete version, never a mix (``nyx.data.records.write_jsonl`` over ``nyx.utils.io``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nyx.data.records import Record, read_jsonl, write_jsonl
from tests.paths import REPO

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
        cwd=REPO,
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
