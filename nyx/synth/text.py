"""Small text helpers shared by chunking, generators and post-processing.

Sentence splitting is a rule-based splitter (no model, no download): it breaks after ``.``, ``!``, ``?`` (with
any closing quotes or brackets) when white space and a non-lower-case character follow, never after common
abbreviations or single-letter initials, and always at blank lines. Good enough to keep chunk boundaries
at sentence ends; a sentence it misses is still cut by tokens when it exceeds the budget.
"""

from __future__ import annotations

import re
import string

_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al fig figs no nos vol pp ca approx inc ltd co corp dept
    est jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k a.m p.m""".split()
)
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)|\n[ \t]*\n")
_WORD_BEFORE = re.compile(r"([\w.]+)[.!?]*[\"'\u201d\u2019)\]]*$")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` in ``text``, stripped of surrounding white space, in order."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end = m.end()
        if m.group().startswith("."):
            before = _WORD_BEFORE.search(text, max(0, m.start() - 40), m.end())
            word = before.group(1).lower().rstrip(".") if before else ""
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        nxt = text[end:].lstrip()
        if nxt and nxt[0].islower() and not m.group().startswith("\n"):
            continue
        _append_span(text, start, end, spans)
        start = end
    _append_span(text, start, len(text), spans)
    return spans


def _append_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    seg = text[start:end]
    stripped = seg.strip()
    if stripped:
        s = start + (len(seg) - len(seg.lstrip()))
        spans.append((s, s + len(stripped)))


def word_spans(text: str) -> list[tuple[int, int]]:
    """Spans of white-space separated words."""
    return [m.span() for m in re.finditer(r"\S+", text)]


_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD-style normalisation: lower-case, no punctuation, no articles a/an/the, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def n_words(s: str) -> int:
    return len(s.split())


CONTEXT_REFERENCE = re.compile(
    r"\b(?:the|this|that|above|given|following|provided|aforementioned)\s+"
    r"(?:text|passage|article|author|authors|document|paragraph|excerpt|context|writer|narrator|blog\s+post|post)\b"
    r"|\b(?:mentioned|described|stated|discussed)\s+above\b|\bin\s+the\s+above\b",
    re.I,
)
"""Phrases that make a question depend on an unseen context ("the passage", "the author", ...)."""
