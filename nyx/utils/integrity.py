"""Integrity of model and checkpoint folders: a SHA-256 manifest of every file, written last.

A weights file overwritten with zeros (same size), truncated by a full disk or half-copied has the right name and
often the right size: nothing downstream notices, and a broken model gets evaluated and registered. Every folder
the trainer writes (checkpoints, ``final/``, ``merged/``) therefore ends with ``nyx_manifest.json``: the size and
SHA-256 of each file, written after all of them, so a folder without it is incomplete by definition. Readers call
:func:`verify_manifest` before trusting a folder; the manifest's own digest identifies the weights (it is tagged on
the registered model version).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "nyx_manifest.json"
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """A folder's files do not match its manifest (or it has none). ``path`` names the first bad file."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _digest(entries: dict[str, dict]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def write_manifest(folder: str | os.PathLike) -> str:
    """Hash every file under ``folder`` and write the manifest last (atomically). Returns its digest."""
    from nyx.utils.io import write_json

    folder = Path(folder)
    entries = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)
    }
    digest = _digest(entries)
    write_json({"files": entries, "digest": digest}, folder / MANIFEST)
    return digest


def verify_manifest(folder: str | os.PathLike, expected_digest: str | None = None) -> str:
    """Check every file listed in ``folder``'s manifest (size, then SHA-256); return the digest. Raises
    :class:`IntegrityError` naming the first missing or altered file, a missing manifest, or a digest other than
    ``expected_digest``."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise IntegrityError(f"{folder} has no {MANIFEST}: incomplete, or written by an older Nyx", path)
    try:
        manifest = json.loads(path.read_text())
        entries = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{path} is unreadable: {e}", path) from None
    for rel, want in sorted(entries.items()):
        p = folder / rel
        if not p.is_file():
            raise IntegrityError(f"{p} is missing (listed in {MANIFEST})", p)
        size = p.stat().st_size
        if size != want["size"]:
            raise IntegrityError(f"{p} has {size} bytes, {want['size']} were written (truncated or replaced)", p)
        if _sha256(p) != want["sha256"]:
            raise IntegrityError(
                f"{p} does not match the SHA-256 recorded when it was written (altered or corrupted)", p
            )
    digest = _digest(entries)
    if digest != manifest.get("digest"):
        raise IntegrityError(f"{path} was edited: its digest does not match its entries", path)
    if expected_digest is not None and digest != expected_digest:
        raise IntegrityError(
            f"{folder} holds other weights than expected (manifest {digest[:12]}, expected {expected_digest[:12]})",
            path,
        )
    return digest


def is_verified(folder: str | os.PathLike) -> tuple[bool, str]:
    """(ok, reason) without raising."""
    try:
        verify_manifest(folder)
        return True, ""
    except IntegrityError as e:
        return False, str(e)
