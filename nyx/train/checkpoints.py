"""Training checkpoints under ``<output_dir>/checkpoints/``: writing one (all ranks), keeping ``save_total_limit``,
finding the latest one that verifies, and choosing what a run resumes from.

Layout of a checkpoint::

    checkpoints/step-00000050/   state/ (accelerate: weights, optimizer, scheduler, RNG per rank)
                                 model/ (LoRA adapter or full HF weights + processor + nyx_profile.json)
                                 trainer_state.json (written last: a checkpoint without it is incomplete)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nyx.train.config import TrainConfig
from nyx.utils.integrity import is_verified, verify_manifest, write_manifest
from nyx.utils.io import read_json, write_json

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
CHECKPOINTS = "checkpoints"


def find_latest_checkpoint(output_dir: str | os.PathLike, verify: bool = True) -> Path | None:
    """The complete checkpoint with the highest step whose files match its manifest, or None. A checkpoint that
    fails verification (a zeroed or truncated file) is skipped with a warning naming the file, so training resumes
    from the last one that verifies."""
    root = Path(output_dir) / CHECKPOINTS
    found: list[tuple[int, Path]] = []
    if root.is_dir():
        for d in root.iterdir():
            m = re.fullmatch(r"step-(\d+)", d.name)
            if m and (d / TRAINER_STATE).is_file():
                found.append((int(m.group(1)), d))
    for _, d in sorted(found, reverse=True):
        ok, reason = is_verified(d) if verify else (True, "")
        if ok:
            return d
        log.warning("skipping checkpoint %s: %s", d, reason)
    return None


def resolve_resume(which: str | None, output_dir: Path) -> Path | None:
    """The checkpoint ``resume_from_checkpoint`` names: ``None`` (a fresh start), ``"latest"`` (the latest that
    verifies, or a fresh start when there is none) or a checkpoint folder (which must be complete and verify)."""
    if which is None:
        return None
    if which == "latest":
        found = find_latest_checkpoint(output_dir)
        if found is None:
            log.info("resume_from_checkpoint='latest' but no checkpoint in %s: starting fresh", output_dir)
        return found
    path = Path(which)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINER_STATE})")
    verify_manifest(path)  # a named checkpoint that does not verify is an error, never silently used
    return path


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a checkpoint was written at."""
    return int(read_json(Path(checkpoint) / TRAINER_STATE)["global_step"])


def resume_step(config: TrainConfig) -> int | None:
    """The optimizer step training will resume from (None: a fresh start)."""
    which = config.resume_from_checkpoint
    if not which:
        return None
    ck = find_latest_checkpoint(config.output_dir) if which == "latest" else os.path.abspath(which)
    return checkpoint_step(ck) if ck else None


def save_checkpoint(
    acc: Any, output_dir: Path, step: int, save_model: Callable[[Path], None], config: TrainConfig
) -> Path:
    """Write ``checkpoints/step-N`` (all ranks take part; ``save_model(folder)`` writes ``model/`` on the main
    process); prune to ``config.save_total_limit``."""
    root = output_dir / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        # every rank writes into state/ (its RNG state, its ZeRO shard): it must exist before any of them
        # starts, or a fast rank races the main process's makedirs inside save_state
        (tmp / "state").mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / "state"))
    acc.wait_for_everyone()  # every rank's shard is on disk before the manifest hashes it
    if acc.is_main_process:
        save_model(tmp / "model")
        write_json({"global_step": step, "config": config.model_dump(mode="json")}, tmp / TRAINER_STATE)
        write_manifest(tmp)  # last: a checkpoint without it is incomplete
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        prune_checkpoints(root, config.save_total_limit)
    acc.wait_for_everyone()
    return final


def prune_checkpoints(root: Path, limit: int | None) -> None:
    """Keep the ``limit`` newest complete checkpoints under ``root`` (all of them when ``limit`` is None)."""
    if limit is None:
        return
    done = sorted((d for d in root.iterdir() if re.fullmatch(r"step-\d+", d.name)), key=lambda d: d.name)
    for d in done[:-limit]:
        shutil.rmtree(d, ignore_errors=True)
