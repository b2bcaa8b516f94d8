"""The saved folder of an :class:`~nyx.index.faiss_index.EmbeddingIndex`: its layout, written atomically, and read back.

Folder layout written by :meth:`EmbeddingIndex.save <nyx.index.faiss_index.EmbeddingIndex.save>`::

    manifest.json            model, dims, index config, document ids, corpus hash, build stats, version
    vectors.npy              float32 or float16 (config.store_dtype) [n, dim], L2-normalised, row i = doc_ids[i]
    faiss-hnsw-256.index     approximate indexes already built, as faiss-<type>-<dim>.index: a reload does not
                             rebuild or retrain them (flat ones are rebuilt on load: they are a copy)
    faiss-int8-256.index     quantised flat indexes already built, as faiss-<int8|binary>-<dim>.index (binary
                             ones with faiss.write_index_binary)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from nyx.index.manifest import MANIFEST_NAME, IndexManifest
from nyx.index.quantize import code_bits
from nyx.utils.io import atomic_dir, read_json, write_json

VECTORS_NAME = "vectors.npy"


def write_folder(
    path: str | os.PathLike, manifest: IndexManifest, stored: np.ndarray, built: Mapping[int, tuple[str, Any]]
) -> Path:
    """Write the folder atomically (a crash leaves any previous version intact): the manifest, the ``stored``
    vectors and, of the ``built`` indexes (``{dim: (kind, index)}``, kind as in the file name), every one that is
    not a float32 flat copy of the vectors, as ``faiss-<kind>-<dim>.index``."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        np.save(tmp / VECTORS_NAME, stored)
        for d, (kind, index) in built.items():
            if kind == "binary":
                faiss.write_index_binary(index, str(tmp / f"faiss-{kind}-{d}.index"))
            elif kind != "flat":
                faiss.write_index(index, str(tmp / f"faiss-{kind}-{d}.index"))
        write_json(manifest.model_dump(mode="json"), tmp / MANIFEST_NAME)
    return path


def read_manifest(path: str | os.PathLike) -> IndexManifest:
    """The manifest of a saved index folder (``FileNotFoundError`` when it is not one)."""
    path = Path(path)
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise FileNotFoundError(f"{path} is not an index folder (no {MANIFEST_NAME})")
    return IndexManifest.model_validate(read_json(mpath))


def read_vectors(path: Path, manifest: IndexManifest) -> np.ndarray:
    """The stored vectors of a saved folder. A quantised index searches its codes: the stored vectors stay on disk,
    memory-mapped, and are paged in only where they are read (int8 without rescoring: never; see docs/scaling.md for
    the measured memory)."""
    quantized = getattr(manifest.config, "quantize", "none") != "none"
    return np.load(path / VECTORS_NAME, mmap_mode="r" if quantized else None)


def read_indexes(path: Path, kind_of: Callable[[int], str], n: int) -> dict[int, Any]:
    """The saved indexes of a folder that can be reused as they are: ``{dim: index}`` for each
    ``faiss-<kind>-<dim>.index`` whose kind is ``kind_of(dim)`` (what the manifest says the index at that dim is)
    and that holds ``n`` vectors of the right width."""
    found: dict[int, Any] = {}
    for f in sorted(path.glob("faiss-*-*.index")):
        kind, _, d_str = f.stem.removeprefix("faiss-").rpartition("-")
        if not d_str.isdigit():
            continue
        d = int(d_str)
        if kind == "flat" or kind != kind_of(d):
            continue
        binary = kind == "binary"
        index = faiss.read_index_binary(str(f)) if binary else faiss.read_index(str(f))
        if index.ntotal == n and index.d == (code_bits(d) if binary else d):
            found[d] = index
    return found
