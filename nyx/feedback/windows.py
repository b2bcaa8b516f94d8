"""Sliding windows over a ranked list, and how a reader's answer on one window scores (:mod:`nyx.feedback.preferences`
reads them in rank order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nyx.data.records import Record
from nyx.data.rejects import RecordError
from nyx.eval.answers import gold_answers, mc_correct, query_choices, token_f1


def sliding_windows(ranked_ids: Sequence[str], w: int = 1, s: int = 1) -> list[list[str]]:
    """Windows of ``w`` consecutive documents starting every ``s`` ranks.

    Every document is covered: when the last full window does not reach the end of the list, a final shorter
    window holds the rest; windows stop as soon as one reaches the end (no window is a tail of the previous
    one). ``[a, b, c, d, e]`` with ``w = 2, s = 2`` gives ``[a, b], [c, d], [e]``; with ``w = 3, s = 1``
    ``[a, b, c], [b, c, d], [c, d, e]``.
    """
    if w < 1 or s < 1:
        raise ValueError(f"window size and stride must be >= 1, got w={w}, s={s}")
    ids = list(ranked_ids)
    out: list[list[str]] = []
    for start in range(0, len(ids), s):
        out.append(ids[start : start + w])
        if start + w >= len(ids):
            break
    return out


def window_starts(n: int, w: int, s: int) -> list[int]:
    starts = []
    for start in range(0, n, s):
        starts.append(start)
        if start + w >= n:
            break
    return starts


@dataclass(frozen=True)
class WindowScore:
    """The reader's answer on one window and how it scored."""

    start: int  # 0-based rank of the window's first document
    doc_ids: tuple[str, ...]
    answer: str
    score: float
    correct: bool


def score_window_answer(
    answer: str, query: Record, mode: str = "auto", f1_threshold: float = 0.0
) -> tuple[float, bool]:
    """``(score, correct)`` of a reader answer: exact option match (1/0) for multiple choice, token F1 with the
    gold answers (correct when > ``f1_threshold``) for open QA. Raises :class:`RecordError` if the query cannot
    be scored in ``mode``."""
    try:
        mc = query_choices(query) if mode != "open" else None
    except ValueError as e:
        raise RecordError(str(e).split(": ", 1)[-1], record_id=query.id) from None
    if mode == "mc" and mc is None:
        raise RecordError("multiple-choice feedback needs 'choices' and 'correct_index'", record_id=query.id)
    if mc is not None:
        ok = mc_correct(answer, *mc)
        return (1.0 if ok else 0.0), ok
    golds = gold_answers(query)
    if not golds:
        raise RecordError("no gold answer to score open-QA feedback", record_id=query.id)
    f1 = token_f1(answer, golds)
    return f1, f1 > f1_threshold
