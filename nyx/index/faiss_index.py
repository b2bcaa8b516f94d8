"""The index of one model's document embeddings: inner-product search at any Matryoshka prefix.

The full-dimension vectors are kept (``vectors.npy``); a FAISS index per requested dimension is derived
from their re-normalised prefixes on first use and cached. Documents arrive shard by shard through
:meth:`EmbeddingIndex.add`, and every shard, query and loaded folder is checked against the
:class:`~nyx.index.manifest.IndexManifest` (model, revision, dimension).

What is built at each dimension, and the build stats recorded in ``manifest.build_stats[dim]``
(:meth:`EmbeddingIndex.build_report`), is :mod:`nyx.index.build`; quantised (int8, binary) indexes and their float
rescoring are :mod:`nyx.index.quantize`; a flat float32 index searches a batch with FAISS or numpy, whichever is
faster (:mod:`nyx.index.search_backend`); the saved folder is :mod:`nyx.index.persistence`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from nyx.index.build import build_index, configure
from nyx.index.manifest import MANIFEST_FORMAT, IndexConfig, IndexManifest, IndexMismatchError, IndexType
from nyx.index.persistence import read_indexes, read_manifest, read_vectors, write_folder
from nyx.index.quantize import rescores, search_rescored
from nyx.index.search_backend import choose_backend, flat_vectors, numpy_topk
from nyx.index.vectors import normalize_rows, prefix


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


class EmbeddingIndex:
    """Inner-product nearest-neighbour search over document embeddings of one model.

    Create with :meth:`create`, fill with :meth:`add` (any number of shards), query with :meth:`search`,
    persist with :meth:`save` / :meth:`load`.
    """

    def __init__(self, manifest: IndexManifest, vectors: np.ndarray | None = None):
        self.manifest = manifest
        self._chunks: list[np.ndarray] = []
        self._indexes: dict[int, faiss.Index | faiss.IndexBinary] = {}
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
            "rescore_factor": cfg.rescore_factor if rescores(cfg.quantize, cfg) else None,
            "search_backend": cfg.search_backend,
            "dims": {str(d): dict(st) for d, st in sorted(self.manifest.build_stats.items(), reverse=True)},
        }

    def _build(self, dim: int) -> faiss.Index | faiss.IndexBinary:
        index, stats = build_index(self.stored_vectors, dim, self.manifest.config)
        self.manifest.build_stats[dim] = stats
        return index

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
        cfg = self.manifest.config
        if rescores(kind, cfg):
            return search_rescored(index, q, k, dim, self.stored_vectors, cfg.rescore_factor, binary=kind == "binary")
        if kind == "flat" and choose_backend(cfg.search_backend, len(q), dim) == "numpy":
            return numpy_topk(q, flat_vectors(index), k)
        return index.search(q, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder atomically (a crash leaves any previous version intact). Approximate indexes already
        built are written as ``faiss-<type>-<dim>.index`` so that :meth:`load` reuses them without retraining."""
        self.manifest.format = MANIFEST_FORMAT
        built = {d: (self._built_kind(d), index) for d, index in self._indexes.items()}
        return write_folder(path, self.manifest, self.stored_vectors, built)

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
        manifest = read_manifest(path)
        manifest.check_model(model_id, model_revision, dim)
        self = cls(manifest, read_vectors(path, manifest))
        for d, index in read_indexes(path, self._built_kind, len(self)).items():
            configure(index, manifest.config)
            self._indexes[d] = index
        for d in list(manifest.build_stats):
            if self._built_kind(d) != "flat" and d not in self._indexes:
                del manifest.build_stats[d]
        return self
