"""A loaded model, ready to serve: :class:`LoadedModel` (retriever with its index, optionally its corpus documents)
and how one is opened, from a folder written by ``nyx index`` or from a registry version (its
:data:`~nyx.registry.INDEX_DIR_TAG` and :data:`~nyx.registry.CORPUS_PATH_TAG` tags)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx.data.records import Record
from nyx.data.rejects import RejectLog
from nyx.registry import CORPUS_PATH_TAG, INDEX_DIR_TAG  # the version's corpus index and corpus (stage{1,2}_index)
from nyx.serving.errors import ApiError, ServeError
from nyx.serving.source import Source

log = logging.getLogger("nyx.serving.server")  # one logger name for the whole service (what operators filter on)

#: Tags (on the model version or its training run) that identify the data version: DVC md5s of the inputs.
DATA_VERSION_TAG_PREFIX = "dvc.md5."


def _index_doc_ids(retriever) -> list[str]:
    from nyx.retrieval import DenseRetriever

    if isinstance(retriever, DenseRetriever):
        return list(retriever.embedding_index.doc_ids)
    return [str(i) for i in getattr(retriever, "_doc_ids", [])]


def load_documents(corpus: str | os.PathLike, retriever, folder: Path) -> tuple[dict[str, Record], Path]:
    """The corpus records of the index's documents, by id, and the folder their image paths are relative to.

    Refused (:class:`ServeError`) when the corpus lacks documents of the index or is not the corpus the index was
    built from (its fingerprint differs from the one in ``retriever.json``)."""
    from nyx.data.beir import CORPUS_FILE
    from nyx.data.records import iter_jsonl
    from nyx.index import corpus_hash
    from nyx.retrieval import read_retriever_manifest

    path = Path(corpus)
    if path.is_dir():
        path = path / CORPUS_FILE
    if not path.is_file():
        raise ServeError(f"corpus not found: {path}")
    wanted = set(_index_doc_ids(retriever))
    docs: dict[str, Record] = {}
    for r in iter_jsonl(path, RejectLog(stage="serve-corpus")):  # bad lines were rejected at indexing too
        if r.id in wanted and r.id not in docs:
            docs[r.id] = r
    missing = wanted - docs.keys()
    if missing:
        raise ServeError(
            f"the corpus {path} lacks {len(missing)} document(s) of the index {folder} "
            f"(e.g. {sorted(missing)[:3]}): it is not the corpus the index was built from"
        )
    expected = read_retriever_manifest(folder).corpus_hash
    if expected:
        got = corpus_hash(docs[i] for i in _index_doc_ids(retriever))
        if got != expected:
            raise ServeError(
                f"the corpus {path} differs from the corpus the index {folder} was built from "
                f"(fingerprint {got[:12]} != {expected[:12]}): its documents would not match the hits"
            )
    return docs, path.parent


@dataclass
class LoadedModel:
    """One servable model: the retriever with its index, where it came from, and optionally its documents."""

    retriever: Any
    folder: Path
    source: str
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None
    documents: dict[str, Record] | None = None
    documents_dir: Path | None = None
    corpus_path: str | None = None
    #: why documents are not available although a corpus was named (served without them)
    documents_error: str | None = None
    data_version: dict[str, str] | None = None
    corpus_hash: str | None = None
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.corpus_hash is None:
            from nyx.retrieval import read_retriever_manifest

            self.corpus_hash = read_retriever_manifest(self.folder).corpus_hash

    @property
    def dense(self) -> bool:
        from nyx.retrieval import DenseRetriever

        return isinstance(self.retriever, DenseRetriever)

    def search_dim(self, dim: int | None) -> int | None:
        """The dimension a search at ``dim`` uses (``None`` for BM25); :class:`ApiError` naming ``dim`` otherwise."""
        if not self.dense:
            if dim is not None:
                raise ApiError(
                    422, "dim", f"the {self.retriever.name} retriever has no embedding dimension; leave 'dim' out"
                )
            return None
        from nyx.index import IndexMismatchError

        try:
            return self.retriever.embedding_index.check_dim(dim)
        except IndexMismatchError as e:
            raise ApiError(422, "dim", str(e)) from None

    def document(self, doc_id: str) -> dict[str, Any] | None:
        rec = (self.documents or {}).get(doc_id)
        return rec.to_json(self.documents_dir) if rec is not None else None

    def info(self) -> dict[str, Any]:
        r = self.retriever
        out: dict[str, Any] = {
            "source": self.source,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "alias": self.alias,
            "retriever": r.name,
            "index_dir": str(self.folder),
            "index_size": r.num_docs,
            "dims": r.dims,
            "corpus_hash": self.corpus_hash,
            "data_version": self.data_version,
            "documents": self.documents is not None,
            "corpus_path": self.corpus_path,
            "documents_error": self.documents_error,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "load_seconds": round(self.load_seconds, 3),
        }
        if self.dense:
            m = r.embedding_index.manifest
            out.update(
                model_id=m.model_id,
                model_revision=m.model_revision,
                index_dim=m.dim,
                full_dim=m.full_dim,
                index_type=m.index_type,
                index_model_version=m.mlflow_model_version,
                index_created_at=m.created_at,
            )
        else:
            out.update(model_id=r.name, index_dim=None, full_dim=None)
        return out

    def warm_up(self) -> None:
        """Load the model and build the default FAISS index now, not on the first request."""
        r = self.retriever
        r.load_models()
        if self.dense:
            r.embedding_index.faiss_index()
        r.search([Record.from_text("warm-up", "warm-up query")], k=1)


def _open_folder(folder: Path, what: str):
    from nyx.retrieval import RETRIEVER_MANIFEST, load_retriever

    if not (folder / RETRIEVER_MANIFEST).is_file():
        raise ServeError(f"{what}: {folder} is not a saved retriever folder (no {RETRIEVER_MANIFEST})")
    try:
        return load_retriever(folder)
    except (OSError, ValueError) as e:
        raise ServeError(f"{what}: cannot open the index folder {folder}: {e}") from None


def load_folder(source: Source, corpus: str | os.PathLike | None = None, warm_up: bool = True) -> LoadedModel:
    """Open a retriever folder written by ``nyx index``."""
    t0 = time.perf_counter()
    assert source.folder is not None
    retriever = _open_folder(source.folder, source.raw)
    version = None
    if hasattr(retriever, "embedding_index"):
        version = retriever.embedding_index.manifest.mlflow_model_version
    model = LoadedModel(retriever=retriever, folder=source.folder, source=source.raw, model_version=version)
    if corpus is not None:
        model.documents, model.documents_dir = load_documents(corpus, retriever, source.folder)
        model.corpus_path = os.fspath(corpus)
    if warm_up:
        model.warm_up()
    model.load_seconds = time.perf_counter() - t0
    return model


def registry_client(tracking_uri: str | None = None):
    from nyx.registry import client

    return client(tracking_uri)


def resolve_version(client, source: Source) -> str:
    """The version an alias points at now (or the pinned version)."""
    if source.version is not None:
        return source.version
    try:
        return str(client.get_model_version_by_alias(source.name, source.alias).version)
    except Exception as e:  # noqa: BLE001 - MlflowException, connection errors: all mean "cannot resolve"
        raise ServeError(f"cannot resolve {source.raw}: {e}") from None


def _data_version(client, mv) -> dict[str, str] | None:
    tags = dict(mv.tags or {})
    run_id = mv.run_id or tags.get("nyx.mlflow_run_id")
    if run_id:
        try:
            tags = {**client.get_run(run_id).data.tags, **tags}
        except Exception:  # noqa: BLE001 - the run is optional metadata
            pass
    found = {k[len(DATA_VERSION_TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(DATA_VERSION_TAG_PREFIX)}
    return found or None


def load_registry_version(
    client,
    source: Source,
    version: str,
    corpus: str | os.PathLike | None = None,
    warm_up: bool = True,
    strict_documents: bool = True,
) -> LoadedModel:
    """Open the corpus index of ``<name>/<version>`` (its :data:`INDEX_DIR_TAG`), checked against that version.

    Documents come from the version's :data:`CORPUS_PATH_TAG`, else from ``corpus``. A corpus that does not match the
    index is an error for an explicit ``corpus`` with ``strict_documents``; otherwise (the tag's corpus, or a new
    version swapped in) the version is served without documents and :attr:`LoadedModel.documents_error` says why."""
    t0 = time.perf_counter()
    what = f"model version {source.name}/{version}"
    try:
        mv = client.get_model_version(source.name, version)
    except Exception as e:  # noqa: BLE001
        raise ServeError(f"{what}: not found in the registry: {e}") from None
    tags = dict(mv.tags or {})
    index_dir = tags.get(INDEX_DIR_TAG)
    if not index_dir:
        raise ServeError(
            f"{what} has no '{INDEX_DIR_TAG}' tag: no corpus index is recorded for it "
            f"(index its corpus with `nyx index` and tag the version with the folder)"
        )
    folder = Path(index_dir)
    retriever = _open_folder(folder, f"{what} (tag {INDEX_DIR_TAG})")
    if hasattr(retriever, "embedding_index"):
        built_for = retriever.embedding_index.manifest.mlflow_model_version
        if built_for is not None and str(built_for) != str(version):
            raise ServeError(
                f"{what}: its index folder {folder} was built for version {built_for} (index manifest "
                f"mlflow_model_version), not {version}; re-index the corpus with version {version} or "
                f"fix the '{INDEX_DIR_TAG}' tag"
            )
    model = LoadedModel(
        retriever=retriever,
        folder=folder,
        source=source.raw,
        model_name=source.name,
        model_version=str(version),
        alias=source.alias,
        data_version=_data_version(client, mv),
    )
    tagged = tags.get(CORPUS_PATH_TAG)
    corpus_path = tagged or (os.fspath(corpus) if corpus is not None else None)
    if corpus_path:
        model.corpus_path = corpus_path
        try:
            model.documents, model.documents_dir = load_documents(corpus_path, retriever, folder)
        except (ServeError, OSError, ValueError) as e:
            if strict_documents and not tagged:
                raise ServeError(f"{what}: {e}") from None
            model.documents_error = f"{what}: {e}"
            log.warning("serving %s without documents: %s", what, e)
    if warm_up:
        model.warm_up()
    model.load_seconds = time.perf_counter() - t0
    return model
