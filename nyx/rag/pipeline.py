"""Retrieval-augmented answering: retrieve, read the top-n documents, answer, score.

Three runs bound what retrieval contributes (the method's evaluation reads the top-1 document):

* ``retrieval`` — the retriever's top-``top_n`` documents (from a fresh search, or a run passed in);
* ``oracle`` — the query's gold documents (highest qrels grade first): the reader's ceiling. About a third of
  answers were wrong even with the gold document in the paper (generator noise);
* ``no_retrieval`` — an empty context: what the reader gets right without documents (chance, for the
  offline option reader).

The reader is any :class:`~nyx.feedback.readers.Reader`, or a generator (wrapped in a
:class:`~nyx.feedback.readers.GeneratorReader`); ``cache_dir`` keeps its answers on disk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nyx.data.records import Record
from nyx.eval.answers import answer_metrics
from nyx.feedback.preferences import rank_documents
from nyx.feedback.readers import CachedReader, Reader, as_reader

__all__ = [
    "NO_RETRIEVAL",
    "ORACLE",
    "RAGConfig",
    "RAGResult",
    "gold_contexts",
    "read_answers",
    "retrieval_contexts",
    "run_rag",
]

ORACLE = "oracle"
NO_RETRIEVAL = "no_retrieval"


class RAGConfig(BaseModel):
    """Settings of a RAG evaluation."""

    model_config = ConfigDict(extra="forbid")

    top_n: int = Field(1, ge=1, description="retrieved documents given to the reader")
    search_k: int = Field(10, ge=1, description="search depth when the pipeline searches itself")
    dim: int | None = Field(None, ge=1, description="Matryoshka dimension for the search (None = full)")
    oracle: bool = Field(True, description="also answer from the gold documents (needs qrels)")
    no_retrieval: bool = Field(True, description="also answer with an empty context")


@dataclass
class RAGResult:
    """One RAG run: the answer and context of every query, and the answer metrics."""

    name: str
    predictions: dict[str, str]
    contexts: dict[str, list[str]]
    metrics: dict[str, Any]
    n_without_context: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """``{run, accuracy, em, f1, n}`` for a report table."""
        m = self.metrics
        return {"run": self.name, "accuracy": m["accuracy"], "em": m["em"], "f1": m["f1"], "n": m["n"]}

    def to_json(self, per_query: bool = True) -> dict[str, Any]:
        metrics = dict(self.metrics) if per_query else {k: v for k, v in self.metrics.items() if k != "per_query"}
        out: dict[str, Any] = {
            "name": self.name,
            "metrics": metrics,
            "n_without_context": self.n_without_context,
            "meta": self.meta,
        }
        if per_query:
            out.update(predictions=self.predictions, contexts=self.contexts)
        return out


def retrieval_contexts(
    run: Mapping[str, Mapping[str, float]], queries: Sequence[Record], top_n: int
) -> dict[str, list[str]]:
    """Each query's top-``top_n`` document ids from a run (empty when the run has none)."""
    return {q.id: rank_documents(run.get(q.id, {}))[:top_n] for q in queries}


def gold_contexts(
    qrels: Mapping[str, Mapping[str, int]], queries: Sequence[Record], top_n: int
) -> dict[str, list[str]]:
    """Each query's gold documents (grade >= 1, highest grade first, then by id), at most ``top_n``."""
    out = {}
    for q in queries:
        judged = [(d, s) for d, s in qrels.get(q.id, {}).items() if s >= 1]
        out[q.id] = [d for d, _ in sorted(judged, key=lambda kv: (-kv[1], kv[0]))][:top_n]
    return out


def read_answers(
    queries: Sequence[Record], contexts: Mapping[str, Sequence[str]], corpus: Mapping[str, Record], reader: Reader
) -> dict[str, str]:
    """The reader's answer to each query from its context documents (in order)."""
    out = {}
    for q in queries:
        ids = contexts.get(q.id, [])
        missing = [d for d in ids if d not in corpus]
        if missing:
            raise KeyError(f"query {q.id!r}: context documents missing from the corpus: {missing[:3]}")
        out[q.id] = reader.answer(q, [corpus[d] for d in ids])
    return out


def _result(
    name: str,
    queries: Sequence[Record],
    contexts: dict[str, list[str]],
    corpus: Mapping[str, Record],
    reader: Reader,
    meta: dict[str, Any],
) -> RAGResult:
    preds = read_answers(queries, contexts, corpus, reader)
    return RAGResult(
        name=name,
        predictions=preds,
        contexts=contexts,
        metrics=answer_metrics(preds, queries),
        n_without_context=sum(1 for q in queries if not contexts.get(q.id)),
        meta=meta,
    )


def run_rag(
    queries: Sequence[Record],
    corpus: Sequence[Record] | Mapping[str, Record],
    reader: Any,
    retriever: Any = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    cfg: RAGConfig | None = None,
    run: Mapping[str, Mapping[str, float]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    name: str = "retrieval",
) -> dict[str, RAGResult]:
    """Answer ``queries`` with retrieval (and the oracle / no-retrieval bounds); results keyed by run name.

    Give either a ``retriever`` (searched here; indexed with ``corpus`` first if empty) or a precomputed
    ``run`` (e.g. from a Matryoshka sweep), or neither to compute only the bounds. The oracle run needs ``qrels``.
    """
    cfg = cfg or RAGConfig()
    docs = dict(corpus) if isinstance(corpus, Mapping) else {r.id: r for r in corpus}
    reader = as_reader(reader)
    if cache_dir is not None and not isinstance(reader, CachedReader):
        reader = CachedReader(reader, cache_dir)
    queries = list(queries)
    results: dict[str, RAGResult] = {}
    if run is None and retriever is not None:
        if getattr(retriever, "num_docs", 0) == 0:
            retriever.index(list(docs.values()))
        run = retriever.search(queries, k=max(cfg.search_k, cfg.top_n), dim=cfg.dim)
    meta = {"top_n": cfg.top_n, "reader": reader.describe()}
    if run is not None:
        results[name] = _result(
            name, queries, retrieval_contexts(run, queries, cfg.top_n), docs, reader, {**meta, "dim": cfg.dim}
        )
    if cfg.oracle:
        if qrels is None:
            raise ValueError("the oracle run needs qrels (or set RAGConfig.oracle=False)")
        results[ORACLE] = _result(ORACLE, queries, gold_contexts(qrels, queries, cfg.top_n), docs, reader, meta)
    if cfg.no_retrieval:
        results[NO_RETRIEVAL] = _result(NO_RETRIEVAL, queries, {q.id: [] for q in queries}, docs, reader, meta)
    return results
