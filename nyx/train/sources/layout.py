"""Where a training source's files are: the profile's paths (relative to the data root), the converted folder
``<data>/training_sources/<name>/`` and its files, and the source's reject log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nyx.paths import DataPaths

TRIPLES_FILE = "triples.jsonl"
MANIFEST_FILE = "manifest.json"
IMAGES_DIR = "images"


def resolve_path(paths: DataPaths, ref: str | os.PathLike) -> Path:
    """A profile path: absolute as it is, relative to the data root otherwise."""
    p = Path(ref).expanduser()
    return p if p.is_absolute() else paths.root / p


def converted_dir(paths: DataPaths, name: str) -> Path:
    return paths.training_sources / name


def converted_file(paths: DataPaths, name: str) -> Path:
    """The Nyx triples Stage 1 trains on for source ``name``."""
    return converted_dir(paths, name) / TRIPLES_FILE


def rejects_file(paths: DataPaths, name: str) -> Path:
    return paths.rejects / "training_sources" / f"{name}.jsonl"
