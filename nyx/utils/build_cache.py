"""Folders built once and reused while their recipe holds (the tiny offline models of :mod:`nyx.model.tiny` and
:mod:`nyx.model.tiny_mllama`).

A built folder carries a stamp file (:data:`STAMP_FILENAME`: what recipe built it); :func:`ensure_built` reuses it
while the stamp matches and rebuilds it otherwise. Concurrent builders (threads, processes, test workers) serialise on
a lock file beside it (``filelock``: ``flock`` on Linux, released by the kernel when a holder dies); the folder is
written into a temporary sibling and renamed into place, so a reader never sees a half-built one. A builder killed
mid-way leaves its temporary sibling behind; the next builder, holding the lock (so no other is at work), removes it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from nyx.utils.io import atomic_dir

log = logging.getLogger(__name__)

STAMP_FILENAME = "nyx_build.json"


def is_current(folder: Path, stamp: dict[str, str]) -> bool:
    """Whether ``folder`` was built by the recipe ``stamp`` describes."""
    try:
        return json.loads((folder / STAMP_FILENAME).read_text()) == stamp
    except (OSError, ValueError):
        return False


def ensure_built(target: Path, stamp: dict[str, str], build: Callable[[Path], Any], what: str) -> Path:
    """``target``, built by ``build(folder)`` unless it is current for ``stamp`` (``what`` names it in the log)."""
    if is_current(target, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{target.name}.lock"):
        if is_current(target, stamp):  # another builder finished while we waited
            return target
        # what a killed builder left: atomic_dir's temporary sibling (``.<name>.*.tmp``) or the folder it replaced
        for left in [*target.parent.glob(f".{target.name}.*.tmp"), *target.parent.glob(f".{target.name}.old.*")]:
            if left.is_dir():
                log.info("removing %s, left by a builder that did not finish", left)
                shutil.rmtree(left, ignore_errors=True)
        t0 = time.perf_counter()
        with atomic_dir(target) as tmp:
            build(tmp)
            (tmp / STAMP_FILENAME).write_text(json.dumps(stamp, indent=2) + "\n")
        log.info("built %s in %s (%.1f s)", what, target, time.perf_counter() - t0)
    return target


__all__ = ["STAMP_FILENAME", "ensure_built", "is_current"]
