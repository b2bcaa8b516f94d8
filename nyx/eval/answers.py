"""Answer metrics: SQuAD-style exact match and token F1, multiple-choice correctness, aggregates by modality.

* Normalisation (SQuAD): lower-case, strip punctuation, drop the articles a/an/the, collapse white space
  (:func:`nyx.synth.text.normalize_answer`, the one implementation the whole package uses).
* :func:`exact_match` / :func:`token_f1`: best over the gold answers. F1 of two empty token lists is 1, of one
  empty list 0 (as in the SQuAD script).
* :func:`mc_correct`: the prediction names the correct option, either by its text (after normalisation) or by
  its letter (``"B"``, ``"(B)"``, ``"B."``, ``"B) Paris"``, ``"Answer: B"``, ``"option b"``).
* :func:`answer_metrics`: ``accuracy`` (multiple-choice correctness where the query has options, exact match
  otherwise), ``em`` and ``f1`` (against the gold answer text), ``n``, and the same per modality group.

A query record carries its gold data in ``extra``: ``answer`` (a string or a list of strings), optionally
``choices`` (the options) and ``correct_index``, and ``modality`` (``text`` | ``image1`` | ``image2+``).
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nyx.data.records import Record
from nyx.synth.text import normalize_answer

__all__ = [
    "MODALITIES",
    "answer_metrics",
    "answer_tokens",
    "chosen_option",
    "exact_match",
    "gold_answers",
    "mc_correct",
    "option_letter",
    "query_choices",
    "query_modality",
    "score_prediction",
    "token_f1",
    "normalize_answer",
]

MODALITIES: tuple[str, ...] = ("text", "image1", "image2+")
UNKNOWN_MODALITY = "unknown"


def answer_tokens(s: str) -> list[str]:
    """The normalised tokens of an answer."""
    return normalize_answer(s).split()


def _as_list(gold: str | Iterable[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else [g for g in gold if isinstance(g, str)]


def exact_match(prediction: str, gold: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_list(gold)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str | Iterable[str]) -> float:
    """SQuAD token F1 (bag of normalised tokens), best over the gold answers (0.0 with no gold answer)."""
    pred = answer_tokens(prediction)
    return max((_f1(pred, answer_tokens(g)) for g in _as_list(gold)), default=0.0)


# ------------------------------------------------------------------------------------------------------------
# Multiple choice
# ------------------------------------------------------------------------------------------------------------

_LETTERS = string.ascii_uppercase
# An optional "answer:" / "the answer is" / "option" prefix (its presence allows a lower-case letter).
_PREFIX = re.compile(r"^\s*(?:(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)", re.I)
# A letter alone, or wrapped in brackets, or followed by ")", "." or ":" and optionally the option text.
_LETTER = re.compile(r"^[\(\[]?([A-Za-z])[\)\]]?(?:[.:)]\s*(.*))?\s*$", re.S)


def option_letter(prediction: str, n_options: int) -> int | None:
    """The option index a prediction names by letter (``"B"``, ``"(b)"``, ``"B."``, ``"Answer: B"``), else None.

    A bare lower-case letter without brackets or prefix is not read as a letter (``"a"`` is an article).
    Only letters of existing options (A.. for ``n_options``) count.
    """
    text = prediction.strip()
    m_prefix = _PREFIX.match(text)
    rest = text[m_prefix.end() :] if m_prefix else text
    m = _LETTER.match(rest.strip())
    if not m:
        return None
    letter = m.group(1)
    bracketed = rest.strip()[0] in "([" or rest.strip()[1:2] in (")", "]", ".", ":")
    if letter.islower() and not (m_prefix or bracketed):
        return None
    idx = _LETTERS.index(letter.upper())
    return idx if idx < n_options else None


def chosen_option(prediction: str, choices: Sequence[str]) -> int | None:
    """Which option the prediction names: by normalised text first, then by letter; None if neither."""
    pred = normalize_answer(prediction)
    for i, c in enumerate(choices):
        if pred and pred == normalize_answer(c):
            return i
    return option_letter(prediction, len(choices))


def mc_correct(prediction: str, choices: Sequence[str], correct_index: int) -> bool:
    """True when the prediction is the correct option's text (after normalisation) or its letter."""
    if not 0 <= correct_index < len(choices):
        raise ValueError(f"correct_index {correct_index} out of range for {len(choices)} choices")
    if normalize_answer(prediction) == normalize_answer(choices[correct_index]):
        return True
    return option_letter(prediction, len(choices)) == correct_index


# ------------------------------------------------------------------------------------------------------------
# Query records
# ------------------------------------------------------------------------------------------------------------


def query_choices(query: Record) -> tuple[list[str], int] | None:
    """``(choices, correct_index)`` of a multiple-choice query, None for an open question.

    Raises ``ValueError`` naming the query when the options are malformed.
    """
    choices = query.extra.get("choices")
    if not choices:
        return None
    idx = query.extra.get("correct_index")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"query {query.id!r}: 'choices' must be a list of strings")
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(choices):
        raise ValueError(f"query {query.id!r}: 'correct_index' {idx!r} is not an index into its {len(choices)} choices")
    return list(choices), idx


def gold_answers(query: Record) -> list[str]:
    """The gold answer strings: ``answer`` (string or list), ``answers``, else the correct option's text."""
    out: list[str] = []
    for key in ("answer", "answers"):
        value = query.extra.get(key)
        if value is not None:
            out += _as_list(value)
    if not out:
        mc = query_choices(query)
        if mc:
            out.append(mc[0][mc[1]])
    return [a for a in out if a.strip()]


def query_modality(query: Record) -> str:
    """The query's modality group (``extra['modality']``), ``unknown`` when it has none."""
    m = query.extra.get("modality")
    return m if isinstance(m, str) and m else UNKNOWN_MODALITY


def score_prediction(prediction: str, query: Record) -> dict[str, float]:
    """``{correct, em, f1}`` of one prediction. ``correct`` is multiple-choice correctness for a query with
    options, exact match otherwise. Raises ``ValueError`` naming the query if it has no gold answer."""
    golds = gold_answers(query)
    if not golds:
        raise ValueError(f"query {query.id!r} has no gold answer ('answer' or 'choices' + 'correct_index')")
    em = exact_match(prediction, golds)
    f1 = token_f1(prediction, golds)
    mc = query_choices(query)
    correct = float(mc_correct(prediction, *mc)) if mc else em
    return {"correct": correct, "em": em, "f1": f1}


def _mean_row(rows: list[dict[str, float]]) -> dict[str, Any]:
    n = len(rows)
    return {
        "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
        "em": sum(r["em"] for r in rows) / n if n else 0.0,
        "f1": sum(r["f1"] for r in rows) / n if n else 0.0,
        "n": n,
    }


def answer_metrics(
    predictions: Mapping[str, str],
    queries: Sequence[Record] | Mapping[str, Record],
) -> dict[str, Any]:
    """Aggregate answer metrics over ``queries``.

    Returns ``{accuracy, em, f1, n, n_missing, by_modality: {group: {accuracy, em, f1, n}}, per_query}``.
    A query without a prediction counts as answered with the empty string (``n_missing`` counts them), so a
    reader that fails is never rewarded by a smaller denominator. Groups follow :data:`MODALITIES` order
    (then ``unknown``); a group with no queries is left out.
    """
    qs = list(queries.values()) if isinstance(queries, Mapping) else list(queries)
    per_query: dict[str, dict[str, float]] = {}
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    n_missing = 0
    for q in qs:
        pred = predictions.get(q.id)
        if pred is None:
            n_missing += 1
            pred = ""
        row = score_prediction(pred, q)
        per_query[q.id] = row
        groups[query_modality(q)].append(row)
    order = [m for m in (*MODALITIES, UNKNOWN_MODALITY) if m in groups] + sorted(
        m for m in groups if m not in MODALITIES and m != UNKNOWN_MODALITY
    )
    return {
        **_mean_row(list(per_query.values())),
        "n_missing": n_missing,
        "by_modality": {m: _mean_row(groups[m]) for m in order},
        "per_query": per_query,
    }
