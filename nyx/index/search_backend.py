"""Search back-ends of a flat float32 index (``IndexConfig.search_backend``): FAISS, or numpy's BLAS + argpartition.

A batch of queries on a flat float32 index runs either through FAISS or as one BLAS matrix product plus
``np.argpartition`` top-k (:func:`numpy_topk`), whichever is faster for the batch (:func:`choose_backend`).
"""

from __future__ import annotations

import faiss
import numpy as np

from nyx.index.manifest import SearchBackend

#: numpy search: at most this many bytes of float32 scores held at once (documents are scored in blocks)
NUMPY_SCORE_BLOCK_BYTES = 64 << 20


def faiss_blas_threshold() -> int:
    """FAISS's switch (``nq·d`` elements) from scanning the database once per query to a blocked BLAS matrix
    product: ``faiss.cvar.distance_compute_blas_threshold`` (128,000 in FAISS 1.15)."""
    return int(faiss.cvar.distance_compute_blas_threshold)


def choose_backend(setting: SearchBackend, n_queries: int, dim: int) -> str:
    """The backend a flat float32 search of ``n_queries`` queries at ``dim`` runs on: ``setting`` unless ``auto``.

    ``auto`` picks ``numpy`` (:func:`numpy_topk`) when ``n_queries·dim`` is below :func:`faiss_blas_threshold`, else
    ``faiss``. Below the threshold FAISS reads every stored vector once per query (memory-bound: ~7 GFLOP/s per
    thread at 100k x 2048 on the reference machine, whatever the batch), while one BLAS matrix product reuses each
    vector for the whole batch (1.3-2x faster from 4 queries on, 2-8x from 8; as fast for 1 query on one thread
    and ~2x with two, since numpy's BLAS splits a matrix-vector product over threads); from the threshold on FAISS's
    blocked matrix product with heap top-k runs at the matmul's speed and beats numpy's product plus argpartition, whose
    selection is single-threaded (docs/scaling.md, *Quantised Matryoshka search*, has the measurements).
    """
    if setting != "auto":
        return setting
    return "numpy" if n_queries * dim < faiss_blas_threshold() else "faiss"


def flat_vectors(index: faiss.IndexFlat) -> np.ndarray:
    """The float32 [ntotal, d] vectors a FAISS flat index holds, as a numpy view of its memory (no copy): valid
    while ``index`` lives and nothing is added to it."""
    n, d = index.ntotal, index.d
    if n == 0:
        return np.zeros((0, d), np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)


def numpy_topk(
    queries: np.ndarray, docs: np.ndarray, k: int, block_bytes: int = NUMPY_SCORE_BLOCK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products: ``queries @ docs.T`` (one BLAS matrix product per block of documents, at most
    ``block_bytes`` of scores at once) and ``np.argpartition`` per block, the blocks' candidates merged.

    Returns ``(scores, ids)`` [nq, k] in descending score order; exact ties in the order FAISS gives them (its heaps
    break ties by id, the larger id first), so that both backends rank duplicates alike.
    """
    nq, n = len(queries), len(docs)
    k = min(k, n)
    block = max(k, block_bytes // (4 * max(nq, 1)))
    cand_s: list[np.ndarray] = []
    cand_i: list[np.ndarray] = []
    for s0 in range(0, n, block):
        scores = queries @ docs[s0 : s0 + block].T
        width = scores.shape[1]
        if k < width:
            top = np.argpartition(scores, width - k, axis=1)[:, width - k :]
            cand_s.append(np.take_along_axis(scores, top, axis=1))
            cand_i.append(top + s0)
        else:
            cand_s.append(scores)
            cand_i.append(np.broadcast_to(np.arange(s0, s0 + width), scores.shape))
    s = np.concatenate(cand_s, axis=1) if len(cand_s) > 1 else cand_s[0]
    i = np.concatenate(cand_i, axis=1) if len(cand_i) > 1 else cand_i[0]
    order = np.lexsort((-i, -s), axis=-1)[:, :k]  # score descending, then id descending (FAISS's tie order)
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1).astype(np.int64)
