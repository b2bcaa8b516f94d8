"""Batched work: one request's :class:`Job`, and :func:`process_jobs`, which the batcher runs on a batch in its
worker thread (per model, one encoder call per kind, then the searches; a failure reaches its own requests only)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nyx.data.records import Record
from nyx.data.rejects import RejectLog
from nyx.serving.errors import ApiError
from nyx.serving.loading import LoadedModel

log = logging.getLogger("nyx.serving.server")  # one logger name for the whole service (what operators filter on)


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
