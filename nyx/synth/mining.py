"""Hard-negative mining for NyxQA training queries (stage 5).

The paper lets an existing multimodal retriever (mmE5) retrieve the top 20 chunks per training question
and keeps ranks 11-20 minus the positive and its duplicates, storing 5: skipping the top 10 avoids false
negatives (other chunks that also answer the question). Any :class:`~nyx.retrieval.base.Retriever` can be
the miner here (BM25 or MiniLM offline, a Nyx checkpoint later).

A candidate is a near-duplicate of the positive when its normalised text (and images) equal the
positive's, or when it comes from the same document and the word sets overlap by at least
``dedup_threshold`` (Jaccard).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from nyx.data.records import Record
from nyx.retrieval.base import Retriever, chunked
from nyx.synth.text import normalize_answer

log = logging.getLogger(__name__)


@dataclass
class MiningConfig:
    """Settings of :func:`mine_hard_negatives` (defaults: the paper's)."""

    k: int = 20
    """Candidates retrieved per query."""
    skip: int = 10
    """Ranks 1..skip are never used (likely false negatives)."""
    n: int = 5
    """Negatives stored per query."""
    dedup_threshold: float = 0.8
    """Word-set Jaccard from which a chunk of the positive's document counts as its duplicate."""
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.skip < self.k:
            raise ValueError(f"need 0 <= skip < k, got skip={self.skip}, k={self.k}")
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError("dedup_threshold must be in (0, 1]")


def _signature(r: Record) -> tuple[str, tuple[str, ...]]:
    return normalize_answer(r.text), tuple(r.images)


def _words(r: Record) -> set[str]:
    return set(normalize_answer(r.text).split())


def is_near_duplicate(candidate: Record, positive: Record, threshold: float) -> bool:
    """Same normalised content, or same document with word-set Jaccard >= ``threshold``."""
    if _signature(candidate) == _signature(positive):
        return True
    doc = positive.extra.get("doc_id")
    if doc is None or candidate.extra.get("doc_id") != doc:
        return False
    a, b = _words(candidate), _words(positive)
    if not a and not b:  # image-only chunks of one document: duplicates only if the images are the same
        return candidate.images == positive.images
    return len(a & b) / max(1, len(a | b)) >= threshold


def mine_hard_negatives(
    queries: Sequence[Record],
    corpus: Sequence[Record],
    retriever: Retriever,
    k: int | None = None,
    skip: int | None = None,
    n: int | None = None,
    dedup_threshold: float | None = None,
    cfg: MiningConfig | None = None,
    index: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mine ``n`` hard negatives per query from ranks ``skip+1..k`` of ``retriever``.

    ``queries`` are the training queries (each with ``extra["positive_id"]``); keyword arguments override
    ``cfg``. With ``index=True`` the retriever first indexes ``corpus``. Returns ``(records, stats)`` with
    records ``{"query_id", "positive_id", "negative_ids", "miner"}`` in query order (a query may get fewer
    than ``n`` negatives, even none; the stats count them).
    """
    base = cfg or MiningConfig()
    cfg = MiningConfig(
        k=base.k if k is None else k, skip=base.skip if skip is None else skip, n=base.n if n is None else n,
        dedup_threshold=base.dedup_threshold if dedup_threshold is None else dedup_threshold,
        batch_size=base.batch_size,
    )
    by_id = {c.id: c for c in corpus}
    if index:
        retriever.index(corpus)
    miner = getattr(retriever, "name", type(retriever).__name__)
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for batch in chunked(queries, cfg.batch_size):
        run = retriever.search(batch, k=cfg.k)
        for q in batch:
            pid = q.extra.get("positive_id")
            positive = by_id.get(pid) if pid is not None else None
            if positive is None:
                counts["skipped_unknown_positive"] += 1
                continue
            ranked = sorted(run.get(q.id, {}).items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.k]
            ranks = [d for d, _ in ranked]
            if pid in ranks[: cfg.skip]:
                counts["positive_in_skipped_ranks"] += 1
            negatives: list[str] = []
            for did in ranks[cfg.skip :]:
                if did == pid:
                    counts["dropped_positive"] += 1
                    continue
                cand = by_id.get(did)
                if cand is None:
                    counts["dropped_unknown_doc"] += 1
                    continue
                if is_near_duplicate(cand, positive, cfg.dedup_threshold):
                    counts["dropped_near_duplicate"] += 1
                    continue
                if len(negatives) < cfg.n:
                    negatives.append(did)
            counts["queries_full" if len(negatives) == cfg.n else ("queries_short" if negatives else "queries_none")] += 1
            records.append({"query_id": q.id, "positive_id": pid, "negative_ids": negatives, "miner": miner})
    stats: dict[str, Any] = {
        "queries": len(queries),
        "mined": len(records),
        "negatives": sum(len(r["negative_ids"]) for r in records),
        **{key: counts.get(key, 0) for key in ("queries_full", "queries_short", "queries_none",
                                               "positive_in_skipped_ranks", "dropped_positive",
                                               "dropped_near_duplicate", "dropped_unknown_doc",
                                               "skipped_unknown_positive")},
        "config": {"k": cfg.k, "skip": cfg.skip, "n": cfg.n, "dedup_threshold": cfg.dedup_threshold},
        "miner": miner,
    }
    log.info("mined %d negatives for %d queries with %s", stats["negatives"], len(records), miner)
    return records, stats
