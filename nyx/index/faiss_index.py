"""A FAISS inner-product index over L2-normalised embeddings, searchable at any Matryoshka prefix.

The full-dimension vectors are kept (``vectors.npy``); a FAISS index per requested dimension is derived
from their re-normalised prefixes on first use and cached. Documents arrive shard by shard through
:meth:`EmbeddingIndex.add`, and every shard, query and loaded folder is checked against the
:class:`~nyx.index.manifest.IndexManifest` (model, revision, dimension).

Folder layout written by :meth:`EmbeddingIndex.save`::

    manifest.json            model, dims, index type, document ids, corpus hash, created-with version
    vectors.npy              float32 [n, dim], L2-normalised, row i = manifest.doc_ids[i]
    faiss-hnsw-256.index     approximate indexes already built (flat ones are rebuilt on load: it is a copy)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np

from nyx.index.manifest import MANIFEST_NAME, IndexConfig, IndexManifest, IndexMismatchError
from nyx.utils.io import atomic_dir, read_json, write_json

VECTORS_NAME = "vectors.npy"


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
            self._chunks.append(np.ascontiguousarray(vectors, dtype=np.float32))
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
    ) -> "EmbeddingIndex":
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
    def vectors(self) -> np.ndarray:
        """All stored vectors, float32 [n, dim] (consolidated into one array on first access)."""
        if len(self._chunks) != 1:
            joined = np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dim), np.float32)
            self._chunks = [joined]
        return self._chunks[0]

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
        vecs = normalize_rows(embeddings)
        self._chunks.append(vecs)
        self.manifest.doc_ids.extend(ids)
        self._id_set.update(ids)
        for d, index in list(self._indexes.items()):
            if self.manifest.index_type == "ivf":
                del self._indexes[d]  # clusters were trained on the old data: rebuild lazily
            else:
                index.add(vecs if d == self.dim else prefix(vecs, d))

    def merge_from(self, other: "EmbeddingIndex") -> None:
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

    def faiss_index(self, dim: int | None = None) -> faiss.Index:
        """The FAISS index over the ``dim``-prefix of every vector, built on first use."""
        dim = self.check_dim(dim)
        if dim not in self._indexes:
            self._indexes[dim] = self._build(dim)
        return self._indexes[dim]

    def build(self, dims: Sequence[int]) -> None:
        """Build the indexes for ``dims`` now (e.g. before saving HNSW indexes)."""
        for d in dims:
            self.faiss_index(d)

    def _build(self, dim: int) -> faiss.Index:
        cfg = self.manifest.config
        vecs = self.vectors if dim == self.dim else prefix(self.vectors, dim)
        if cfg.index_type == "flat":
            index = faiss.IndexFlatIP(dim)
        elif cfg.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.hnsw_ef_construction
        elif cfg.index_type == "ivf":
            nlist = max(1, min(cfg.ivf_nlist, len(vecs) // 39))  # FAISS wants >= 39 points per centroid
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            if len(vecs):
                index.train(vecs)
        else:  # pragma: no cover - pydantic rejects other values
            raise ValueError(f"unknown index type {cfg.index_type!r}")
        if len(vecs) and (cfg.index_type != "ivf" or index.is_trained):
            index.add(vecs)
        self._configure(index)
        return index

    def _configure(self, index: faiss.Index) -> None:
        cfg = self.manifest.config
        if cfg.index_type == "hnsw":
            index.hnsw.efSearch = cfg.hnsw_ef_search
        elif cfg.index_type == "ivf":
            index.nprobe = cfg.ivf_nprobe

    # ------------------------------------------------------------------ search
    def prepare_queries(self, query_emb: np.ndarray, dim: int | None = None, *, model_id: str | None = None) -> tuple[np.ndarray, int]:
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
            s, idx = index.search(q[start : start + bs], k)
            for row_s, row_i in zip(s, idx):
                keep = row_i >= 0  # approximate indexes pad with -1 when they find fewer than k
                ids.append([doc_ids[i] for i in row_i[keep]])
                scores.append(row_s[keep])
        return SearchResult(ids, scores, dim)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder atomically (a crash leaves any previous version intact)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            np.save(tmp / VECTORS_NAME, self.vectors)
            if self.manifest.index_type != "flat":
                for d, index in self._indexes.items():
                    faiss.write_index(index, str(tmp / f"faiss-{self.manifest.index_type}-{d}.index"))
            write_json(self.manifest.model_dump(mode="json"), tmp / MANIFEST_NAME)
        return path

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
    ) -> "EmbeddingIndex":
        """Load a saved folder; if ``model_id``/``model_revision``/``dim`` are given they must match it."""
        path = Path(path)
        manifest = cls.read_manifest(path)
        manifest.check_model(model_id, model_revision, dim)
        vectors = np.load(path / VECTORS_NAME)
        self = cls(manifest, vectors)
        if manifest.index_type != "flat":
            for f in sorted(path.glob(f"faiss-{manifest.index_type}-*.index")):
                d = int(f.stem.rsplit("-", 1)[1])
                index = faiss.read_index(str(f))
                if index.ntotal == len(self) and index.d == d:
                    self._configure(index)
                    self._indexes[d] = index
        return self
