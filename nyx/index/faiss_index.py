"""A FAISS inner-product index over L2-normalised embeddings, searchable at any Matryoshka prefix.

The full-dimension vectors are kept (``vectors.npy``); a FAISS index per requested dimension is derived
from their re-normalised prefixes on first use and cached. Documents arrive shard by shard through
:meth:`EmbeddingIndex.add`, and every shard, query and loaded folder is checked against the
:class:`~nyx.index.manifest.IndexManifest` (model, revision, dimension).

Which FAISS index is built depends on :class:`~nyx.index.manifest.IndexConfig` and the corpus size (flat
below ``approximate_from`` documents, else ``index_type``; a flat index may be quantised to int8 or binary codes,
``config.quantize``). Every build is recorded in ``manifest.build_stats[dim]`` (type, quantisation, build time,
serialised bytes and, for approximate and quantised indexes, recall@10 against exact search measured on a seeded
sample of the stored vectors): :meth:`EmbeddingIndex.build_report`.

Batches of queries on a flat float32 index run either through FAISS or as one BLAS matrix product plus
``np.argpartition`` top-k (:func:`numpy_topk`), whichever is faster for the batch (``config.search_backend``,
:func:`choose_backend`).

Folder layout written by :meth:`EmbeddingIndex.save`::

    manifest.json            model, dims, index config, document ids, corpus hash, build stats, version
    vectors.npy              float32 or float16 (config.store_dtype) [n, dim], L2-normalised, row i = doc_ids[i]
    faiss-hnsw-256.index     approximate indexes already built, as faiss-<type>-<dim>.index: a reload does not
                             rebuild or retrain them (flat ones are rebuilt on load: they are a copy)
    faiss-int8-256.index     quantised flat indexes already built, as faiss-<int8|binary>-<dim>.index (binary
                             ones with faiss.write_index_binary)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from nyx.index.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    IndexConfig,
    IndexManifest,
    IndexMismatchError,
    IndexType,
    SearchBackend,
)
from nyx.utils.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

VECTORS_NAME = "vectors.npy"
#: recall@K against exact search is what the build measures
RECALL_K = 10
#: FAISS k-means wants at least this many training points per centroid
POINTS_PER_CENTROID = 39
#: automatic IVF cluster count: 4·sqrt(n), at most this
MAX_AUTO_NLIST = 65536
#: numpy search: at most this many bytes of float32 scores held at once (documents are scored in blocks)
NUMPY_SCORE_BLOCK_BYTES = 64 << 20
#: binary rescoring: at most this many bytes of gathered candidate vectors held at once
RESCORE_BLOCK_BYTES = 32 << 20


@dataclass
class SearchResult:
    """Top-k neighbours per query: ``ids[i]`` and ``scores[i]`` in descending score order."""

    ids: list[list[str]]
    scores: list[np.ndarray]
    dim: int

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray]]:
        return iter(zip(self.ids, self.scores))


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


def index_bytes(index: faiss.Index | faiss.IndexBinary) -> int:
    """The size of ``faiss.serialize_index(index)`` (``serialize_index_binary`` for a binary index), counted while
    streaming (no copy of the index is held)."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
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


def binary_codes(x: np.ndarray) -> np.ndarray:
    """One bit per coordinate, set where it is > 0, packed 8 to a byte (uint8 [n, ceil(d/8)]). A dimension that is not
    a multiple of 8 is padded with zero bits on every row alike, which adds nothing to a Hamming distance."""
    return np.packbits(np.asarray(x) > 0, axis=1)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k (``-1`` padding counts as a miss)."""
    if len(exact) == 0:
        return 1.0
    k = exact.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx, exact)]
    return float(np.mean(hits) / k)


class EmbeddingIndex:
    """Inner-product nearest-neighbour search over document embeddings of one model.

    Create with :meth:`create`, fill with :meth:`add` (any number of shards), query with :meth:`search`,
    persist with :meth:`save` / :meth:`load`.
    """

    def __init__(self, manifest: IndexManifest, vectors: np.ndarray | None = None):
        self.manifest = manifest
        self._chunks: list[np.ndarray] = []
        self._indexes: dict[int, faiss.Index] = {}
        self._id_set: set[str] = set(manifest.doc_ids)
        if len(self._id_set) != len(manifest.doc_ids):
            raise ValueError("manifest lists duplicate document ids")
        if vectors is not None:
            if vectors.ndim != 2 or vectors.shape != (len(manifest.doc_ids), manifest.dim):
                raise IndexMismatchError(
                    f"vectors of shape {vectors.shape} do not match the manifest "
                    f"({len(manifest.doc_ids)} documents x {manifest.dim} dims)"
                )
            self._chunks.append(np.ascontiguousarray(vectors, dtype=self.store_dtype))
        elif manifest.doc_ids:
            raise ValueError("the manifest lists documents but no vectors were given")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        *,
        model_id: str,
        dim: int,
        full_dim: int | None = None,
        mrl_dims: Sequence[int] = (),
        config: IndexConfig | None = None,
        model_revision: str | None = None,
        mlflow_model_version: str | None = None,
        corpus_hash: str | None = None,
    ) -> EmbeddingIndex:
        """An empty index for ``dim``-dimensional embeddings of ``model_id``."""
        manifest = IndexManifest(
            model_id=model_id,
            model_revision=model_revision,
            mlflow_model_version=mlflow_model_version,
            dim=dim,
            full_dim=full_dim or dim,
            mrl_dims=list(mrl_dims),
            config=config or IndexConfig(),
            corpus_hash=corpus_hash,
        )
        return cls(manifest)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def doc_ids(self) -> list[str]:
        return self.manifest.doc_ids

    def __len__(self) -> int:
        return len(self.manifest.doc_ids)

    @property
    def store_dtype(self) -> np.dtype:
        """The dtype vectors are kept in, in memory and in ``vectors.npy`` (``config.store_dtype``)."""
        return np.dtype(self.manifest.config.store_dtype)

    @property
    def stored_vectors(self) -> np.ndarray:
        """All stored vectors as kept, ``store_dtype`` [n, dim] (consolidated into one array on first access)."""
        if len(self._chunks) != 1:
            joined = np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dim), self.store_dtype)
            self._chunks = [joined]
        return self._chunks[0]

    @property
    def vectors(self) -> np.ndarray:
        """All stored vectors, float32 [n, dim] (with float16 storage: a new float32 copy on every access)."""
        return self.stored_vectors.astype(np.float32, copy=False)

    def add(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        *,
        model_id: str | None = None,
        model_revision: str | None = None,
    ) -> None:
        """Append one shard. Rows are L2-normalised on the way in.

        Raises :class:`IndexMismatchError` when the shard's model (if given) or dimension differs from the
        index, and ``ValueError`` for duplicate ids, a row-count mismatch or non-finite values.
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array, got shape {embeddings.shape}")
        self.manifest.check_model(model_id, model_revision, embeddings.shape[1])
        ids = [str(i) for i in ids]
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{len(ids)} ids for {embeddings.shape[0]} embeddings")
        if not np.isfinite(embeddings).all():
            bad = [ids[i] for i in np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[:5]]
            raise ValueError(f"non-finite embedding values for documents {bad}")
        dup = [i for i in ids if i in self._id_set]
        if dup or len(set(ids)) != len(ids):
            dup = dup or [i for i in ids if ids.count(i) > 1]
            raise ValueError(f"duplicate document ids: {sorted(set(dup))[:5]}")
        if not ids:
            return
        self._chunks.append(normalize_rows(embeddings).astype(self.store_dtype, copy=False))
        self.manifest.doc_ids.extend(ids)
        self._id_set.update(ids)
        # Built indexes and their stats describe the old corpus (clusters, codebooks, measured recall, and the
        # type itself when the size crosses approximate_from): drop them, they are rebuilt on next use.
        self._indexes.clear()
        self.manifest.build_stats.clear()

    def merge_from(self, other: EmbeddingIndex) -> None:
        """Append all documents of another index built with the same model and dimension."""
        self.manifest.check_compatible(other.manifest)
        self.add(other.doc_ids, other.vectors)

    # ------------------------------------------------------------------ FAISS indexes per dim
    def check_dim(self, dim: int | None) -> int:
        """The search dimension for ``dim`` (None = the index's own), or :class:`IndexMismatchError`."""
        dim = self.dim if dim is None else int(dim)
        if dim < 1 or dim > self.dim:
            raise IndexMismatchError(
                f"dimension {dim} is not available: the index stores {self.dim}-dim vectors, so any "
                f"prefix 1..{self.dim} works (trained Matryoshka dims: {self.manifest.mrl_dims})"
            )
        return dim

    def faiss_index(self, dim: int | None = None) -> faiss.Index | faiss.IndexBinary:
        """The FAISS index over the ``dim``-prefix of every vector, built on first use (a ``faiss.IndexBinaryFlat``
        of sign bits with ``quantize="binary"``)."""
        dim = self.check_dim(dim)
        if dim not in self._indexes:
            self._indexes[dim] = self._build(dim)
        return self._indexes[dim]

    def build(self, dims: Sequence[int]) -> None:
        """Build the indexes for ``dims`` now (e.g. before saving approximate indexes)."""
        for d in dims:
            self.faiss_index(d)

    def resolve_type(self, n: int | None = None) -> IndexType:
        """The index type for ``n`` documents (default: the current size): ``config.resolve_type``."""
        return self.manifest.config.resolve_type(len(self) if n is None else n)

    def build_report(self) -> dict[str, Any]:
        """What was built, JSON-able (for asset metadata): corpus size, storage, and per built dimension
        (keys are strings) the entry of ``manifest.build_stats``:

        ``type`` (flat / hnsw / ivf / ivfpq as built), ``quantize`` (none / int8 / binary; absent in entries
        written before manifest format 3: none), ``requested_type``, ``fallback`` (why an approximate type
        was replaced by flat, else None), ``documents``, ``dim``, ``build_seconds`` (wall clock, training
        included), ``build_cpu_seconds`` (CPU time of the process, all threads: the work, less sensitive to the
        machine's load), ``train_seconds``, ``train_cpu_seconds``, ``train_points``, ``bytes`` (serialised FAISS
        index), ``bytes_per_document``, ``params`` (nlist, nprobe, m, nbits, M, ef...), ``recall_at_10_vs_flat``
        (mean over ``queries`` stored vectors used as queries of |approximate top-10 ∩ exact top-10| / 10; 1.0
        for flat, exact by construction, with ``queries`` 0; None when ``recall_queries`` is 0), ``queries``,
        ``recall_k`` (10, or n when smaller), ``recall_seconds``, ``search_ms_per_query`` (the approximate index,
        batched over the recall queries; None when not measured), ``built_at``. Quantised indexes add
        ``float32_flat_bytes`` (4·n·dim) and ``bytes_vs_float32_flat``; rescored ones (binary, int8 with
        ``int8_rescore``) ``rescore_vectors_bytes`` (the stored vectors rescoring reads, held in memory) and
        ``before_rescore_recall_at_10_vs_flat`` (the codes alone) with its ``before_rescore_search_ms_per_query``.
        Entries are kept by :meth:`save` / :meth:`load` and dropped by :meth:`add` (the index is rebuilt).
        """
        cfg = self.manifest.config
        stored = self.stored_vectors
        return {
            "documents": len(self),
            "stored_dim": self.dim,
            "store_dtype": cfg.store_dtype,
            "vectors_bytes": int(stored.nbytes),
            "index_type": cfg.index_type,
            "approximate_from": cfg.approximate_from,
            "quantize": cfg.quantize,
            "rescore_factor": (
                cfg.rescore_factor
                if cfg.quantize == "binary" or (cfg.quantize == "int8" and cfg.int8_rescore)
                else None
            ),
            "search_backend": cfg.search_backend,
            "dims": {str(d): dict(st) for d, st in sorted(self.manifest.build_stats.items(), reverse=True)},
        }

    def _prefix_vectors(self, dim: int) -> np.ndarray:
        """Float32 [n, dim] unit rows: the stored vectors (converted from float16 if so stored) or their prefix."""
        stored = self.stored_vectors
        if dim == self.dim:
            return np.ascontiguousarray(stored, dtype=np.float32)
        return prefix(stored[:, :dim], dim)

    def _train_sample(self, vecs: np.ndarray, size: int) -> np.ndarray:
        """``size`` rows of ``vecs`` drawn with ``config.seed`` (all of them, in order, when ``size >= n``)."""
        if size >= len(vecs):
            return vecs
        rows = np.sort(np.random.default_rng(self.manifest.config.seed).choice(len(vecs), size, replace=False))
        return np.ascontiguousarray(vecs[rows])

    def _build(self, dim: int) -> faiss.Index:
        index, stats = self._build_with_stats(dim)
        self.manifest.build_stats[dim] = stats
        return index

    def _build_with_stats(self, dim: int) -> tuple[faiss.Index, dict[str, Any]]:
        cfg = self.manifest.config
        n = len(self)
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = self._prefix_vectors(dim)
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
        if quantize == "binary":
            index = faiss.IndexBinaryFlat(8 * math.ceil(dim / 8))
            params = {"bits": dim, "code_bytes": math.ceil(dim / 8)}
        elif quantize == "int8":
            index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            params = {"qtype": "QT_8bit", "ranges": "per dimension, min/max of the training sample"}
            if n:
                train = self._train_sample(vecs, min(n, cfg.train_sample))
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
            train = self._train_sample(vecs, size)
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
        self._configure(index)
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
        if quantize == "binary" or (quantize == "int8" and cfg.int8_rescore):
            # what rescoring reads: the stored vectors, all stored dims, kept in memory for every index type
            stats["rescore_vectors_bytes"] = int(self.stored_vectors.nbytes)
            params.update(
                rescore_factor=cfg.rescore_factor, rescore_with=f"stored vectors ({VECTORS_NAME}, {cfg.store_dtype})"
            )
        if kind != "flat" or quantize != "none":
            rescored = quantize == "binary" or (quantize == "int8" and cfg.int8_rescore)
            search = (
                (lambda xq, k: self._search_rescored(index, xq, k, dim, binary=quantize == "binary"))
                if rescored
                else index.search
            )
            stats.update(self._measure_recall(search, vecs))
            if rescored and stats.get("queries"):
                codes = binary_codes if quantize == "binary" else (lambda xq: xq)
                stats.update(
                    self._measure_recall(lambda xq, k: index.search(codes(xq), k), vecs, prefix_key="before_rescore_")
                )
        return index, stats

    def _measure_recall(self, search: Any, vecs: np.ndarray, prefix_key: str = "") -> dict[str, Any]:
        """Recall@10 of ``search(queries, k) -> (scores, ids)`` against exact inner-product search over ``vecs``,
        with a seeded sample of ``config.recall_queries`` stored vectors as queries (a query's own document counts
        as a neighbour). ``prefix_key`` names the keys for a second measurement (binary codes before rescoring)."""
        cfg = self.manifest.config
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

    def _configure(self, index: faiss.Index) -> None:
        cfg = self.manifest.config
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = cfg.hnsw_ef_search
        elif isinstance(index, faiss.IndexIVF):
            index.nprobe = cfg.ivf_nprobe

    # ------------------------------------------------------------------ search
    def prepare_queries(
        self, query_emb: np.ndarray, dim: int | None = None, *, model_id: str | None = None
    ) -> tuple[np.ndarray, int]:
        """Check query embeddings against the index and cut them to the search dimension."""
        q = np.asarray(query_emb, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2:
            raise ValueError(f"query embeddings must be 1-D or 2-D, got shape {q.shape}")
        self.manifest.check_model(model_id)
        dim = self.check_dim(dim)
        if q.shape[1] > self.manifest.full_dim or q.shape[1] < dim:
            raise IndexMismatchError(
                f"query embeddings have dimension {q.shape[1]}; searching at dimension {dim} needs "
                f"between {dim} and {self.manifest.full_dim} (model {self.manifest.model_id!r})"
            )
        return prefix(q, dim), dim

    def search(
        self, query_emb: np.ndarray, k: int = 10, dim: int | None = None, *, model_id: str | None = None
    ) -> SearchResult:
        """Top-``k`` documents per query by inner product at Matryoshka dimension ``dim``.

        ``query_emb`` may be full-dimension (it is cut and re-normalised) or already at ``dim``.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q, dim = self.prepare_queries(query_emb, dim, model_id=model_id)
        ids: list[list[str]] = []
        scores: list[np.ndarray] = []
        if len(self) == 0:
            return SearchResult([[] for _ in range(len(q))], [np.zeros(0, np.float32) for _ in range(len(q))], dim)
        index = self.faiss_index(dim)
        k = min(k, len(self))
        doc_ids = self.doc_ids
        bs = self.manifest.config.search_batch_size
        for start in range(0, len(q), bs):
            s, idx = self._search_block(index, q[start : start + bs], k, dim)
            for row_s, row_i in zip(s, idx):
                keep = row_i >= 0  # approximate indexes pad with -1 when they find fewer than k
                ids.append([doc_ids[i] for i in row_i[keep]])
                scores.append(row_s[keep])
        return SearchResult(ids, scores, dim)

    def backend_for(self, n_queries: int, dim: int | None = None) -> str:
        """How a batch of ``n_queries`` is searched at ``dim``: ``numpy`` or ``faiss`` on a flat float32 index
        (:func:`choose_backend`), else what the index is (``int8``, ``binary``, ``hnsw``, ``ivf``, ``ivfpq``)."""
        dim = self.check_dim(dim)
        kind = self._built_kind(dim)
        if kind != "flat":
            return kind
        return choose_backend(self.manifest.config.search_backend, n_queries, dim)

    def _search_block(self, index: Any, q: np.ndarray, k: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        kind = self._built_kind(dim)
        if kind == "binary" or (kind == "int8" and self.manifest.config.int8_rescore):
            return self._search_rescored(index, q, k, dim, binary=kind == "binary")
        if kind == "flat" and choose_backend(self.manifest.config.search_backend, len(q), dim) == "numpy":
            return numpy_topk(q, flat_vectors(index), k)
        return index.search(q, k)

    def _search_rescored(
        self, index: Any, q: np.ndarray, k: int, dim: int, *, binary: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``rescore_factor·k`` candidates from the quantised index (Hamming distance on the sign bits when
        ``binary``, else the int8 scores), then those candidates rescored with float inner products against the
        stored vectors' re-normalised ``dim``-prefixes; the best ``k`` by float score (exact ties: the larger id
        first, as FAISS orders them)."""
        n = index.ntotal
        k = min(k, n)
        kc = min(n, max(k, self.manifest.config.rescore_factor * k))
        _, cand = index.search(binary_codes(q) if binary else q, kc)
        stored = self.stored_vectors
        out_s = np.empty((len(q), k), np.float32)
        out_i = np.empty((len(q), k), np.int64)
        step = max(1, RESCORE_BLOCK_BYTES // (4 * kc * dim))
        for a in range(0, len(q), step):
            c = cand[a : a + step]
            flat = np.where(c >= 0, c, 0).ravel()  # Hamming search finds all n codes, so -1 never shows; be safe
            rows = stored[flat, :dim]
            rows = np.asarray(rows, dtype=np.float32) if dim == self.dim else prefix(rows, dim)
            scores = np.matmul(rows.reshape(len(c), kc, dim), q[a : a + step, :, None])[:, :, 0]
            scores[c < 0] = -np.inf
            order = np.lexsort((-c, -scores), axis=-1)[:, :k]
            out_s[a : a + step] = np.take_along_axis(scores, order, axis=1)
            out_i[a : a + step] = np.take_along_axis(c, order, axis=1)
        return out_s, out_i

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder atomically (a crash leaves any previous version intact). Approximate indexes already
        built are written as ``faiss-<type>-<dim>.index`` so that :meth:`load` reuses them without retraining."""
        path = Path(path)
        self.manifest.format = MANIFEST_FORMAT
        with atomic_dir(path) as tmp:
            np.save(tmp / VECTORS_NAME, self.stored_vectors)
            for d, index in self._indexes.items():
                kind = self._built_kind(d)
                if kind == "binary":
                    faiss.write_index_binary(index, str(tmp / f"faiss-{kind}-{d}.index"))
                elif kind != "flat":
                    faiss.write_index(index, str(tmp / f"faiss-{kind}-{d}.index"))
            write_json(self.manifest.model_dump(mode="json"), tmp / MANIFEST_NAME)
        return path

    def _built_type(self, dim: int) -> IndexType:
        """The type the index at ``dim`` was (or will be) built as: its build stats, else the configured one."""
        stats = self.manifest.build_stats.get(dim)
        return stats["type"] if stats and "type" in stats else self.resolve_type()

    def _built_kind(self, dim: int) -> str:
        """What the index at ``dim`` is (the ``faiss-<kind>-<dim>.index`` name): its type, or for a flat one its
        quantisation (``int8``, ``binary``), ``flat`` when float32. From its build stats (entries without
        ``quantize``, written before manifest format 3, are float32), else the configuration."""
        kind = self._built_type(dim)
        if kind != "flat":
            return kind
        stats = self.manifest.build_stats.get(dim)
        quantize = stats.get("quantize", "none") if stats and "type" in stats else self.manifest.config.quantize
        return "flat" if quantize == "none" else quantize

    @classmethod
    def read_manifest(cls, path: str | os.PathLike) -> IndexManifest:
        path = Path(path)
        mpath = path / MANIFEST_NAME
        if not mpath.is_file():
            raise FileNotFoundError(f"{path} is not an index folder (no {MANIFEST_NAME})")
        return IndexManifest.model_validate(read_json(mpath))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        model_id: str | None = None,
        model_revision: str | None = None,
        dim: int | None = None,
    ) -> EmbeddingIndex:
        """Load a saved folder; if ``model_id``/``model_revision``/``dim`` are given they must match it.

        Saved approximate indexes of the right type and size are reused as they are (no rebuild, no training)
        and keep their build stats; the stats of one that is missing or does not match are dropped (it is
        rebuilt, and re-measured, on first use)."""
        path = Path(path)
        manifest = cls.read_manifest(path)
        manifest.check_model(model_id, model_revision, dim)
        # a quantised index searches its codes: the stored vectors stay on disk, memory-mapped, and are paged in
        # only where they are read (int8 without rescoring: never; see docs/scaling.md for the measured memory)
        quantized = getattr(manifest.config, "quantize", "none") != "none"
        vectors = np.load(path / VECTORS_NAME, mmap_mode="r" if quantized else None)
        self = cls(manifest, vectors)
        for f in sorted(path.glob("faiss-*-*.index")):
            kind, _, d_str = f.stem.removeprefix("faiss-").rpartition("-")
            if not d_str.isdigit():
                continue
            d = int(d_str)
            if kind == "flat" or kind != self._built_kind(d):
                continue
            binary = kind == "binary"
            index = faiss.read_index_binary(str(f)) if binary else faiss.read_index(str(f))
            if index.ntotal == len(self) and index.d == (8 * math.ceil(d / 8) if binary else d):
                self._configure(index)
                self._indexes[d] = index
        for d in list(manifest.build_stats):
            if self._built_kind(d) != "flat" and d not in self._indexes:
                del manifest.build_stats[d]
        return self
