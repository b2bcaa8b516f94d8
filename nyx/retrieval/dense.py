"""Dense retrieval: any encoder + the FAISS :class:`~nyx.index.EmbeddingIndex`.

:class:`DenseRetriever` holds everything the MiniLM baseline and Nyx share (sharded encoding, bad-record
isolation, Matryoshka search, save/load with model checks); subclasses only say how to build and
describe their encoder.

Folder layout::

    retriever.json    class name, encoder settings, corpus hash (see nyx.retrieval.base)
    index/            the EmbeddingIndex folder (manifest.json, vectors.npy, ...)
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.index import CorpusHasher, EmbeddingIndex, IndexConfig, IndexMismatchError
from nyx.retrieval.base import Retriever, Run, chunked, read_retriever_manifest, unique_records
from nyx.utils.io import atomic_dir

INDEX_DIR = "index"

# Errors that mean "this record cannot be encoded" (missing or undecodable image, bad content), as opposed to
# bugs or resource exhaustion, which must surface.
RECORD_FAILURES = (RecordError, OSError, ValueError)


@runtime_checkable
class Encoder(Protocol):
    """What a dense retriever needs from an encoder (NyxEncoder and the MiniLM wrapper provide it)."""

    model_id: str
    dim: int

    def encode_queries(self, records: Sequence[Record], batch_size: int = ...) -> np.ndarray: ...

    def encode_documents(self, records: Sequence[Record], batch_size: int = ...) -> np.ndarray: ...


class DenseConfig(BaseModel):
    """Settings shared by dense retrievers (saved in ``retriever.json``)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1, description="records per encoder forward pass")
    shard_size: int = Field(1024, ge=1, description="records encoded and added to the index per shard")
    index_dim: int | None = Field(None, ge=1, description="store only this Matryoshka prefix (None = full)")
    index: IndexConfig = Field(default_factory=IndexConfig)


class DenseRetriever(Retriever):
    """Encode documents shard by shard into an :class:`EmbeddingIndex`; encode queries and search it."""

    #: Matryoshka prefixes the encoder was trained for (largest first); the full dim is always allowed.
    default_mrl_dims: tuple[int, ...] = ()

    def __init__(self, config: DenseConfig | None = None, encoder: Encoder | None = None):
        self.config = config or DenseConfig()
        self._encoder = encoder
        self._index: EmbeddingIndex | None = None

    # ------------------------------------------------------------------ encoder
    @abstractmethod
    def _build_encoder(self) -> Encoder:
        """Construct the encoder from the retriever's settings (called lazily, once)."""

    @abstractmethod
    def encoder_config(self) -> dict[str, Any]:
        """The settings :meth:`_build_encoder` needs, saved in ``retriever.json``."""

    @classmethod
    @abstractmethod
    def _from_saved_config(cls, config: dict[str, Any]) -> "DenseRetriever":
        """A new, empty retriever from the ``config`` saved by :meth:`save`."""

    @property
    def encoder(self) -> Encoder:
        """The encoder, built on first use; for a loaded retriever it must be the model of the index
        (:class:`IndexMismatchError` otherwise)."""
        if self._encoder is None:
            encoder = self._build_encoder()
            if self._index is not None:
                self._index.manifest.check_model(*self.model_identity(encoder))
            self._encoder = encoder
        return self._encoder

    def load_models(self) -> None:
        self.encoder  # noqa: B018 - builds (and checks) the encoder

    def model_identity(self, encoder: Encoder) -> tuple[str, str | None]:
        """``(model id, revision)`` recorded in the index manifest and checked when the index is reopened."""
        revision = getattr(encoder, "model_revision", None) or getattr(encoder, "revision", None)
        return encoder.model_id, revision

    def mlflow_model_version(self) -> str | None:
        """The MLflow registry version of the model, when it came from there (recorded in the manifest)."""
        return getattr(self.encoder, "mlflow_model_version", None)

    def mrl_dims(self) -> list[int]:
        dims = getattr(self.encoder, "mrl_dims", None) or self.default_mrl_dims
        return [int(d) for d in dims]

    # ------------------------------------------------------------------ index
    @property
    def embedding_index(self) -> EmbeddingIndex:
        if self._index is None:
            raise RuntimeError(f"the {self.name} retriever has no index: call index() or load() first")
        return self._index

    @property
    def num_docs(self) -> int:
        return 0 if self._index is None else len(self._index)

    @property
    def dims(self) -> list[int]:
        return [] if self._index is None else list(self._index.manifest.mrl_dims)

    def index(self, corpus: Iterable[Record], *, rejects: RejectLog | None = None, progress: bool = False) -> int:
        enc = self.encoder
        dim = self.config.index_dim or enc.dim
        if dim > enc.dim:
            raise ValueError(f"index_dim {dim} exceeds the encoder's dimension {enc.dim}")
        model_id, revision = self.model_identity(enc)
        index = EmbeddingIndex.create(
            model_id=model_id,
            model_revision=revision,
            mlflow_model_version=self.mlflow_model_version(),
            dim=dim,
            full_dim=enc.dim,
            mrl_dims=self.mrl_dims(),
            config=self.config.index,
        )
        hasher = CorpusHasher()
        bar = _progress(progress, f"indexing ({self.name})")
        for shard in chunked(unique_records(corpus, rejects), self.config.shard_size):
            ids, emb = self._encode_isolating_failures(shard, rejects)
            if ids:
                index.add(ids, emb[:, :dim] if dim < emb.shape[1] else emb, model_id=model_id)
                kept = set(ids)
                hasher.update(r for r in shard if r.id in kept)
            if bar is not None:
                bar.update(len(shard))
        if bar is not None:
            bar.close()
        index.manifest.corpus_hash = hasher.hexdigest()
        self._index = index
        return len(index)

    def _encode_isolating_failures(
        self, records: list[Record], rejects: RejectLog | None, is_query: bool = False
    ) -> tuple[list[str], np.ndarray]:
        """Encode records in one encoder call (so the encoder can sort them by length); if that fails,
        bisect until the failing records are isolated and rejected, keeping every good neighbour."""
        enc = self.encoder
        encode = enc.encode_queries if is_query else enc.encode_documents
        ids: list[str] = []
        parts: list[np.ndarray] = []
        pending = [records]
        while pending:
            group = pending.pop()
            try:
                parts.append(np.asarray(encode(group, batch_size=self.config.batch_size), np.float32))
                ids.extend(r.id for r in group)
            except RECORD_FAILURES as e:
                if rejects is None:
                    raise
                if len(group) > 1:
                    mid = len(group) // 2
                    pending += [group[mid:], group[:mid]]  # pop() takes the first half next: order is kept
                    continue
                err = e if isinstance(e, RecordError) else RecordError(f"cannot encode: {e}")
                err.record_id = err.record_id or group[0].id
                rejects.add(err)
        emb = np.concatenate(parts) if parts else np.zeros((0, enc.dim), np.float32)
        return ids, emb

    # ------------------------------------------------------------------ search
    def embed_queries(
        self, queries: Sequence[Record], rejects: RejectLog | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(query ids, full-dimension embeddings)`` in batched encoder calls. Queries that cannot be
        encoded go to ``rejects`` and are left out (they raise when ``rejects`` is None)."""
        if not queries:
            return [], np.zeros((0, self.encoder.dim), np.float32)
        return self._encode_isolating_failures(list(queries), rejects, is_query=True)

    def search_embeddings(
        self, query_ids: Sequence[str], query_emb: np.ndarray, k: int = 10, dim: int | None = None
    ) -> Run:
        """Search with precomputed query embeddings (reused across Matryoshka dims by evaluations)."""
        self._require_index()
        result = self.embedding_index.search(query_emb, k=k, dim=dim)
        return {
            qid: {d: float(s) for d, s in zip(ids, scores)}
            for qid, (ids, scores) in zip(query_ids, result)
        }

    def search(self, queries: Sequence[Record], k: int = 10, dim: int | None = None) -> Run:
        self._require_index()
        self.embedding_index.check_dim(dim)  # fail before spending time on the encoder
        return self.search_embeddings(*self.embed_queries(queries), k=k, dim=dim)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        index = self.embedding_index
        path = Path(path)
        with atomic_dir(path) as tmp:
            index.save(tmp / INDEX_DIR)
            config = {"encoder": self.encoder_config(), "dense": self.config.model_dump(mode="json")}
            self._write_manifest(tmp, config, index.manifest.corpus_hash)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DenseRetriever":
        """Re-open a saved folder. The encoder is built lazily and checked against the index's model
        (id, revision) when first needed."""
        path = Path(path)
        manifest = read_retriever_manifest(path)
        if manifest.retriever != cls.name:
            raise ValueError(f"{path} holds a {manifest.retriever!r} retriever, not {cls.name!r}")
        self = cls._from_saved_config(manifest.config.get("encoder", {}))
        self.config = DenseConfig.model_validate(manifest.config.get("dense", {}))
        self._index = EmbeddingIndex.load(path / INDEX_DIR)
        return self

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "encoder": self.encoder_config()}
        if self._index is not None:
            m = self._index.manifest
            out.update(model_id=m.model_id, model_revision=m.model_revision, dim=m.dim, full_dim=m.full_dim)
        return out


def _progress(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit="doc")


__all__ = ["DenseConfig", "DenseRetriever", "Encoder", "IndexMismatchError", "RECORD_FAILURES"]
