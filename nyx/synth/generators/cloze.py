"""The ``cloze`` generator: model-free question synthesis, the offline default of the sample pipeline.

**This is a stand-in for a real VLM, not an implementation of the paper's QA generation.** It lets the
whole pipeline (NyxQA construction, mining, training, feedback, evaluation) run offline and
deterministically, with questions that are answerable from exactly one chunk. In the spirit of
inverse-cloze pre-training, a question is a sentence of the chunk with one short span masked:

    Fill in the blank: The bridge was painted ____ in 1937.   ->  answer "orange"

The masked span (the answer) has at most 5 words; numbers are preferred, then capitalised names, then
colour words. With probability ``image_question_prob`` the question carries the chunk's image nearest to
its sentence (so the query is mixed-modal); multi-image chunks get one extra question with the two nearest
images. Everything is deterministic given the seed and the chunk id (not the processing order).

Distractors are spans of the same type (number / name / colour) taken from OTHER chunks of the corpus
(:meth:`ClozeGenerator.prepare` indexes them), preferring the answer's word count; numbers prefer the same
shape (a year for a year, a percentage for a percentage, the same number of digits), then nearby values. The reader
(:meth:`ClozeGenerator.answer`) finds the masked sentence in the given documents
and reads the span back, so with the right document it answers correctly and with a wrong one it usually
does not: a cheap, honest offline reader for the feedback and evaluation stages.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nyx.data.records import Record
from nyx.synth.generators.base import Generator, QAPair
from nyx.synth.text import CONTEXT_REFERENCE, n_words, normalize_answer, split_sentences

BLANK = "____"
PREFIX = "Fill in the blank: "
PREFIX_IMAGE = "Fill in the blank, using the image shown: "
PREFIX_IMAGES = "Fill in the blank, using the images shown: "
_PREFIX_RE = re.compile(r"^\s*Fill in the blank[^:]*:\s*", re.I)

COLOURS = frozenset(
    "red orange yellow green blue purple violet pink brown black white grey gray gold golden silver beige "
    "turquoise crimson scarlet navy maroon teal cyan magenta ivory indigo amber".split()
)
_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?(?![\w])")
_NAME_WORD = r"[A-Z][\w'\u2019&.-]*[\w]"
_NAME = re.compile(rf"\b{_NAME_WORD}(?:(?:\s+(?:of|de|da|del|van|von|der|la|le|y))?\s+{_NAME_WORD})*")
_STOP_CAPS = frozenset(
    "The A An In On At It Its This That These Those He She They We I You His Her Their Our My But And Or If "
    "When While As For From To By With After Before During Since Then There Here What Which Who How Why "
    "Where Also So Yet Some Many Most All Each Every No Not One".split()
)
PRIORITY = {"number": 0, "name": 1, "colour": 2}
MAX_SPAN_WORDS = 5


def _rng(*keys: Any) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, keys)).encode("utf-8")).hexdigest()
    return random.Random(int(digest[:16], 16))


def span_type(span: str) -> str:
    """``number``, ``colour``, ``name`` or ``other``."""
    s = span.strip()
    if _NUMBER.fullmatch(s):
        return "number"
    if s.lower() in COLOURS:
        return "colour"
    words = s.split()
    if words and all(
        w[0].isupper() or w in ("of", "de", "da", "del", "van", "von", "der", "la", "le", "y") for w in words
    ):
        return "name"
    return "other"


def find_spans(sentence: str) -> list[tuple[int, int, str]]:
    """Candidate answer spans ``(start, end, type)`` in a sentence, at most 5 words each."""
    out: list[tuple[int, int, str]] = []
    taken: list[tuple[int, int]] = []

    def add(s: int, e: int, t: str) -> None:
        if any(s < te and ts < e for ts, te in taken):
            return
        taken.append((s, e))
        out.append((s, e, t))

    for m in _NUMBER.finditer(sentence):
        add(m.start(), m.end(), "number")
    for m in _NAME.finditer(sentence):
        words = m.group().split()
        s = m.start()
        while words and words[0] in _STOP_CAPS:  # "The Golden Gate" -> "Golden Gate"
            s = sentence.index(words[1], s + len(words[0])) if len(words) > 1 else m.end()
            words = words[1:]
        if not words or len(words) > MAX_SPAN_WORDS:
            continue
        if s == len(sentence) - len(sentence.lstrip()) and len(words) == 1:
            continue  # a single capitalised word at sentence start is no evidence of a name
        add(s, m.end(), "name")
    for m in re.finditer(r"\b[a-zA-Z]+\b", sentence):
        if m.group().lower() in COLOURS:
            add(m.start(), m.end(), "colour")
    return out


@dataclass(frozen=True)
class _Candidate:
    sentence: str
    start: int
    end: int
    type: str
    part: int  # index of the text part in the chunk's content

    @property
    def answer(self) -> str:
        return self.sentence[self.start : self.end]

    def question(self, prefix: str) -> str:
        return prefix + self.sentence[: self.start] + BLANK + self.sentence[self.end :]


class ClozeGenerator(Generator):
    """Model-free cloze QA (see the module docstring: a stand-in for a real VLM)."""

    kind = "cloze"

    def __init__(self, seed: int = 0, image_question_prob: float = 0.5, min_sentence_words: int = 6, **kwargs: Any):
        super().__init__(**kwargs)
        self.seed = seed
        self.image_question_prob = image_question_prob
        self.min_sentence_words = min_sentence_words
        self._pool: dict[str, list[tuple[str, str, frozenset[str]]]] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "seed": self.seed,
            "image_question_prob": self.image_question_prob,
            "min_sentence_words": self.min_sentence_words,
            "note": "cloze stand-in for a VLM question generator",
        }

    # -- candidates ------------------------------------------------------------------------------------------------

    def _sentences(self, chunk: Record) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for i, p in enumerate(chunk.content):
            if p.type == "text" and p.text:
                out.extend((i, p.text[s:e]) for s, e in split_sentences(p.text))
        return out

    def _candidates(self, chunk: Record) -> list[_Candidate]:
        """One candidate per usable sentence: its best span by type priority (ties broken by the seed)."""
        rng = _rng(self.seed, chunk.id, "spans")
        out = []
        for part, sent in self._sentences(chunk):
            if n_words(sent) < self.min_sentence_words:
                continue
            spans = [s for s in find_spans(sent) if n_words(sent) - n_words(sent[s[0] : s[1]]) >= 4]
            if not spans:
                continue
            best = min(PRIORITY[t] for _, _, t in spans)
            s, e, t = rng.choice([x for x in spans if PRIORITY[x[2]] == best])
            out.append(_Candidate(sent, s, e, t, part))
        return out

    def _select(self, chunk: Record) -> tuple[list[_Candidate], list[_Candidate]]:
        """(chosen for the first pass, the rest), in a seed-determined order with number spans first."""
        cands = self._candidates(chunk)
        _rng(self.seed, chunk.id, "order").shuffle(cands)
        cands.sort(key=lambda c: PRIORITY[c.type])
        return cands[: self.max_qa_per_chunk], cands[self.max_qa_per_chunk :]

    @staticmethod
    def _nearest_images(chunk: Record, part: int, k: int) -> list[int]:
        """1-based numbers of the ``k`` images standing closest to content position ``part``."""
        positions = [i for i, p in enumerate(chunk.content) if p.type == "image"]
        ranked = sorted(range(len(positions)), key=lambda j: (abs(positions[j] - part), j))
        return sorted(j + 1 for j in ranked[:k])

    # -- the passes --------------------------------------------------------------------------------------------------

    def generate_qa(self, chunk: Record) -> list[QAPair]:
        chosen, _ = self._select(chunk)
        rng = _rng(self.seed, chunk.id, "images")
        pairs = []
        for c in chosen:
            refs: list[int] = []
            if chunk.n_images and rng.random() < self.image_question_prob:
                refs = self._nearest_images(chunk, c.part, 1)
            q = c.question(PREFIX_IMAGE if refs else PREFIX)
            pairs.append(QAPair(question=q, answer=c.answer, image_refs=refs, meta={"span_type": c.type}))
        return pairs

    def generate_multi_image_qa(self, chunk: Record) -> list[QAPair]:
        if chunk.n_images < 2 or self.multi_image_questions < 1:
            return []
        chosen, rest = self._select(chunk)
        pool = rest or chosen
        if not pool:
            return []
        rng = _rng(self.seed, chunk.id, "multi")
        picks = rng.sample(pool, min(self.multi_image_questions, len(pool)))
        return [
            QAPair(
                question=c.question(PREFIX_IMAGES),
                answer=c.answer,
                image_refs=self._nearest_images(chunk, c.part, 2),
                kind="multi_image",
                meta={"span_type": c.type},
            )
            for c in picks
        ]

    def refine(self, chunk: Record, pairs: list[QAPair]) -> list[QAPair]:
        """Rule-based second pass: delete questions that point to an unseen context; answers are short already."""
        kept = [p for p in pairs if not CONTEXT_REFERENCE.search(p.question)]
        self.stats.inc("refine_deleted", len(pairs) - len(kept))
        return kept

    # -- distractors ------------------------------------------------------------------------------------------------

    def prepare(self, corpus: Sequence[Record]) -> None:
        """Index every candidate span of the corpus by type, with the chunks it occurs in."""
        by_type: dict[str, dict[str, tuple[str, set[str]]]] = {}
        for chunk in corpus:
            for _, sent in self._sentences(chunk):
                for s, e, t in find_spans(sent):
                    surface = sent[s:e]
                    norm = normalize_answer(surface)
                    if not norm:
                        continue
                    entry = by_type.setdefault(t, {}).setdefault(norm, (surface, set()))
                    entry[1].add(chunk.id)
        self._pool = {
            t: [(norm, surface, frozenset(ids)) for norm, (surface, ids) in sorted(d.items())]
            for t, d in by_type.items()
        }

    def distractors(self, question: str, answer: str, chunk: Record, n: int = 3) -> list[str]:
        if self._pool is None:
            raise RuntimeError("ClozeGenerator.distractors needs prepare(corpus) first (it draws from other chunks)")
        t = span_type(answer)
        rng = _rng(self.seed, chunk.id, question, "distractors")
        chosen: list[str] = []
        seen = {normalize_answer(answer)}

        def take(cands: list[str]) -> None:
            cands = list(cands)
            rng.shuffle(cands)
            for c in cands:
                if len(chosen) >= n:
                    return
                norm = normalize_answer(c)
                if norm and norm not in seen:
                    seen.add(norm)
                    chosen.append(c)

        same = [surface for norm, surface, ids in self._pool.get(t, []) if chunk.id not in ids]
        if t == "number":  # a year for a year, a percentage for a percentage, similar magnitude
            shape = _number_shape(answer)
            take([c for c in same if _number_shape(c) == shape])
            take(_nearby_numbers(answer))
        width = n_words(answer)
        take([c for c in same if n_words(c) == width])
        take(same)
        if len(chosen) < n:  # any other type, as a last resort
            take(
                [s for tt, items in sorted(self._pool.items()) if tt != t for _, s, ids in items if chunk.id not in ids]
            )
        return chosen[:n]

    # -- reading -------------------------------------------------------------------------------------------------------

    def answer(
        self, question: str | Record, context_records: Sequence[Record], choices: Sequence[str] | None = None
    ) -> str:
        """Read the masked span back from the first document that contains the cloze sentence.

        With ``choices``: the choice equal to the span read; otherwise the first choice that occurs in the
        documents; otherwise the first choice. Without choices and no match: ``""``.
        """
        q = question.text if isinstance(question, Record) else question
        contexts = [" ".join(d.text.split()) for d in context_records]
        span = _read_cloze(q, contexts) if BLANK in q else None
        if not choices:
            return span or ""
        if span is not None:
            for c in choices:
                if normalize_answer(c) == normalize_answer(span):
                    return c
        joined = normalize_answer(" ".join(contexts))
        for c in choices:
            norm = normalize_answer(c)
            if norm and re.search(rf"\b{re.escape(norm)}\b", joined):
                return c
        return choices[0]


def _read_cloze(question: str, contexts: Sequence[str], window: int = 6) -> str | None:
    body = _PREFIX_RE.sub("", question, count=1)
    before, _, after = body.partition(BLANK)
    b_words, a_words = before.split()[-window:], after.split()[:window]
    pattern = r"\s+".join(map(re.escape, b_words)) + r"\s*" if b_words else ""
    pattern += r"(.{1,80}?)"
    pattern += r"\s*" + r"\s+".join(map(re.escape, a_words)) if a_words else r"\s*$"
    rx = re.compile(pattern)
    for ctx in contexts:
        m = rx.search(ctx)
        if m and n_words(m.group(1)) <= MAX_SPAN_WORDS:
            return m.group(1).strip()
    return None


def _number_shape(s: str) -> tuple[bool, bool, bool, int]:
    """(year?, percentage?, decimals?, digits of the integer part) of a number span."""
    s = s.strip()
    core = s.rstrip("%").replace(",", "")
    whole = core.split(".")[0]
    is_year = "." not in core and len(whole) == 4 and 1000 <= int(whole or 0) <= 2100 and "," not in s
    return is_year, s.endswith("%"), "." in core, len(whole)


def _nearby_numbers(answer: str) -> list[str]:
    """Plausible wrong numbers near ``answer``, written in the same style (commas, decimals, %)."""
    s = answer.strip()
    pct = s.endswith("%")
    core = s.rstrip("%").replace(",", "")
    try:
        value = float(core)
    except ValueError:
        return []
    decimals = len(core.split(".")[1]) if "." in core else 0
    if decimals == 0 and 1000 <= value <= 2100:  # a year
        values = [value + d for d in (-3, -2, -1, 1, 2, 3, 5, 10)]
    else:
        values = [value * f for f in (0.5, 0.75, 1.5, 2, 3)] + [value + d for d in (-2, -1, 1, 2, 10)]
    out = []
    for v in values:
        if v < 0 or (decimals == 0 and v != int(v)):
            continue
        text = f"{v:,.{decimals}f}" if "," in s else f"{v:.{decimals}f}"
        out.append(text + ("%" if pct else ""))
    return [o for o in out if o != s]
