"""``nyx serve``: a search API over HTTP (FastAPI + uvicorn) for a model and its corpus index.

Source (what is served) is either

* a folder written by ``nyx index`` (any retriever: ``nyx``, ``minilm``, ``bm25``; the same API for all), or
* a registry URI, ``models:/<name>@<alias>`` (e.g. ``models:/nyx-retriever@champion``) or
  ``models:/<name>/<version>``. The model version's tag :data:`~nyx.registry.INDEX_DIR_TAG` (``nyx.index_dir``)
  names the saved retriever folder of that version's corpus index; the folder's index manifest must not name another
  version.

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

This module is the app factory and its routes (:func:`create_app`); the parts it puts together:
:mod:`~nyx.serving.source` (parsing the source), :mod:`~nyx.serving.loading` (a ``LoadedModel`` from a folder or
a registry version), :mod:`~nyx.serving.service` (current model, batcher, alias polling and hot-swap),
:mod:`~nyx.serving.jobs` (the batched encoder and search work), :mod:`~nyx.serving.schemas` (request and response
bodies), :mod:`~nyx.serving.query` (a request's content as a checked query record), :mod:`~nyx.serving.guard` (API
key and body size), :mod:`~nyx.serving.config` (:class:`ServeSettings`) and :mod:`~nyx.serving.errors`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

from nyx.data.records import Record
from nyx.registry import CORPUS_PATH_TAG
from nyx.serving.batching import BatcherClosedError
from nyx.serving.config import API_KEY_ENV, ServeSettings
from nyx.serving.errors import ApiError
from nyx.serving.guard import RequestGuard
from nyx.serving.jobs import EmbedResult, Job, SearchResult
from nyx.serving.query import parse_query
from nyx.serving.schemas import EmbedRequest, EmbedResponse, Hit, SearchRequest, SearchResponse
from nyx.serving.service import SearchService
from nyx.serving.source import parse_source


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
        first: dict[str, Any] = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
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


__all__ = ["create_app"]
