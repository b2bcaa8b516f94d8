"""Quantised flat indexes (``IndexConfig.quantize``): binary codes, and float rescoring of quantised candidates.

A flat index may hold int8 codes (``faiss.IndexScalarQuantizer``, built in :mod:`nyx.index.build`) or sign bits
(:func:`binary_codes` in a ``faiss.IndexBinaryFlat``). Binary indexes, and int8 ones with ``int8_rescore``
(:func:`rescores`), return the best ``rescore_factor·k`` candidates of the codes rescored with float inner products
against the stored vectors (:func:`search_rescored`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nyx.index.manifest import IndexConfig
from nyx.index.vectors import prefix

#: binary rescoring: at most this many bytes of gathered candidate vectors held at once
RESCORE_BLOCK_BYTES = 32 << 20


def binary_codes(x: np.ndarray) -> np.ndarray:
    """One bit per coordinate, set where it is > 0, packed 8 to a byte (uint8 [n, ceil(d/8)]). A dimension that is not
    a multiple of 8 is padded with zero bits on every row alike, which adds nothing to a Hamming distance."""
    return np.packbits(np.asarray(x) > 0, axis=1)


def code_bits(dim: int) -> int:
    """The width (``d``) of the binary index over ``dim`` coordinates: whole bytes of :func:`binary_codes`."""
    return 8 * math.ceil(dim / 8)


def rescores(quantize: str, config: IndexConfig) -> bool:
    """Whether a flat index quantised as ``quantize`` rescores its candidates: binary always, int8 with
    ``config.int8_rescore``."""
    return quantize == "binary" or (quantize == "int8" and config.int8_rescore)


def search_rescored(
    index: Any, q: np.ndarray, k: int, dim: int, stored: np.ndarray, rescore_factor: int, *, binary: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``rescore_factor·k`` candidates from the quantised index (Hamming distance on the sign bits when
    ``binary``, else the int8 scores), then those candidates rescored with float inner products against the
    ``stored`` vectors' re-normalised ``dim``-prefixes; the best ``k`` by float score (exact ties: the larger id
    first, as FAISS orders them)."""
    n = index.ntotal
    k = min(k, n)
    kc = min(n, max(k, rescore_factor * k))
    _, cand = index.search(binary_codes(q) if binary else q, kc)
    out_s = np.empty((len(q), k), np.float32)
    out_i = np.empty((len(q), k), np.int64)
    step = max(1, RESCORE_BLOCK_BYTES // (4 * kc * dim))
    for a in range(0, len(q), step):
        c = cand[a : a + step]
        flat = np.where(c >= 0, c, 0).ravel()  # Hamming search finds all n codes, so -1 never shows; be safe
        rows = stored[flat, :dim]
        rows = np.asarray(rows, dtype=np.float32) if dim == stored.shape[1] else prefix(rows, dim)
        scores = np.matmul(rows.reshape(len(c), kc, dim), q[a : a + step, :, None])[:, :, 0]
        scores[c < 0] = -np.inf
        order = np.lexsort((-c, -scores), axis=-1)[:, :k]
        out_s[a : a + step] = np.take_along_axis(scores, order, axis=1)
        out_i[a : a + step] = np.take_along_axis(c, order, axis=1)
    return out_s, out_i
