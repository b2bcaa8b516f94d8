"""Unit-norm float32 rows and their Matryoshka prefixes, as every part of the index reads and searches them."""

from __future__ import annotations

import numpy as np

from nyx.index.manifest import IndexMismatchError


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """A contiguous float32 copy of ``x`` with unit-norm rows (``nyx.model.pooling.normalize``)."""
    from nyx.model.pooling import normalize  # lazy: pulls torch, which sparse-only users never need

    return np.ascontiguousarray(normalize(np.asarray(x, dtype=np.float32)), dtype=np.float32)


def prefix(x: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of each row, re-normalised (``nyx.model.pooling.mrl_truncate``)."""
    from nyx.model.pooling import mrl_truncate

    if dim > x.shape[1]:
        raise IndexMismatchError(f"cannot take a {dim}-dim prefix of {x.shape[1]}-dim embeddings")
    return np.ascontiguousarray(mrl_truncate(np.asarray(x, dtype=np.float32), dim), dtype=np.float32)


def prefix_vectors(stored: np.ndarray, dim: int) -> np.ndarray:
    """Float32 [n, dim] unit rows: the stored vectors (converted from float16 if so stored) or their prefix."""
    if dim == stored.shape[1]:
        return np.ascontiguousarray(stored, dtype=np.float32)
    return prefix(stored[:, :dim], dim)
