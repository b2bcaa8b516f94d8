"""Retrieval metrics with trec_eval semantics (pytrec-eval), and the Matryoshka dimension sweep.

Metrics (names as they appear in reports):

* ``recall@k`` for k in 1, 5, 10, 20 — trec_eval ``recall_k``: relevant documents in the top k / all relevant.
* ``ndcg@10`` — trec_eval ``ndcg_cut_10`` (graded gains from the qrels).
* ``mrr@10`` — trec_eval ``recip_rank`` on the run cut to its top 10 (0 if no relevant document there).

A document is relevant when its qrels score is >= 1. Averages are over the queries of the qrels that have at
least one relevant document (queries with none cannot be scored and are counted in ``n_unjudged``); such a
query that is missing from the run, or has no results, scores 0 on every metric. Ranking follows trec_eval:
by descending score, ties by descending document id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytrec_eval

from nyx.data.beir import Run
from nyx.data.records import Record
from nyx.data.rejects import RejectLog

if TYPE_CHECKING:  # pragma: no cover
    from nyx.retrieval.base import Retriever

RECALL_KS: tuple[int, ...] = (1, 5, 10, 20)
NDCG_K = 10
MRR_K = 10


def metric_names(recall_ks: Sequence[int] = RECALL_KS, ndcg_k: int = NDCG_K, mrr_k: int = MRR_K) -> list[str]:
    return [f"recall@{k}" for k in recall_ks] + [f"ndcg@{ndcg_k}", f"mrr@{mrr_k}"]


def truncate_run(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """Each query's top ``k`` documents, in trec_eval order (score descending, then document id descending)."""
    out: Run = {}
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda kv: (float(kv[1]), kv[0]), reverse=True)[:k]
        out[qid] = {d: float(s) for d, s in ranked}
    return out


@dataclass
class RetrievalMetrics:
    """Per-query and mean metrics of one run."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int  # judged queries (>= 1 relevant document): the denominator of every mean
    n_missing: int  # judged queries without any result in the run (scored 0)
    n_unjudged: int = 0  # queries in the qrels without a relevant document (not scored)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.aggregate,
            "n_queries": self.n_queries,
            "n_missing": self.n_missing,
            "n_unjudged": self.n_unjudged,
        }
        if per_query:
            out["per_query"] = self.per_query
        return out


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    recall_ks: Sequence[int] = RECALL_KS,
    ndcg_k: int = NDCG_K,
    mrr_k: int = MRR_K,
) -> RetrievalMetrics:
    """Recall@k, nDCG@k and MRR@k of ``run`` against ``qrels`` (see the module docstring for semantics)."""
    judged = {
        q: {d: int(s) for d, s in docs.items()} for q, docs in qrels.items() if any(s >= 1 for s in docs.values())
    }
    names = metric_names(recall_ks, ndcg_k, mrr_k)
    per_query: dict[str, dict[str, float]] = {q: dict.fromkeys(names, 0.0) for q in judged}
    present = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in judged and docs}
    if present:
        full = pytrec_eval.RelevanceEvaluator(
            judged, {"recall." + ",".join(str(k) for k in recall_ks), f"ndcg_cut.{ndcg_k}"}
        ).evaluate(present)
        mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(truncate_run(present, mrr_k))
        for q, m in full.items():
            row = per_query[q]
            for k in recall_ks:
                row[f"recall@{k}"] = float(m[f"recall_{k}"])
            row[f"ndcg@{ndcg_k}"] = float(m[f"ndcg_cut_{ndcg_k}"])
            row[f"mrr@{mrr_k}"] = float(mrr[q]["recip_rank"])
    n = len(judged)
    aggregate = {name: (sum(r[name] for r in per_query.values()) / n if n else 0.0) for name in names}
    return RetrievalMetrics(
        aggregate=aggregate,
        per_query=per_query,
        n_queries=n,
        n_missing=n - len(present),
        n_unjudged=len(qrels) - n,
    )


@dataclass
class DimEvaluation:
    """One row of a Matryoshka sweep, with the run and per-query metrics behind it."""

    dim: int | None
    metrics: RetrievalMetrics
    run: Run
    search_ms_per_query: float
    encode_ms_per_query: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The table row: dimension, every metric, latency (ms per query)."""
        return {
            "dim": self.dim,
            **self.metrics.aggregate,
            "search_ms_per_query": self.search_ms_per_query,
            "encode_ms_per_query": self.encode_ms_per_query,
            "n_queries": self.metrics.n_queries,
        }


def evaluate_at_dims(
    retriever: Retriever,
    queries: Sequence[Record],
    qrels: Mapping[str, Mapping[str, int]],
    dims: Sequence[int | None] | None = None,
    k: int | None = None,
    rejects: RejectLog | None = None,
) -> list[DimEvaluation]:
    """Search ``queries`` at each dimension in ``dims`` and score the runs against ``qrels``.

    ``dims`` defaults to the retriever's dimensions (``[None]`` for sparse retrievers). A dense retriever
    encodes the queries once at full dimension; ``search_ms_per_query`` then times only the index search at
    each dimension, and the shared encoding time is reported separately. For other retrievers the whole
    ``search`` call is timed. ``k`` (default: the largest cut-off of the metrics) is the run depth. Queries a
    dense encoder cannot encode go to ``rejects`` (and score 0) when it is given; otherwise they raise.
    """
    from nyx.retrieval.dense import DenseRetriever

    dims = list(dims) if dims else (list(retriever.dims) or [None])
    for d in dims:
        retriever.check_dim(d)
        if d is not None and retriever.dims and d > max(retriever.dims):
            raise ValueError(f"dimension {d} exceeds the index dimension {max(retriever.dims)}")
    k = k or max(max(RECALL_KS), NDCG_K, MRR_K)
    n = max(len(queries), 1)
    retriever.load_models()  # model start-up is not search latency
    results: list[DimEvaluation] = []
    encode_ms: float | None = None
    if isinstance(retriever, DenseRetriever):
        t0 = time.perf_counter()
        qids, q_emb = retriever.embed_queries(queries, rejects=rejects)
        encode_ms = (time.perf_counter() - t0) * 1000 / n
    for d in dims:
        t0 = time.perf_counter()
        if isinstance(retriever, DenseRetriever):
            run = retriever.search_embeddings(qids, q_emb, k=k, dim=d)
        else:
            run = retriever.search(queries, k=k, dim=d)
        search_ms = (time.perf_counter() - t0) * 1000 / n
        results.append(DimEvaluation(d, evaluate_run(run, qrels), run, search_ms, encode_ms))
    return results


def matryoshka_sweep(
    retriever: Retriever,
    queries: Sequence[Record],
    qrels: Mapping[str, Mapping[str, int]],
    dims: Sequence[int | None] | None = None,
    k: int | None = None,
) -> list[dict[str, Any]]:
    """Table rows ``{dim, recall@1.., ndcg@10, mrr@10, search_ms_per_query, encode_ms_per_query, n_queries}``
    for each dimension (see :func:`evaluate_at_dims`)."""
    return [e.row() for e in evaluate_at_dims(retriever, queries, qrels, dims, k)]
