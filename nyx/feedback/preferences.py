"""VLM-feedback preferences (Stage 2): which retrieved document actually helps the reader answer.

For each training query the Stage-1 retriever returns its top-K documents (K = ``top_k``, 30 in the paper).
The reader answers the question from each sliding window of the ranked list (:func:`sliding_windows`;
``w = 1, s = 1`` in the paper's final runs). A window *scores* 1/0 by exact option match for a multiple-choice
query and token F1 with the gold answer for an open question; it is *correct* when the score is above
``f1_threshold`` (> 0 in the research code; a multiple-choice window is correct iff it chose the right option).

* **Positive**: the first window (in rank order) reaching the query's best score, provided that window is
  correct. With ``w > 1`` the positive is the *top-ranked document of that window* (with ``w = 1`` the window's
  only document). Queries with no correct window are dropped (and counted).
* **Negatives**: up to ``max_negatives`` other retrieved documents in rank order. By default a document that
  belongs to any correct window is skipped (the research code did not check, so it could train against
  documents that answer the question), and so is a gold (qrels) document of the query.

With ``early_stop`` (default) windows are read in rank order only until the outcome is fixed: the best
possible score (1.0) has been reached and enough negatives have a final status (every window containing them
has been read). The triples are then exactly those of reading all K windows, at a fraction of the reader
calls; ``n_correct_windows`` counts the windows read (``n_windows_read``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.feedback.readers import CachedReader, Reader
from nyx.feedback.triples import FeedbackTriple
from nyx.feedback.windows import WindowScore, score_window_answer, window_starts

__all__ = [
    "FeedbackConfig",
    "FeedbackStats",
    "collect_feedback",
    "preference_for_query",
    "rank_documents",
    "select_preference",
]

MAX_SCORE = 1.0  # the best score any window can reach (exact option match, or token F1 = 1)


class FeedbackConfig(BaseModel):
    """Settings of feedback collection (paper defaults)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(30, ge=1, description="documents retrieved per query")
    window_size: int = Field(1, ge=1, description="documents per reader window (w)")
    stride: int = Field(1, ge=1, description="step between window starts (s)")
    f1_threshold: float = Field(0.0, ge=0.0, lt=1.0, description="open QA: a window is correct when F1 > this")
    max_negatives: int = Field(3, ge=0)
    exclude_correct_negatives: bool = Field(
        True, description="skip negatives that belong to a correct window (the research code did not check)"
    )
    exclude_gold_negatives: bool = Field(True, description="never use a gold (qrels) document as a negative")
    mode: Literal["auto", "mc", "open"] = Field(
        "auto", description="auto: multiple choice when the query has options, open QA otherwise"
    )
    dim: int | None = Field(None, ge=1, description="Matryoshka dimension used for retrieval (None = full)")
    early_stop: bool = Field(True, description="stop reading windows once the triple cannot change")
    search_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _check(self) -> FeedbackConfig:
        if self.window_size > self.top_k:
            raise ValueError(f"window_size {self.window_size} exceeds top_k {self.top_k}")
        return self


def select_preference(
    query_id: str,
    ranked_ids: Sequence[str],
    windows: Sequence[WindowScore],
    cfg: FeedbackConfig,
    gold_ids: Iterable[str] = (),
) -> FeedbackTriple | None:
    """The triple from scored windows (the selection rule of the module docstring), or None when no window
    is correct. ``windows`` are those read so far, in rank order."""
    if not windows:
        return None
    best = max(w.score for w in windows)
    winner = next(w for w in windows if w.score == best)
    if not winner.correct:
        return None
    positive = winner.doc_ids[0]  # the top-ranked document of the winning window
    rank = {d: i for i, d in enumerate(ranked_ids)}
    gold = set(gold_ids)
    excluded = {positive}
    if cfg.exclude_correct_negatives:
        excluded |= {d for w in windows if w.correct for d in w.doc_ids}
    if cfg.exclude_gold_negatives:
        excluded |= gold
    negatives = [d for d in ranked_ids if d not in excluded][: cfg.max_negatives]
    gold_ranks = [rank[d] + 1 for d in gold if d in rank]
    return FeedbackTriple(
        query_id=query_id,
        positive_id=positive,
        negative_ids=negatives,
        positive_rank=rank[positive] + 1,
        n_correct_windows=sum(w.correct for w in windows),
        stage1_rank_of_gold=min(gold_ranks) if gold_ranks else None,
        positive_score=best,
        n_windows_read=len(windows),
    )


def _outcome_fixed(
    windows: Sequence[WindowScore], finalized: int, ranked_ids: Sequence[str], cfg: FeedbackConfig, gold: set[str]
) -> bool:
    """True when reading more windows cannot change the triple (see the module docstring)."""
    first_best = next((w for w in windows if w.score >= MAX_SCORE and w.correct), None)
    if first_best is None:
        return False
    if not cfg.exclude_correct_negatives or cfg.max_negatives == 0:
        return True
    # Documents ranked before ``finalized`` appear in no unread window: their status is final.
    excluded = {first_best.doc_ids[0]} | {d for w in windows if w.correct for d in w.doc_ids}
    if cfg.exclude_gold_negatives:
        excluded |= gold
    final_negatives = sum(1 for d in ranked_ids[:finalized] if d not in excluded)
    return final_negatives >= cfg.max_negatives


def preference_for_query(
    query: Record,
    ranked_ids: Sequence[str],
    answer_fn: Callable[[Record, list[str]], str],
    cfg: FeedbackConfig,
    gold_ids: Iterable[str] = (),
) -> tuple[FeedbackTriple | None, list[WindowScore]]:
    """Read the windows of one query's ranked list (``answer_fn(query, window_doc_ids)``), score them and
    select the triple. Returns the triple (None if no window is correct) and the windows read."""
    gold = set(gold_ids)
    ranked_ids = list(ranked_ids)
    starts = window_starts(len(ranked_ids), cfg.window_size, cfg.stride)
    windows: list[WindowScore] = []
    for j, start in enumerate(starts):
        doc_ids = ranked_ids[start : start + cfg.window_size]
        answer = answer_fn(query, doc_ids)
        score, correct = score_window_answer(answer, query, cfg.mode, cfg.f1_threshold)
        windows.append(WindowScore(start, tuple(doc_ids), answer, score, correct))
        finalized = starts[j + 1] if j + 1 < len(starts) else len(ranked_ids)
        if cfg.early_stop and _outcome_fixed(windows, finalized, ranked_ids, cfg, gold):
            break
    return select_preference(query.id, ranked_ids, windows, cfg, gold), windows


def rank_documents(docs: Mapping[str, float]) -> list[str]:
    """Document ids by descending score; ties keep the retriever's order."""
    return [d for d, _ in sorted(docs.items(), key=lambda kv: -float(kv[1]))]


@dataclass
class FeedbackStats:
    """What feedback collection did, for asset metadata and MLflow."""

    n_queries: int = 0
    n_kept: int = 0
    n_no_correct_window: int = 0
    n_no_results: int = 0
    n_rejected: int = 0
    n_windows_read: int = 0
    n_windows_total: int = 0  # windows a full read would have needed
    reader_calls: int = 0  # answers computed (not from the cache)
    cache_hits: int = 0
    sum_positive_rank: int = 0
    n_with_gold: int = 0  # kept queries with a gold document in the qrels
    n_positive_differs_from_gold: int = 0
    n_gold_retrieved: int = 0  # queries (with gold) whose gold document is in the top-K
    n_queries_with_gold: int = 0
    sum_negatives: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def kept_share(self) -> float:
        return self.n_kept / self.n_queries if self.n_queries else 0.0

    @property
    def avg_positive_rank(self) -> float | None:
        return self.sum_positive_rank / self.n_kept if self.n_kept else None

    @property
    def positive_differs_from_gold_share(self) -> float | None:
        """Among kept queries with a gold document: share whose feedback positive is not a gold document."""
        return self.n_positive_differs_from_gold / self.n_with_gold if self.n_with_gold else None

    @property
    def gold_in_top_k_share(self) -> float | None:
        return self.n_gold_retrieved / self.n_queries_with_gold if self.n_queries_with_gold else None

    @property
    def avg_negatives(self) -> float | None:
        return self.sum_negatives / self.n_kept if self.n_kept else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            kept_share=self.kept_share,
            avg_positive_rank=self.avg_positive_rank,
            positive_differs_from_gold_share=self.positive_differs_from_gold_share,
            gold_in_top_k_share=self.gold_in_top_k_share,
            avg_negatives=self.avg_negatives,
        )
        return out


def collect_feedback(
    queries: Sequence[Record],
    corpus: Sequence[Record] | Mapping[str, Record],
    retriever: Any,
    reader: Reader,
    cfg: FeedbackConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    rejects: RejectLog | None = None,
    progress: bool = False,
) -> tuple[list[FeedbackTriple], FeedbackStats]:
    """Build Stage-2 triples for ``queries``.

    ``retriever`` is a :class:`~nyx.retrieval.base.Retriever`; it is indexed with ``corpus`` first if it holds
    no documents. ``cache_dir`` stores the reader's answers on disk (a re-run recomputes nothing); ``qrels``
    name the gold documents (for ``stage1_rank_of_gold``, the gold-vs-feedback statistics and, by default,
    keeping gold documents out of the negatives). Queries that cannot be scored go to ``rejects`` with the
    reason (a fresh log when None; its counts are in the stats); they never stop the batch.
    """
    cfg = cfg or FeedbackConfig()
    rejects = rejects if rejects is not None else RejectLog(stage="feedback")
    n_rejects_before = len(rejects)
    docs = dict(corpus) if isinstance(corpus, Mapping) else {r.id: r for r in corpus}
    if getattr(retriever, "num_docs", 0) == 0:
        retriever.index(list(docs.values()), rejects=rejects)
    if cache_dir is not None and not isinstance(reader, CachedReader):
        reader = CachedReader(reader, cache_dir)
    hits0, misses0 = (reader.hits, reader.misses) if isinstance(reader, CachedReader) else (0, 0)
    stats = FeedbackStats(n_queries=len(queries))
    calls = 0

    def answer_fn(query: Record, doc_ids: list[str]) -> str:
        nonlocal calls
        calls += 1
        return reader.answer(query, [docs[d] for d in doc_ids])

    triples: list[FeedbackTriple] = []
    batches = [queries[i : i + cfg.search_batch_size] for i in range(0, len(queries), cfg.search_batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(queries), desc="feedback", unit="query")
    for batch in batches:
        run = retriever.search(list(batch), k=cfg.top_k, dim=cfg.dim)
        for q in batch:
            if bar is not None:
                bar.update(1)
            ranked = rank_documents(run.get(q.id, {}))
            unknown = [d for d in ranked if d not in docs]
            if unknown:
                rejects.add(RecordError(f"retrieved documents missing from the corpus: {unknown[:3]}", record_id=q.id))
                ranked = [d for d in ranked if d in docs]
            gold = [d for d, s in (qrels or {}).get(q.id, {}).items() if s >= 1]
            if gold:
                stats.n_queries_with_gold += 1
                stats.n_gold_retrieved += any(d in ranked for d in gold)
            if not ranked:
                stats.n_no_results += 1
                continue
            try:
                triple, windows = preference_for_query(q, ranked, answer_fn, cfg, gold)
            except RecordError as e:
                rejects.add(e)
                stats.n_rejected += 1
                continue
            stats.n_windows_read += len(windows)
            stats.n_windows_total += len(window_starts(len(ranked), cfg.window_size, cfg.stride))
            if triple is None:
                stats.n_no_correct_window += 1
                continue
            triples.append(triple)
            stats.n_kept += 1
            stats.sum_positive_rank += triple.positive_rank
            stats.sum_negatives += len(triple.negative_ids)
            if gold:
                stats.n_with_gold += 1
                stats.n_positive_differs_from_gold += triple.positive_id not in gold
    if bar is not None:
        bar.close()
    if isinstance(reader, CachedReader):
        stats.cache_hits = reader.hits - hits0
        stats.reader_calls = reader.misses - misses0
    else:
        stats.reader_calls = calls
    new_rejects = RejectLog(stage=rejects.stage, items=rejects.items[n_rejects_before:])
    stats.reject_reasons = new_rejects.reasons()
    return triples, stats
