"""One pipeline run per data root at a time.

Two ``make run`` in one checkout would race on the same files and do the work twice. The run holds an OS-level lock
(``filelock``: ``flock`` on Linux) on ``<work>/.pipeline.lock`` beside the data root (outside the DVC-tracked data);
the kernel releases it when the holder dies, however it dies, so a lock left by a killed run is simply taken over.
An owner file beside it names the holder, so that a second run can refuse by name within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".pipeline.lock"
OWNER_NAME = ".pipeline.owner.json"


class PipelineBusy(RuntimeError):
    """Another run holds the data root."""

    def __init__(self, message: str, owner: dict | None = None):
        super().__init__(message)
        self.owner = owner or {}


def _owner(folder: Path) -> dict:
    try:
        return json.loads((folder / OWNER_NAME).read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def pipeline_lock(folder: str | os.PathLike, what: str = "make run") -> Iterator[dict]:
    """Hold the pipeline lock of ``folder`` for the duration, or raise :class:`PipelineBusy` at once."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _owner(folder)
        who = (
            f"pid {owner['pid']} ({owner.get('what', 'a run')}, started {owner.get('started', '?')})"
            if owner.get("pid")
            else "another process"
        )
        raise PipelineBusy(
            f"{who} is already running the pipeline on {folder.parent}: wait for it to finish, or "
            f"stop it (kill {owner.get('pid', '<pid>')}) and run again",
            owner,
        ) from None
    me = {"pid": os.getpid(), "what": what, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
    try:
        (folder / OWNER_NAME).write_text(json.dumps(me))
        yield me
    finally:
        with contextlib.suppress(OSError):
            if _owner(folder).get("pid") == os.getpid():
                (folder / OWNER_NAME).unlink()
        lock.release()
