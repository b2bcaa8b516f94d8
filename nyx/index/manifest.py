"""What an index was built from: model, dimensions, index type, documents and corpus fingerprint.

The manifest is saved as ``manifest.json`` beside the vectors. It is the single source of truth for
compatibility checks: a query embedding, a new shard or a loaded index whose model or dimension differs
from the manifest is refused with :class:`IndexMismatchError` instead of silently returning wrong
neighbours.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from datetime import datetime, timezone
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nyx.data.records import Record, is_data_url
from nyx.utils.io import file_sha256

IndexType = Literal["flat", "hnsw", "ivf"]
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


class IndexMismatchError(ValueError):
    """Embeddings, queries or manifests that do not belong to the same model and dimension."""


def nyx_version() -> str:
    """The installed Nyx version (``created_with`` in manifests)."""
    try:
        return importlib.metadata.version("nyx")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class IndexConfig(BaseModel):
    """How to build the FAISS index: exact ``flat`` (default), or approximate ``hnsw`` / ``ivf`` for
    large corpora. All use inner product over L2-normalised vectors (= cosine similarity)."""

    model_config = ConfigDict(extra="forbid")

    index_type: IndexType = "flat"
    hnsw_m: int = Field(32, ge=4, description="HNSW: neighbours per node")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW: candidate list size while building")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW: candidate list size while searching")
    ivf_nlist: int = Field(1024, ge=1, description="IVF: number of clusters (capped at n/39 for small corpora)")
    ivf_nprobe: int = Field(32, ge=1, description="IVF: clusters visited per query")
    search_batch_size: int = Field(1024, ge=1, description="queries per FAISS call")


class IndexManifest(BaseModel):
    """Everything needed to check that a query or a shard belongs to this index."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format: int = MANIFEST_FORMAT
    model_id: str = Field(description="encoder identity (hub id, folder name, or mlflow model URI)")
    model_revision: str | None = Field(None, description="hub revision / commit, or a weights hash")
    mlflow_model_version: str | None = None
    dim: int = Field(ge=1, description="dimension of the stored vectors")
    full_dim: int = Field(ge=1, description="the encoder's full embedding dimension")
    mrl_dims: list[int] = Field(default_factory=list, description="Matryoshka prefixes the encoder was trained for")
    config: IndexConfig = Field(default_factory=IndexConfig)
    doc_ids: list[str] = Field(default_factory=list)
    corpus_hash: str | None = None
    created_with: str = Field(default_factory=nyx_version)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @model_validator(mode="after")
    def _check_dims(self) -> "IndexManifest":
        if self.dim > self.full_dim:
            raise ValueError(f"index dim {self.dim} exceeds the model's full dim {self.full_dim}")
        self.mrl_dims = sorted({d for d in self.mrl_dims if d <= self.dim} | {self.dim}, reverse=True)
        return self

    @property
    def index_type(self) -> IndexType:
        return self.config.index_type

    def check_compatible(self, other: "IndexManifest") -> None:
        """Raise :class:`IndexMismatchError` unless ``other`` holds vectors of the same model and dimension."""
        self.check_model(other.model_id, other.model_revision, other.dim)

    def check_model(self, model_id: str | None, revision: str | None = None, dim: int | None = None) -> None:
        """Raise :class:`IndexMismatchError` if the given model identity or dimension differs from this index."""
        if model_id is not None and model_id != self.model_id:
            raise IndexMismatchError(
                f"embeddings come from model {model_id!r} but the index was built with {self.model_id!r}; "
                "re-index the corpus with one model"
            )
        if revision is not None and self.model_revision is not None and revision != self.model_revision:
            raise IndexMismatchError(
                f"model {model_id!r} revision {revision!r} differs from the index's revision "
                f"{self.model_revision!r}; re-index the corpus"
            )
        if dim is not None and dim != self.dim:
            raise IndexMismatchError(
                f"embeddings have dimension {dim} but the index stores dimension {self.dim}"
            )


class CorpusHasher:
    """A running SHA-256 fingerprint of a corpus: ids, text and image bytes, in order.

    Images are hashed by content (not path), so the same corpus copied elsewhere has the same hash.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, records: Iterable[Record]) -> "CorpusHasher":
        for r in records:
            self._h.update(b"\x1erecord\x1f" + r.id.encode())
            for p in r.content:
                if p.type == "text":
                    self._h.update(b"\x1ftext\x1f" + (p.text or "").encode())
                else:
                    ref = p.image or ""
                    try:
                        digest = ref if is_data_url(ref) else file_sha256(ref)
                    except OSError:  # unreadable: the path still identifies it
                        digest = "missing:" + ref
                    self._h.update(b"\x1fimage\x1f" + digest.encode())
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def corpus_hash(records: Iterable[Record]) -> str:
    """The SHA-256 fingerprint of ``records`` (see :class:`CorpusHasher`)."""
    return CorpusHasher().update(records).hexdigest()
