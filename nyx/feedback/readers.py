"""Readers: answer a query from a window of retrieved documents (the "VLM" of VLM feedback and of RAG).

* :class:`Reader` — the interface: ``answer(query, window) -> str``, plus a stable :attr:`Reader.reader_id`
  that names everything determining its answers (used in cache keys).
* :class:`GeneratorReader` — adapts any :class:`~nyx.synth.generators.base.Generator` (``openai``, ``local``):
  the method's setting, a generator VLM reading the documents, images included.
* :class:`MiniLMOptionReader` — the offline default. **A stand-in for a VLM reader, not a VLM**: it reads only
  the text of the window (images are ignored) and cannot generate. For a multiple-choice query it scores each
  option against the window's sentences with the pretrained all-MiniLM-L6-v2 plus a lexical term and returns
  the best option's text; for an open question it returns the window sentence closest to the question
  (extractive). It answers multiple-choice questions well above chance when the window holds the right
  document and near chance otherwise, which is what feedback collection needs to be exercised end to end
  on a CPU.
* :class:`CachedReader` — wraps any reader with an on-disk answer cache keyed by (reader id, query, window
  ids), so feedback collection is resumable and never asks the same question twice.
"""

from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ConfigDict

from nyx.data.records import Record
from nyx.eval.answers import answer_tokens, query_choices
from nyx.synth.generators.cache import ResponseCache, cache_key
from nyx.synth.text import split_sentences
from nyx.utils.config import ConfigModel

if TYPE_CHECKING:  # pragma: no cover
    from nyx.synth.generators.base import Generator

__all__ = [
    "CachedReader",
    "GeneratorReader",
    "MiniLMOptionReader",
    "OptionReaderConfig",
    "Reader",
    "as_reader",
    "reader_cache_key",
]


class Reader(ABC):
    """Answers a query from a window of documents (possibly empty: answering without retrieval)."""

    @property
    @abstractmethod
    def reader_id(self) -> str:
        """A short stable id of everything that determines the answers (model, prompts, settings)."""

    @abstractmethod
    def answer(self, query: Record, window: Sequence[Record]) -> str:
        """The answer to ``query`` given the documents of ``window`` (in rank order).

        For a multiple-choice query (``extra['choices']``) a reader should return one option's text.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-able description for reports and asset metadata (``note`` says what the reader really is)."""
        return {"reader": type(self).__name__, "reader_id": self.reader_id}


# ------------------------------------------------------------------------------------------------------------
# A generator VLM as reader
# ------------------------------------------------------------------------------------------------------------


class GeneratorReader(Reader):
    """Reads with a :class:`~nyx.synth.generators.base.Generator` (``openai`` or ``local``): the query record
    (with its images) and the window's documents go to ``generator.answer``, with the options if any."""

    def __init__(self, generator: Generator):
        self.generator = generator
        self._id = f"generator-{generator.kind}-{cache_key(generator.describe())[:16]}"

    @property
    def reader_id(self) -> str:
        return self._id

    def answer(self, query: Record, window: Sequence[Record]) -> str:
        mc = query_choices(query)
        return self.generator.answer(query, list(window), choices=mc[0] if mc else None)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "generator": self.generator.describe(),
            "note": f"generator VLM reader ({self.generator.kind}); sees text and images",
        }


def as_reader(reader_or_generator: Reader | Generator) -> Reader:
    """A :class:`Reader` from a reader (returned as is) or a generator (wrapped in :class:`GeneratorReader`)."""
    if isinstance(reader_or_generator, Reader):
        return reader_or_generator
    from nyx.synth.generators.base import Generator

    if isinstance(reader_or_generator, Generator):
        return GeneratorReader(reader_or_generator)
    raise TypeError(f"expected a Reader or a Generator, got {type(reader_or_generator).__name__}")


# ------------------------------------------------------------------------------------------------------------
# The offline stand-in
# ------------------------------------------------------------------------------------------------------------

_BLANK = re.compile(r"_{2,}|\[MASK\]|\[BLANK\]|<blank>", re.I)
# An instruction before a cloze sentence ("Fill in the blank, using the image shown: ..."): not evidence.
_CLOZE_INSTRUCTION = re.compile(r"^\s*fill in the blanks?[^:]*:\s*", re.I)
# Function words that carry no evidence in the lexical term (normalised answers have no articles already).
_STOP = frozenset(
    "of in on at to for from by with and or is are was were be been it its this that these those as into "
    "what which who whom whose when where why how does do did".split()
)


class OptionReaderConfig(ConfigModel):
    """Settings of :class:`MiniLMOptionReader`.

    ``score(option) = embedding_weight * max_u cos(hypothesis, u) + lexical_weight * lexical_support(option)``
    over the window's evidence units ``u`` (sentences and their clauses, :func:`evidence_units`). The hypothesis
    is the cloze sentence with the option filled in when the question has a blank (``___``), else
    ``question + " " + option``; :func:`lexical_support` rewards an option found in a unit that also holds the
    question's words.

    Measured on 28 hand-written 4-option questions with their gold document (16 where only the right option
    occurs in the document, 12 where every option does; see tests/nyx/feedback/test_feedback.py): embedding only 25/28,
    lexical only 22/28 (it fails when every option occurs), the sum 25/28 for any lexical weight in 0.25-2.
    Clause units matter most (embedding over whole sentences only: 18/28, 3/12 on the hard half). The sum
    is the default because it was never worse than the better single term (with whole-sentence units the
    lexical term lifted the easy half from 15/16 to 16/16). With a wrong document or an empty window,
    accuracy stays near chance (0.17-0.44 on these sets).
    """

    model_config = ConfigDict(frozen=True)

    embedding_weight: float = 1.0
    lexical_weight: float = 1.0
    device: str = "cpu"
    batch_size: int = 64
    max_cached_docs: int = 4096  # documents whose sentence embeddings stay in memory


class MiniLMOptionReader(Reader):
    """Offline **stand-in for a VLM reader**: text only (it ignores every image), no generation.

    Multiple choice: returns the text of the option with the highest evidence score in the window (see
    :class:`OptionReaderConfig`); ties (e.g. an empty window, or one with no text) are broken by a stable hash
    of (query id, option), so without evidence it picks like chance and has no bias towards option A.
    Open questions: returns the window sentence most similar to the question (an extractive guess; its
    token F1 with the gold answer is what open-QA feedback then scores).
    """

    def __init__(self, config: OptionReaderConfig | None = None, model: Any = None):
        self.config = config or OptionReaderConfig()
        self._model = model
        self._doc_cache: OrderedDict[tuple[str, str], tuple[list[str], np.ndarray]] = OrderedDict()
        # a query is read against many windows: its option statements are embedded once
        self._hyp_cache: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()

    @property
    def reader_id(self) -> str:
        c = self.config
        return f"minilm-option-v1-e{c.embedding_weight:g}-l{c.lexical_weight:g}"

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "config": {"embedding_weight": self.config.embedding_weight, "lexical_weight": self.config.lexical_weight},
            "note": "offline stand-in for a VLM reader: all-MiniLM-L6-v2 option scoring over the window's "
            "text only (images ignored); not a generator",
        }

    # -- model -----------------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            from nyx.retrieval.minilm import MiniLMEncoder  # shares the process-wide loaded model

            self._model = MiniLMEncoder(device=self.config.device).model
        return self._model

    def _embed(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32).reshape(len(texts), -1)

    def _units(self, doc: Record) -> tuple[list[str], np.ndarray]:
        """A document's evidence units (sentences and their clauses) and their embeddings, memoised per
        document id and text."""
        text = doc.text
        key = (doc.id, hashlib.sha1(text.encode("utf-8")).hexdigest())
        hit = self._doc_cache.get(key)
        if hit is not None:
            self._doc_cache.move_to_end(key)
            return hit
        units = evidence_units(text)
        value = (units, self._embed(units) if units else np.zeros((0, 1), dtype=np.float32))
        self._doc_cache[key] = value
        while len(self._doc_cache) > self.config.max_cached_docs:
            self._doc_cache.popitem(last=False)
        return value

    def _window(self, window: Sequence[Record]) -> tuple[list[str], np.ndarray | None]:
        units: list[str] = []
        embs: list[np.ndarray] = []
        for doc in window:
            u, e = self._units(doc)
            if u:
                units += u
                embs.append(e)
        return units, (np.concatenate(embs) if embs else None)

    # -- scoring ---------------------------------------------------------------------------------------------
    @staticmethod
    def hypothesis(question: str, option: str) -> str:
        """The statement scored for one option: the cloze sentence filled in, or question + option."""
        if _BLANK.search(question):
            return _BLANK.sub(option, _CLOZE_INSTRUCTION.sub("", question), count=1)
        return f"{question.strip()} {option.strip()}"

    def option_scores(self, query: Record, choices: Sequence[str], window: Sequence[Record]) -> np.ndarray:
        """The evidence score of each option (higher = better supported by the window's text)."""
        units, emb = self._window(window)
        scores = np.zeros(len(choices), dtype=np.float64)
        if emb is None:
            return scores
        if self.config.embedding_weight:
            hyp = self._hypotheses(query.text, choices)
            scores += self.config.embedding_weight * (hyp @ emb.T).max(axis=1)
        if self.config.lexical_weight:
            question = content_stems(_BLANK.sub(" ", _CLOZE_INSTRUCTION.sub("", query.text)))
            unit_stems = [content_stems(u) for u in units]
            scores += self.config.lexical_weight * np.array([lexical_support(c, question, unit_stems) for c in choices])
        return scores

    def _hypotheses(self, question: str, choices: Sequence[str]) -> np.ndarray:
        key = (question, tuple(choices))
        hit = self._hyp_cache.get(key)
        if hit is None:
            hit = self._hyp_cache[key] = self._embed([self.hypothesis(question, c) for c in choices])
            while len(self._hyp_cache) > self.config.max_cached_docs:
                self._hyp_cache.popitem(last=False)
        else:
            self._hyp_cache.move_to_end(key)
        return hit

    def answer(self, query: Record, window: Sequence[Record]) -> str:
        mc = query_choices(query)
        if mc is None:
            return self._extract(query, window)
        choices = mc[0]
        scores = self.option_scores(query, choices, window)

        def tie_break(i: int) -> int:
            return int(hashlib.sha1(f"{query.id}\x00{choices[i]}".encode()).hexdigest()[:8], 16)

        best = max(range(len(choices)), key=lambda i: (round(float(scores[i]), 6), tie_break(i)))
        return choices[best]

    def _extract(self, query: Record, window: Sequence[Record]) -> str:
        units, emb = self._window(window)
        if emb is None or not query.text.strip():
            return ""
        q = self._embed([query.text])[0]
        return units[int(np.argmax(emb @ q))]


_CLAUSE_SPLIT = re.compile(r"[,;:()]\s*|\s+(?:and|but|while|whereas|after|before|then|which|who)\s+", re.I)


def evidence_units(text: str) -> list[str]:
    """The sentences of ``text`` and, for sentences with several clauses, each clause (two words or more).

    Clauses let an option be matched to the part of a sentence that is about the question (``"born in Lyon,
    ... opened her clinic in Marseille"``): whole sentences mention every option equally.
    """
    units: list[str] = []
    for a, b in split_sentences(text):
        sent = text[a:b]
        units.append(sent)
        clauses = [c.strip() for c in _CLAUSE_SPLIT.split(sent) if c and len(c.split()) >= 2]
        if len(clauses) > 1:
            units += [c for c in clauses if c != sent]
    return list(dict.fromkeys(units))


def _stem(token: str) -> str:
    """A crude suffix stripper (no stemmer library is installed): opened -> open, reefs -> reef."""
    for suffix in ("ing", "ed", "es", "s"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


def content_stems(text: str) -> set[str]:
    """Normalised, stemmed tokens of ``text`` without function words."""
    return {_stem(t) for t in answer_tokens(text) if t not in _STOP}


def lexical_support(option: str, question: set[str], units: Sequence[set[str]]) -> float:
    """How well one evidence unit supports ``option``: max over units of the share of the option's content
    stems in the unit, times ``(1 + share of the question's content stems in the unit) / 2`` (an option that
    occurs next to the question's words beats one that occurs elsewhere)."""
    opt = content_stems(option) or {_stem(t) for t in answer_tokens(option)}
    if not opt:
        return 0.0
    best = 0.0
    for u in units:
        cov = len(opt & u) / len(opt)
        if cov:
            q = len(question & u) / len(question) if question else 0.0
            best = max(best, cov * (1.0 + q) / 2.0)
    return best


# ------------------------------------------------------------------------------------------------------------
# Disk cache
# ------------------------------------------------------------------------------------------------------------


def reader_cache_key(reader_id: str, query: Record, window: Sequence[Record]) -> str:
    """sha256 of (reader id, the query's id, text, images and options, the window's document ids in order)."""
    return cache_key(
        {
            "reader": reader_id,
            "query": {
                "id": query.id,
                "text": query.text,
                "images": query.images,
                "choices": query.extra.get("choices"),
            },
            "window": [d.id for d in window],
        }
    )


class CachedReader(Reader):
    """Any reader with its answers stored on disk (SQLite, see :class:`~nyx.synth.generators.cache.ResponseCache`).

    ``hits`` and ``misses`` count lookups in this process. The cache is shared safely by threads and processes.
    """

    def __init__(self, reader: Reader, cache_dir: str | os.PathLike):
        self.reader = reader
        self.cache = ResponseCache(cache_dir)
        self.hits = 0
        self.misses = 0

    @property
    def reader_id(self) -> str:
        return self.reader.reader_id

    def describe(self) -> dict[str, Any]:
        return self.reader.describe()

    def answer(self, query: Record, window: Sequence[Record]) -> str:
        key = reader_cache_key(self.reader_id, query, window)
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        answer = self.reader.answer(query, window)
        self.cache.put(key, answer, model=self.reader_id, purpose="reader")
        return answer

    def close(self) -> None:
        self.cache.close()
