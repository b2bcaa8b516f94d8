"""Building the FAISS index at one Matryoshka dimension, and measuring what was built.

Which FAISS index is built depends on :class:`~nyx.index.manifest.IndexConfig` and the corpus size (flat below
``approximate_from`` documents, else ``index_type``; a flat index may be quantised to int8 or binary codes,
``config.quantize``, see :mod:`nyx.index.quantize`). :func:`build_index` returns the index with its build stats
(type, quantisation, build time, serialised bytes and, for approximate and quantised indexes, recall@10 against
exact search measured on a seeded sample of the stored vectors), which
:class:`~nyx.index.faiss_index.EmbeddingIndex` keeps in ``manifest.build_stats[dim]``.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import faiss
import numpy as np

from nyx.index.manifest import IndexConfig
from nyx.index.persistence import VECTORS_NAME
from nyx.index.quantize import binary_codes, code_bits, rescores, search_rescored
from nyx.index.vectors import prefix_vectors

log = logging.getLogger(__name__)

#: recall@K against exact search is what the build measures
RECALL_K = 10
#: FAISS k-means wants at least this many training points per centroid
POINTS_PER_CENTROID = 39
#: automatic IVF cluster count: 4·sqrt(n), at most this
MAX_AUTO_NLIST = 65536


def index_bytes(index: faiss.Index | faiss.IndexBinary) -> int:
    """The size of ``faiss.serialize_index(index)`` (``serialize_index_binary`` for a binary index), counted while
    streaming (no copy of the index is held)."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)  # type: ignore[attr-defined]  # missing from faiss-cpu's stubs
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, writer)
    else:
        faiss.write_index(index, writer)
    del writer  # flushes
    return total


def pq_subquantizers(dim: int, requested: int | None) -> int:
    """PQ sub-quantisers at ``dim``: ``requested`` (default ``dim // 8``), lowered to the largest divisor of ``dim``."""
    target = max(1, min(dim, requested if requested is not None else dim // 8))
    return max(m for m in range(1, target + 1) if dim % m == 0)


def ivf_nlist(n: int, train_points: int, requested: int | None) -> int:
    """IVF clusters for ``n`` documents: ``requested`` or 4·sqrt(n) (at most :data:`MAX_AUTO_NLIST`), capped at
    ``train_points / 39`` so that FAISS's k-means has enough points per centroid."""
    want = requested if requested is not None else min(MAX_AUTO_NLIST, round(4 * math.sqrt(n)))
    return max(1, min(want, train_points // POINTS_PER_CENTROID))


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k (``-1`` padding counts as a miss)."""
    if len(exact) == 0:
        return 1.0
    k = exact.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx, exact)]
    return float(np.mean(hits) / k)


def train_sample(vecs: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` rows of ``vecs`` drawn with ``seed`` (``config.seed``; all of them, in order, when ``size >= n``)."""
    if size >= len(vecs):
        return vecs
    rows = np.sort(np.random.default_rng(seed).choice(len(vecs), size, replace=False))
    return np.ascontiguousarray(vecs[rows])


def configure(index: faiss.Index, cfg: IndexConfig) -> None:
    """Set the search-time parameters of ``cfg`` on a built or loaded index (HNSW ``efSearch``, IVF ``nprobe``)."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = cfg.hnsw_ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = cfg.ivf_nprobe


def build_index(stored: np.ndarray, dim: int, cfg: IndexConfig) -> tuple[Any, dict[str, Any]]:
    """The FAISS index over the ``dim``-prefixes of the ``stored`` vectors (all of an index's documents, [n, stored
    dim], as kept), and its build stats (the keys are listed in ``EmbeddingIndex.build_report``)."""
    n = len(stored)
    t0, c0 = time.perf_counter(), time.process_time()
    vecs = prefix_vectors(stored, dim)
    kind = cfg.resolve_type(n)
    fallback = None
    if kind in ("ivf", "ivfpq") and n == 0:
        kind, fallback = "flat", "empty index: nothing to train on"
    if kind == "ivfpq" and n < cfg.pq_min_train():
        fallback = (
            f"{n} documents are too few to train IVF-PQ codebooks (FAISS needs "
            f"{cfg.pq_min_train()} = 39 x 2**{cfg.pq_nbits} points): exact flat search instead"
        )
        kind = "flat"
    if fallback is not None and n > 0:
        log.warning("index at dim %d: %s", dim, fallback)
    params: dict[str, Any] = {}
    train_points, train_s, train_cpu_s = 0, 0.0, 0.0
    quantize = cfg.quantize if kind == "flat" else "none"
    index: Any
    if quantize == "binary":
        index = faiss.IndexBinaryFlat(code_bits(dim))
        params = {"bits": dim, "code_bytes": math.ceil(dim / 8)}
    elif quantize == "int8":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        params = {"qtype": "QT_8bit", "ranges": "per dimension, min/max of the training sample"}
        if n:
            train = train_sample(vecs, min(n, cfg.train_sample), cfg.seed)
            t_train, c_train = time.perf_counter(), time.process_time()
            index.train(train)
            train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - c_train
            train_points = len(train)
            del train
    elif kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        params = {"M": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction, "ef_search": cfg.hnsw_ef_search}
    elif kind in ("ivf", "ivfpq"):
        size = min(n, max(cfg.train_sample, cfg.pq_min_train() if kind == "ivfpq" else 1))
        train = train_sample(vecs, size, cfg.seed)
        nlist = ivf_nlist(n, len(train), cfg.ivf_nlist)
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            params = {"nlist": nlist, "nprobe": cfg.ivf_nprobe}
        else:
            m = pq_subquantizers(dim, cfg.pq_m)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, cfg.pq_nbits, faiss.METRIC_INNER_PRODUCT)
            params = {"nlist": nlist, "nprobe": cfg.ivf_nprobe, "m": m, "nbits": cfg.pq_nbits}
        t_train, c_train = time.perf_counter(), time.process_time()
        index.train(train)
        train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - c_train
        train_points = len(train)
        del train
    else:  # pragma: no cover - pydantic rejects other values
        raise ValueError(f"unknown index type {kind!r}")
    if n:
        index.add(binary_codes(vecs) if quantize == "binary" else vecs)
    configure(index, cfg)
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    nbytes = index_bytes(index)
    stats: dict[str, Any] = {
        "type": kind,
        "quantize": quantize,
        "requested_type": cfg.index_type,
        "fallback": fallback,
        "documents": n,
        "dim": dim,
        "build_seconds": round(build_s, 4),
        "build_cpu_seconds": round(build_cpu_s, 4),
        "train_seconds": round(train_s, 4),
        "train_cpu_seconds": round(train_cpu_s, 4),
        "train_points": train_points,
        "bytes": nbytes,
        "bytes_per_document": round(nbytes / n, 2) if n else None,
        "params": params,
        "recall_at_10_vs_flat": 1.0,
        "queries": 0,
        "recall_k": min(RECALL_K, n),
        "recall_seconds": 0.0,
        "search_ms_per_query": None,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if quantize != "none":
        float_bytes = 4 * n * dim
        stats["float32_flat_bytes"] = float_bytes  # the vectors a float32 flat index would hold
        stats["bytes_vs_float32_flat"] = round(nbytes / float_bytes, 5) if n else None
    rescored = rescores(quantize, cfg)
    if rescored:
        # what rescoring reads: the stored vectors, all stored dims, kept in memory for every index type
        stats["rescore_vectors_bytes"] = int(stored.nbytes)
        params.update(
            rescore_factor=cfg.rescore_factor, rescore_with=f"stored vectors ({VECTORS_NAME}, {cfg.store_dtype})"
        )
    if kind != "flat" or quantize != "none":
        search = (
            (lambda xq, k: search_rescored(index, xq, k, dim, stored, cfg.rescore_factor, binary=quantize == "binary"))
            if rescored
            else index.search
        )
        stats.update(measure_recall(search, vecs, cfg))
        if rescored and stats.get("queries"):
            codes = binary_codes if quantize == "binary" else (lambda xq: xq)
            stats.update(
                measure_recall(lambda xq, k: index.search(codes(xq), k), vecs, cfg, prefix_key="before_rescore_")
            )
    return index, stats


def measure_recall(search: Any, vecs: np.ndarray, cfg: IndexConfig, prefix_key: str = "") -> dict[str, Any]:
    """Recall@10 of ``search(queries, k) -> (scores, ids)`` against exact inner-product search over ``vecs``,
    with a seeded sample of ``config.recall_queries`` stored vectors as queries (a query's own document counts
    as a neighbour). ``prefix_key`` names the keys for a second measurement (binary codes before rescoring)."""
    n = len(vecs)
    q = min(cfg.recall_queries, n)
    if q == 0:
        return {f"{prefix_key}recall_at_10_vs_flat": None, "queries": 0}
    t0 = time.perf_counter()
    rows = np.sort(np.random.default_rng(cfg.seed + 1).choice(n, q, replace=False))
    xq = np.ascontiguousarray(vecs[rows])
    k = min(RECALL_K, n)
    t_search = time.perf_counter()
    _, approx = search(xq, k)
    search_ms = (time.perf_counter() - t_search) * 1000 / q
    _, exact = faiss.knn(xq, vecs, k, metric=faiss.METRIC_INNER_PRODUCT)
    if prefix_key:
        return {
            f"{prefix_key}recall_at_10_vs_flat": round(recall_at_k(approx, exact), 4),
            f"{prefix_key}search_ms_per_query": round(search_ms, 4),
        }
    return {
        "recall_at_10_vs_flat": round(recall_at_k(approx, exact), 4),
        "queries": q,
        "recall_k": k,
        "recall_seconds": round(time.perf_counter() - t0, 4),
        "search_ms_per_query": round(search_ms, 4),
    }
