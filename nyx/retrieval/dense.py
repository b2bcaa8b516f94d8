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
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.index import CorpusHasher, EmbeddingIndex, IndexConfig, IndexMismatchError
from nyx.retrieval.base import Retriever, Run, read_retriever_manifest, unique_records
from nyx.utils.batches import chunked
from nyx.utils.io import atomic_dir

INDEX_DIR = "index"

if TYPE_CHECKING:
    from nyx.index.store import EmbeddingStore
    from nyx.index.store_lookup import EncodeStats

# Errors that mean "this record cannot be encoded" (missing or undecodable image, bad content), as opposed to
# bugs or resource exhaustion, which must surface.
RECORD_FAILURES = (RecordError, OSError, ValueError)

#: Documents encoded in this process, per ``(model id, revision)``: what an audit of "each model encodes the corpus
#: once" reads (``tests/e2e/test_end_to_end.py`` compares it before and after a whole-graph run). Queries are not
#: counted.
DOCUMENTS_ENCODED: Counter[tuple[str, str | None]] = Counter()


@runtime_checkable
class Encoder(Protocol):
    """What a dense retriever needs from an encoder (NyxEncoder and the MiniLM wrapper provide it)."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_queries(self, records: Sequence[Record], *, batch_size: int = ...) -> np.ndarray: ...

    def encode_documents(self, records: Sequence[Record], *, batch_size: int = ...) -> np.ndarray: ...


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
        self.last_encode: EncodeStats | None = None  # of the last index() / embed_into() call

    # ------------------------------------------------------------------ encoder
    @abstractmethod
    def _build_encoder(self) -> Encoder:
        """Construct the encoder from the retriever's settings (called lazily, once)."""

    @abstractmethod
    def encoder_config(self) -> dict[str, Any]:
        """The settings :meth:`_build_encoder` needs, saved in ``retriever.json``."""

    @classmethod
    @abstractmethod
    def _from_saved_config(cls, config: dict[str, Any]) -> DenseRetriever:
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

    def embedding_identity(self) -> dict[str, Any]:
        """Everything that changes a document's embedding, for :class:`~nyx.index.store.EmbeddingStore` keys: the
        retriever kind, the encoder's identity and input settings (``info()`` where the encoder has one), the
        weights of local model and adapter folders, dtype and device type."""
        from nyx.index.store import folder_weights_id

        enc = self.encoder
        model_id, revision = self.model_identity(enc)
        info_of = getattr(enc, "info", None)
        info = dict(info_of()) if callable(info_of) else {}
        ident: dict[str, Any] = {
            "retriever": self.name,
            "model_id": model_id,
            "revision": revision,
            "dim": enc.dim,
            "encoder": info,
        }
        for k, folder in (("model", info.get("model_id", model_id)), ("adapter", info.get("adapter_path"))):
            if (w := folder_weights_id(folder)) is not None:
                ident[f"{k}_weights"] = w
        module = getattr(enc, "module", None)
        if module is not None:
            p = next(module.parameters(), None)
            if p is not None:
                ident.update(dtype=str(p.dtype), device=p.device.type)
        return ident

    def index(
        self,
        corpus: Iterable[Record],
        *,
        rejects: RejectLog | None = None,
        progress: bool | Callable[[str], None] = False,
        store: EmbeddingStore | None = None,
        source: str = "corpus",
    ) -> int:
        """Encode ``corpus`` shard by shard into a new index. With a ``store``, embeddings this model already
        computed for the same records are read from it and only the others are encoded (and added to it, one
        segment per shard, named after ``source``); :attr:`last_encode` tells how many were reused and encoded.
        ``progress``: ``True`` for a progress bar, or a function receiving progress lines (a step log)."""
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
        for shard, ids, emb in self._encode_corpus(corpus, rejects, store, source, True, progress, "indexing"):
            if ids:
                index.add(ids, emb[:, :dim] if dim < emb.shape[1] else emb, model_id=model_id)
                kept = set(ids)
                hasher.update(r for r in shard if r.id in kept)
        index.manifest.corpus_hash = hasher.hexdigest()
        assert self.last_encode is not None  # set by _encode_corpus
        index.manifest.inputs = dict(self.last_encode.inputs)
        self._index = index
        return len(index)

    def embed_into(
        self,
        corpus: Iterable[Record],
        store: EmbeddingStore,
        *,
        source: str,
        rejects: RejectLog | None = None,
        progress: bool | Callable[[str], None] = False,
    ) -> EncodeStats:
        """Make sure ``store`` holds this model's embeddings of ``corpus`` (encoding only what it lacks, one segment
        per ``shard_size`` records named after ``source``), without building an index. Returns the counts."""
        for _ in self._encode_corpus(corpus, rejects, store, source, False, progress, "embedding"):
            pass
        assert self.last_encode is not None  # set by _encode_corpus
        return self.last_encode

    def _encode_corpus(
        self,
        corpus: Iterable[Record],
        rejects: RejectLog | None,
        store: EmbeddingStore | None,
        source: str,
        read: bool,
        progress: bool | Callable[[str], None],
        verb: str,
    ) -> Iterator[tuple[list[Record], list[str], np.ndarray]]:
        """``(shard, ids, embeddings)`` per ``shard_size`` records: from the store where it has them (when given),
        encoded otherwise; counts accumulate in :attr:`last_encode` and are reported to ``progress``."""
        from nyx.index.store_lookup import EncodeStats, encode_counted, lookup_or_encode

        stored = store.model(self.embedding_identity()) if store is not None else None
        stats = self.last_encode = EncodeStats()
        counters = self._input_stats_fn()
        reporter = _Progress(progress, f"{verb} ({self.name})")

        def encode(records: list[Record]) -> tuple[list[str], np.ndarray]:
            return self._encode_isolating_failures(records, rejects)

        for shard in chunked(unique_records(corpus, rejects), self.config.shard_size):
            if stored is None:
                ids, emb, s = encode_counted(shard, encode, counters)
            else:
                ids, emb, s = lookup_or_encode(stored, shard, encode, source=source, read=read, input_stats=counters)
            stats += s
            reporter.update(len(shard), stats)
            yield shard, ids, emb
        reporter.close(stats)

    def _input_stats_fn(self) -> Callable[[], dict[str, int]] | None:
        """The encoder's cumulative input counters (``NyxEncoder.input_stats``), if it keeps any."""
        enc = self.encoder
        return (lambda: enc.input_stats) if hasattr(enc, "input_stats") else None

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
        if not is_query:
            DOCUMENTS_ENCODED[self.model_identity(enc)] += len(ids)
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
        return {qid: {d: float(s) for d, s in zip(ids, scores)} for qid, (ids, scores) in zip(query_ids, result)}

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
    def load(cls, path: str | os.PathLike) -> DenseRetriever:
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


class _Progress:
    """A tqdm bar (``progress=True``), progress lines to a function at most every ``every`` seconds and at the end
    (``progress=context.log.info``), or nothing."""

    def __init__(self, progress: bool | Callable[[str], None], desc: str, every: float = 30.0):
        self.desc, self.every, self.done = desc, every, 0
        self.t0 = self.last = time.perf_counter()
        self.log = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc=desc, unit="doc")

    def update(self, n: int, stats: EncodeStats) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        now = time.perf_counter()
        if self.log is not None and now - self.last >= self.every:
            self.last = now
            self.log(self._line(stats))

    def _line(self, stats: EncodeStats) -> str:
        secs = time.perf_counter() - self.t0
        rate = stats.encoded / stats.seconds if stats.seconds else 0.0
        return (
            f"{self.desc}: {self.done} records in {secs:.0f} s ({stats.encoded} encoded at {rate:.1f}/s, "
            f"{stats.reused} from the store, {stats.rejected} rejected)"
        )

    def close(self, stats: EncodeStats) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log(self._line(stats))


__all__ = ["DenseConfig", "DenseRetriever", "Encoder", "IndexMismatchError", "RECORD_FAILURES"]
