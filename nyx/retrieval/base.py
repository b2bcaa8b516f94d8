"""The retriever interface, the registry of implementations, and loading any saved retriever.

A retriever indexes a corpus of :class:`~nyx.data.records.Record` and answers queries with a TREC-run-like
``{query_id: {doc_id: score}}``. Every saved retriever folder holds ``retriever.json`` naming its class,
so :func:`load_retriever` can open a folder without being told what is inside.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from nyx.data.beir import Run  # {query_id: {doc_id: score}}, higher = better
from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.index.manifest import nyx_version
from nyx.utils.io import read_json, write_json

RETRIEVER_MANIFEST = "retriever.json"

_REGISTRY: dict[str, type[Retriever]] = {}
R = TypeVar("R", bound=type["Retriever"])


class RetrieverManifest(BaseModel):
    """``retriever.json``: which class saved the folder, with what settings, over which corpus."""

    model_config = ConfigDict(extra="forbid")

    retriever: str
    config: dict[str, Any] = Field(default_factory=dict)
    num_docs: int = 0
    corpus_hash: str | None = None
    created_with: str = Field(default_factory=nyx_version)


def register_retriever(cls: R) -> R:
    """Class decorator: make a :class:`Retriever` subclass available by its ``name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"retriever name {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def available_retrievers() -> list[str]:
    return sorted(_REGISTRY)


def retriever_class(name: str) -> type[Retriever]:
    """The registered class called ``name`` (``ValueError`` listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown retriever {name!r}; available: {', '.join(available_retrievers())}") from None


def read_retriever_manifest(path: str | os.PathLike) -> RetrieverManifest:
    path = Path(path)
    mpath = path / RETRIEVER_MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{path} is not a saved retriever (no {RETRIEVER_MANIFEST})")
    return RetrieverManifest.model_validate(read_json(mpath))


def load_retriever(path: str | os.PathLike) -> Retriever:
    """Open any saved retriever folder; its ``retriever.json`` picks the class."""
    manifest = read_retriever_manifest(path)
    return retriever_class(manifest.retriever).load(path)


def unique_records(records: Iterable[Record], rejects: RejectLog | None) -> Iterator[Record]:
    """``records`` without repeated ids: the first occurrence wins, later ones are rejected (or raise)."""
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            err = RecordError("duplicate id (first occurrence kept)", record_id=r.id)
            if rejects is None:
                raise err
            rejects.add(err)
            continue
        seen.add(r.id)
        yield r


class Retriever(ABC):
    """Index a corpus once, then search it with batches of queries.

    Subclasses set ``name``, are decorated with :func:`register_retriever`, and implement the abstract
    methods. ``dims`` lists the embedding dimensions :meth:`search` accepts (empty for sparse retrievers).
    """

    name: ClassVar[str]

    @abstractmethod
    def index(self, corpus: Iterable[Record], *, rejects: RejectLog | None = None) -> int:
        """Index ``corpus`` (replacing any earlier index); return the number of documents indexed.

        Records that cannot be used are added to ``rejects`` and skipped (raise when it is None).
        """

    @abstractmethod
    def search(self, queries: Sequence[Record], k: int = 10, dim: int | None = None) -> Run:
        """The top-``k`` documents for each query, at embedding dimension ``dim`` where that applies."""

    @abstractmethod
    def save(self, path: str | os.PathLike) -> Path:
        """Write everything needed by :meth:`load` into the folder ``path`` (atomically)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | os.PathLike) -> Retriever:
        """Re-open a folder written by :meth:`save`."""

    @property
    @abstractmethod
    def num_docs(self) -> int:
        """Documents in the index (0 before :meth:`index`)."""

    @property
    def dims(self) -> list[int]:
        """Embedding dimensions accepted by ``search(dim=...)``, largest first; empty if none apply."""
        return []

    def load_models(self) -> None:  # noqa: B027
        """Load any model now (otherwise it loads on first use), e.g. to time searches without start-up."""

    def check_dim(self, dim: int | None) -> None:
        """Raise ``ValueError`` if ``dim`` cannot be used with this retriever."""
        if dim is not None and not self.dims:
            raise ValueError(f"the {self.name} retriever has no embedding dimension; do not pass dim={dim}")

    def describe(self) -> dict[str, Any]:
        """A short JSON-able description (for reports and CLI output)."""
        return {"retriever": self.name, "num_docs": self.num_docs, "dims": self.dims}

    def _write_manifest(self, folder: Path, config: dict[str, Any], corpus_hash: str | None) -> None:
        manifest = RetrieverManifest(
            retriever=self.name, config=config, num_docs=self.num_docs, corpus_hash=corpus_hash
        )
        write_json(manifest.model_dump(mode="json"), folder / RETRIEVER_MANIFEST)

    def _require_index(self) -> None:
        if self.num_docs == 0:
            raise RuntimeError(f"the {self.name} retriever has no documents: call index() or load() first")
