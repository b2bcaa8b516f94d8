"""``nyx serve``: a search API over HTTP (FastAPI + uvicorn) for a model and its corpus index.

Source (what is served) is either

* a folder written by ``nyx index`` (any retriever: ``nyx``, ``minilm``, ``bm25``; the same API for all), or
* a registry URI, ``models:/<name>@<alias>`` (e.g. ``models:/nyx-retriever@champion``) or
  ``models:/<name>/<version>``. The model version's tag :data:`INDEX_DIR_TAG` (``nyx.index_dir``) names the saved
  retriever folder of that version's corpus index; the folder's index manifest must not name another version.

Endpoints: ``POST /search``, ``POST /embed``, ``GET /health``, OpenAPI docs at ``/docs`` (see docs/serving.md).

Concurrent ``/search`` and ``/embed`` requests are batched (:class:`~nyx.serving.batching.MicroBatcher`): one
encoder call per batch in a worker thread; a record that cannot be encoded fails its own request only (the dense
retriever's bisecting ``_encode_isolating_failures``). For an alias source a background task polls the alias and,
when it moves, loads the new version's model and index beside the old one and swaps them in one assignment:
requests already running finish on the model they started with, and a version that fails to load is logged while
the old one keeps serving.

Security defaults: the CLI binds 127.0.0.1; request bodies, decoded image bytes and image pixels are capped; with
the environment variable ``NYX_API_KEY`` set every endpoint but ``/health`` needs ``Authorization: Bearer <key>``;
query images must be ``data:`` URLs (the server never opens a path a client names).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import os
import re
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from nyx.data.records import Record, is_data_url, record_from_json
from nyx.data.rejects import RecordError, RejectLog
from nyx.registry import CORPUS_PATH_TAG, INDEX_DIR_TAG  # the version's corpus index and corpus (stage{1,2}_index)
from nyx.serving.batching import BatcherClosedError, MicroBatcher

log = logging.getLogger(__name__)

#: Environment variable holding the API key (never a command-line flag: it would land in shell history and logs).
API_KEY_ENV = "NYX_API_KEY"
REGISTRY_PREFIX = "models:/"
#: Tags (on the model version or its training run) that identify the data version: DVC md5s of the inputs.
DATA_VERSION_TAG_PREFIX = "dvc.md5."
#: Paths answered without the API key (liveness probes).
OPEN_PATHS = frozenset({"/health"})


class ServeError(RuntimeError):
    """A source that cannot be served: a bad URI, a missing tag or folder, an index of another version."""


@dataclass(frozen=True)
class ServeSettings:
    """Server limits and batching (the ``nyx serve`` flags)."""

    batch_window_ms: float = 5.0
    max_batch: int = 32
    poll_seconds: float = 30.0
    max_request_bytes: int = 16 * 1024 * 1024
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_k: int = 1000

    def __post_init__(self) -> None:
        if self.batch_window_ms < 0 or self.poll_seconds < 0:
            raise ValueError("batch_window_ms and poll_seconds must be >= 0")
        for name in ("max_batch", "max_request_bytes", "max_image_bytes", "max_image_pixels", "max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


# ----------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A parsed ``nyx serve`` source: a retriever folder, or a registered model by alias or version."""

    raw: str
    folder: Path | None = None
    name: str | None = None
    alias: str | None = None
    version: str | None = None

    @property
    def is_registry(self) -> bool:
        return self.name is not None

    @property
    def is_alias(self) -> bool:
        return self.alias is not None


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_source(source: str | os.PathLike) -> Source:
    """``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a folder written by ``nyx index``."""
    raw = os.fspath(source)
    if raw.startswith(REGISTRY_PREFIX):
        m = _URI.match(raw)
        if not m:
            raise ServeError(f"bad registry URI {raw!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return Source(raw=raw, name=m["name"], alias=m["alias"], version=m["version"])
    from nyx.retrieval import RETRIEVER_MANIFEST

    folder = Path(raw)
    if not (folder / RETRIEVER_MANIFEST).is_file():
        raise ServeError(
            f"{folder} is not a Nyx index folder (no {RETRIEVER_MANIFEST}); create one with "
            "`nyx index`, or give a registry URI models:/<name>@<alias>"
        )
    return Source(raw=raw, folder=folder)


# ----------------------------------------------------------------------------------------------------------
# A loaded model: retriever + index (+ documents), ready to serve
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, the request ``field`` at fault and why."""

    def __init__(self, status: int, field: str | None, message: str):
        self.status = status
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "field": self.field}


_EXAMPLE_CONTENT = [
    {"type": "text", "text": "Which town has the red bridge?"},
    {"type": "image", "image": "data:image/png;base64,iVBORw0KGgo..."},
]
_CONTENT_HELP = (
    'The query in the JSONL part format: a list of parts, each {"type": "text", "text": ...} or '
    '{"type": "image", "image": "data:image/png;base64,..."} (images as data: URLs only).'
)


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"content": [{"type": "text", "text": "Which town has the red bridge?"}], "k": 5}]
        },
    )

    content: list[Any] = Field(description=_CONTENT_HELP, examples=[_EXAMPLE_CONTENT])
    k: StrictInt = Field(10, ge=1, description="Number of hits (at most the server's --max-k).")
    dim: StrictInt | None = Field(
        None,
        ge=1,
        description="Matryoshka dimension to search at (dense retrievers; "
        "1..the index dimension; default: the index dimension).",
    )
    return_documents: StrictBool = Field(False, description="Add each hit's corpus record (needs a corpus).")
    choices: list[str] | str | None = Field(
        None, description="A multiple-choice query's options (framed as in evaluation)."
    )


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: list[Any] = Field(description=_CONTENT_HELP, examples=[_EXAMPLE_CONTENT])
    dim: StrictInt | None = Field(
        None,
        ge=1,
        description="Matryoshka prefix (1..the index dimension; default: the index dimension); re-normalised.",
    )
    kind: Literal["query", "document"] = Field("query", description="Embed as a query (default) or a document.")
    choices: list[str] | str | None = None


class Hit(BaseModel):
    id: str
    score: float
    document: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    hits: list[Hit]
    model_version: str | None
    retriever: str
    dim: int | None
    latency_ms: float


class EmbedResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    embedding: list[float]
    dim: int
    model_version: str | None
    latency_ms: float


_PART = re.compile(r"^part (\d+)\b")


def _part_field(content: list[Any], reason: str) -> str:
    """The request field a ``record_from_json`` reason is about: ``content[i].type``, ``content[i].text``, ..."""
    m = _PART.match(reason)
    if not m:
        return "content"
    i = int(m.group(1))
    part = content[i] if i < len(content) else None
    if not isinstance(part, dict):
        return f"content[{i}]"
    kind = part.get("type")
    if kind not in ("text", "image"):
        return f"content[{i}].type"
    return f"content[{i}].{kind}"


def check_image(ref: str, where: str, settings: ServeSettings) -> None:
    """A query image must be a ``data:`` URL of a decodable image within the byte and pixel caps."""
    from PIL import Image

    from nyx.data.images import ImageConfig, decode_data_url, verify_image

    if not is_data_url(ref):
        raise ApiError(
            422,
            where,
            "query images must be data: URLs (data:image/png;base64,...); the server does not open files or URLs",
        )
    try:
        data = decode_data_url(ref)
    except RecordError as e:
        raise ApiError(422, where, e.reason) from None
    if not data:
        raise ApiError(422, where, "empty image: the data URL holds no bytes")
    if len(data) > settings.max_image_bytes:
        raise ApiError(413, where, f"image of {len(data)} bytes exceeds the limit of {settings.max_image_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise ApiError(413, where, f"image exceeds the limit of {settings.max_image_pixels} pixels") from None
    except Exception:  # noqa: BLE001 - any unreadable header
        raise ApiError(422, where, "undecodable image: not a recognised image format") from None
    if w * h > settings.max_image_pixels:
        raise ApiError(
            413, where, f"image of {w}x{h} = {w * h} pixels exceeds the limit of {settings.max_image_pixels} pixels"
        )
    try:
        verify_image(data, ImageConfig(max_decode_pixels=settings.max_image_pixels))
    except RecordError as e:
        raise ApiError(422, where, e.reason) from None


def parse_query(content: list[Any], choices: Any, settings: ServeSettings) -> Record:
    """The request's content as a :class:`Record` (parsed by ``record_from_json``, the JSONL reader's own parser),
    with every image checked. :class:`ApiError` names the field at fault."""
    if not content:
        raise ApiError(422, "content", "empty content: give at least one text or image part")
    obj: dict[str, Any] = {"id": "query", "content": content}
    if choices not in (None, "", []):
        obj["choices"] = choices
    try:
        record = record_from_json(obj)
    except RecordError as e:
        raise ApiError(422, _part_field(content, e.reason), e.reason) from None
    for i, part in enumerate(record.content):
        if part.type == "image":
            check_image(part.image or "", f"content[{i}].image", settings)
    return record


# ----------------------------------------------------------------------------------------------------------
# Batched work
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One request's work for the batcher, tied to the model it started on."""

    model: LoadedModel
    op: Literal["search", "embed"]
    record: Record
    kind: Literal["query", "document"] = "query"
    k: int = 10
    dim: int | None = None


@dataclass
class SearchResult:
    hits: list[tuple[str, float]]
    dim: int | None


@dataclass
class EmbedResult:
    embedding: np.ndarray
    dim: int


def process_jobs(jobs: Sequence[Job]) -> list[Any]:
    """Run a batch (in the batcher's worker thread): per model, one encoder call per kind, then the searches."""
    results: list[Any] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(id(job.model), []).append(i)
    for idx in groups.values():
        model = jobs[idx[0]].model
        try:
            group = [jobs[i] for i in idx]
            out = _run_dense(model, group) if model.dense else _run_sparse(model, group)
        except Exception as e:  # noqa: BLE001 - reported to these requests only
            log.exception("batch of %d request(s) failed", len(idx))
            out = [e] * len(idx)
        for i, res in zip(idx, out):
            results[i] = res
    return results


def _ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: -kv[1])  # what `nyx search` prints


def _run_dense(model: LoadedModel, jobs: list[Job]) -> list[Any]:
    from nyx.index import prefix

    r = model.retriever
    results: list[Any] = [None] * len(jobs)
    vectors: dict[int, np.ndarray] = {}
    for kind in ("query", "document"):
        idx = [i for i, j in enumerate(jobs) if j.kind == kind]
        if not idx:
            continue
        records = [Record(id=str(i), content=jobs[i].record.content, extra=jobs[i].record.extra) for i in idx]
        rejects = RejectLog(stage="serve")
        if kind == "query":
            ids, emb = r.embed_queries(records, rejects)  # one encoder call; bad records bisected out
        else:
            ids, emb = r._encode_isolating_failures(records, rejects, is_query=False)
        for row, rid in enumerate(ids):
            vectors[int(rid)] = emb[row]
        for item in rejects.items:
            try:
                i = int(item["record_id"])
            except (TypeError, ValueError):
                continue  # not one of ours: the request stays without a vector and fails below
            results[i] = ApiError(422, "content", f"the {kind} cannot be encoded: {item['reason']}")
    searches: dict[tuple[int, int | None], list[int]] = {}
    for i, job in enumerate(jobs):
        if i not in vectors:
            if results[i] is None:
                results[i] = RuntimeError("the encoder returned no embedding for this request")
            continue
        if job.op == "embed":
            d = r.embedding_index.check_dim(job.dim)
            results[i] = EmbedResult(prefix(vectors[i][None, :], d)[0], d)
        else:
            searches.setdefault((job.k, job.dim), []).append(i)
    for (k, dim), idx in searches.items():
        try:
            run = r.search_embeddings([str(i) for i in idx], np.stack([vectors[i] for i in idx]), k=k, dim=dim)
            used = r.embedding_index.check_dim(dim)
            for i in idx:
                results[i] = SearchResult(_ranked(run.get(str(i), {})), used)
        except Exception as e:  # noqa: BLE001
            log.exception("search of %d request(s) at k=%d dim=%s failed", len(idx), k, dim)
            for i in idx:
                results[i] = e
    return results


def _run_sparse(model: LoadedModel, jobs: list[Job]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    by_k: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        if job.op != "search":
            results[i] = ApiError(400, None, f"the {model.retriever.name} retriever has no embeddings")
        else:
            by_k.setdefault(job.k, []).append(i)
    for k, idx in by_k.items():
        queries = [Record(id=str(i), content=jobs[i].record.content, extra=jobs[i].record.extra) for i in idx]
        try:
            run = model.retriever.search(queries, k=k)
            for i in idx:
                results[i] = SearchResult(_ranked(run.get(str(i), {})), None)
        except Exception as e:  # noqa: BLE001
            log.exception("search of %d request(s) at k=%d failed", len(idx), k)
            for i in idx:
                results[i] = e
    return results


# ----------------------------------------------------------------------------------------------------------
# The service: current model, batcher, alias polling
# ----------------------------------------------------------------------------------------------------------


class SearchService:
    """What the app serves: :attr:`current` (swapped atomically), the batcher, and the alias poller."""

    def __init__(
        self,
        source: Source,
        settings: ServeSettings,
        corpus: str | os.PathLike | None = None,
        tracking_uri: str | None = None,
        warm_up: bool = True,
    ):
        self.source = source
        self.settings = settings
        self.corpus = corpus
        self.tracking_uri = tracking_uri
        self.warm_up = warm_up
        self.started_at = time.time()
        self.batcher: MicroBatcher[Job] = MicroBatcher(
            process_jobs, window_ms=settings.batch_window_ms, max_batch=settings.max_batch, name="nyx-serve"
        )
        self.swaps = 0
        self.last_poll: float | None = None
        self.last_error: dict[str, Any] | None = None
        self._client = None
        self._poller: asyncio.Task | None = None
        self.current: LoadedModel = self._load_initial()

    @property
    def client(self):
        if self._client is None:
            self._client = registry_client(self.tracking_uri)
        return self._client

    def _load_initial(self) -> LoadedModel:
        if not self.source.is_registry:
            model = load_folder(self.source, self.corpus, warm_up=self.warm_up)
        else:
            model = self._load_version(resolve_version(self.client, self.source), strict_documents=True)
        log.info(
            "serving %s: %s retriever, %d documents, dims %s%s",
            self.source.raw,
            model.retriever.name,
            model.retriever.num_docs,
            model.retriever.dims,
            f", version {model.model_version}" if model.model_version else "",
        )
        return model

    def _load_version(self, version: str, strict_documents: bool = False) -> LoadedModel:
        return load_registry_version(
            self.client, self.source, version, self.corpus, warm_up=self.warm_up, strict_documents=strict_documents
        )

    async def start(self) -> None:
        await self.batcher.start()
        if self.source.is_alias and self.settings.poll_seconds > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="nyx-serve-alias-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._poller = None
        await self.batcher.stop()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            await self.check_alias()

    async def check_alias(self) -> bool:
        """Swap in the alias's version if it moved (loaded in a thread; the old model serves meanwhile).
        Returns whether a swap happened; failures are logged and the old model keeps serving."""
        self.last_poll = time.time()
        try:
            version = await asyncio.to_thread(resolve_version, self.client, self.source)
        except Exception as e:  # noqa: BLE001
            log.warning("alias check failed, still serving version %s: %s", self.current.model_version, e)
            self.last_error = {"at": self.last_poll, "version": None, "error": str(e)}
            return False
        old = self.current
        if version == old.model_version:
            return False
        log.info(
            "%s moved from version %s to %s: loading it in the background", self.source.raw, old.model_version, version
        )
        try:
            new = await asyncio.to_thread(self._load_version, version)
        except Exception as e:  # noqa: BLE001 - anything: the old model keeps serving
            log.error(
                "could not load %s version %s, still serving version %s: %s",
                self.source.name,
                version,
                old.model_version,
                e,
            )
            self.last_error = {"at": self.last_poll, "version": version, "error": str(e)}
            return False
        self.current = new  # one assignment: requests that already hold `old` finish on it
        self.swaps += 1
        self.last_error = None
        log.info(
            "now serving %s version %s (was %s; loaded in %.1f s)",
            self.source.name,
            version,
            old.model_version,
            new.load_seconds,
        )
        return True

    def health(self) -> dict[str, Any]:
        s = self.settings
        return {
            "status": "ok",
            **self.current.info(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "batching": {
                "window_ms": self.batcher.window_ms,
                "max_batch": self.batcher.max_batch,
                **self.batcher.stats.to_json(),
            },
            "hot_swap": {
                "enabled": self.source.is_alias and s.poll_seconds > 0,
                "poll_seconds": s.poll_seconds,
                "swaps": self.swaps,
                "last_poll": self.last_poll,
                "last_error": self.last_error,
            },
            "limits": {
                "max_request_bytes": s.max_request_bytes,
                "max_image_bytes": s.max_image_bytes,
                "max_image_pixels": s.max_image_pixels,
                "max_k": s.max_k,
            },
        }


# ----------------------------------------------------------------------------------------------------------
# ASGI guard: API key and body size, before any body is read into the app
# ----------------------------------------------------------------------------------------------------------


class RequestGuard:
    """Answers 401 without the bearer key (except :data:`OPEN_PATHS`) and 413 for a body over ``max_body``
    bytes, counting what arrives (a missing or false Content-Length does not get past it)."""

    def __init__(self, app, *, max_body: int, api_key: str | None):
        self.app = app
        self.max_body = max_body
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self._key is not None and scope.get("path") not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
                return await _send_json(
                    send,
                    401,
                    {
                        "detail": "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                        "field": None,
                    },
                    [(b"www-authenticate", b"Bearer")],
                )
        too_big = {"detail": f"body: the request body exceeds the limit of {self.max_body} bytes", "field": "body"}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return await _send_json(send, 413, too_big)
            except ValueError:
                return await _send_json(send, 400, {"detail": "body: bad Content-Length header", "field": "body"})
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body:
                return await _send_json(send, 413, too_big)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_json(send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None):
    import json

    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


# ----------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------


def _loc_field(loc: Sequence[Any]) -> str:
    """``("body", "content", 0, "text")`` -> ``content[0].text``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


_UNSET = object()


def create_app(
    source: str | os.PathLike,
    *,
    corpus: str | os.PathLike | None = None,
    settings: ServeSettings | None = None,
    api_key: Any = _UNSET,
    tracking_uri: str | None = None,
    warm_up: bool = True,
):
    """The FastAPI app serving ``source`` (a retriever folder or ``models:/<name>@<alias>`` / ``/<version>``).

    The model is loaded here (a :class:`ServeError` says why it cannot be); the batcher and the alias poller run
    during the app's lifespan (``with TestClient(app)``, or uvicorn). ``api_key`` defaults to the environment
    variable :data:`API_KEY_ENV`; ``tracking_uri`` to MLflow's own default (``MLFLOW_TRACKING_URI``)."""
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from nyx.index import nyx_version

    settings = settings or ServeSettings()
    if api_key is _UNSET:
        api_key = os.environ.get(API_KEY_ENV) or None
    service = SearchService(parse_source(source), settings, corpus=corpus, tracking_uri=tracking_uri, warm_up=warm_up)

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Nyx search API",
        version=nyx_version(),
        lifespan=lifespan,
        description="Top-k documents for a mixed-modal query (text and data: URL images), embeddings, "
        "and the served model's version. See docs/serving.md.",
    )
    app.state.service = service
    app.add_middleware(RequestGuard, max_body=settings.max_request_bytes, api_key=api_key)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            where = first.get("loc", ("body", "?"))[-1]
            err = ApiError(
                400, "body", f"malformed JSON ({first.get('ctx', {}).get('error', 'decode error')} at position {where})"
            )
        else:
            fld = _loc_field(first.get("loc", ()))
            err = ApiError(422, fld, str(first.get("msg", "invalid value")))
        body = err.body()
        body["errors"] = [{"field": _loc_field(e.get("loc", ())), "message": e.get("msg")} for e in errors]
        return JSONResponse(body, status_code=err.status)

    async def _query(content: list[Any], choices: Any) -> Record:
        has_image = any(isinstance(p, dict) and p.get("type") == "image" for p in content)
        if has_image:  # decoding images is CPU work: keep it off the event loop
            return await run_in_threadpool(parse_query, content, choices, settings)
        return parse_query(content, choices, settings)

    async def _submit(job: Job) -> Any:
        try:
            return await service.batcher.submit(job)
        except ApiError:
            raise
        except BatcherClosedError as e:
            raise ApiError(503, None, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a bug or resource exhaustion: 500, the worker goes on
            raise ApiError(500, None, f"internal error: {type(e).__name__}: {e}") from None

    @app.post(
        "/search",
        response_model=SearchResponse,
        response_model_exclude_unset=True,
        summary="Top-k documents for a mixed-modal query",
    )
    async def search(req: SearchRequest):
        t0 = time.perf_counter()
        model = service.current  # this request finishes on this model even if a swap happens meanwhile
        if req.k > settings.max_k:
            raise ApiError(422, "k", f"k={req.k} exceeds the server's limit of {settings.max_k}")
        model.search_dim(req.dim)
        if req.return_documents and model.documents is None:
            why = (
                f"the corpus could not be used ({model.documents_error})"
                if model.documents_error
                else f"start it with --corpus PATH, or tag the model version with '{CORPUS_PATH_TAG}'"
            )
            raise ApiError(400, "return_documents", f"this server has no corpus documents: {why}")
        record = await _query(req.content, req.choices)
        res: SearchResult = await _submit(Job(model, "search", record, k=req.k, dim=req.dim))
        hits = [
            Hit(id=d, score=s, document=model.document(d)) if req.return_documents else Hit(id=d, score=s)
            for d, s in res.hits
        ]
        return SearchResponse(
            hits=hits,
            model_version=model.model_version,
            retriever=model.retriever.name,
            dim=res.dim,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    @app.post("/embed", response_model=EmbedResponse, summary="The embedding of a query (or a document)")
    async def embed(req: EmbedRequest):
        t0 = time.perf_counter()
        model = service.current
        if not model.dense:
            raise ApiError(
                400,
                None,
                f"the {model.retriever.name} retriever has no embeddings: /embed needs a "
                "dense retriever (nyx or minilm)",
            )
        model.search_dim(req.dim)
        record = await _query(req.content, req.choices)
        res: EmbedResult = await _submit(Job(model, "embed", record, kind=req.kind, dim=req.dim))
        return EmbedResponse(
            embedding=res.embedding.tolist(),
            dim=res.dim,
            model_version=model.model_version,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    @app.get("/health", summary="Served model version, index size, dims, data version, uptime")
    async def health():
        return service.health()

    return app


__all__ = [
    "API_KEY_ENV",
    "ApiError",
    "CORPUS_PATH_TAG",
    "INDEX_DIR_TAG",
    "LoadedModel",
    "SearchService",
    "ServeError",
    "ServeSettings",
    "Source",
    "create_app",
    "load_documents",
    "load_folder",
    "load_registry_version",
    "parse_query",
    "parse_source",
]
