"""The generator interface: turns a chunk into question/answer pairs, distractors and reader answers.

Three implementations share it (see :func:`nyx.synth.generators.make_generator`): ``openai`` (any
OpenAI-compatible endpoint), ``local`` (a Qwen2.5-VL with transformers) and ``cloze`` (no model; an offline
stand-in for a real VLM).

The method's QA stage per chunk (:meth:`Generator.qa_for_chunk`): up to 5 self-contained pairs, extra
questions that need two or more images for multi-image chunks, then a refining pass that shortens answers to
at most 5 words and deletes pairs that need outside context. A final guard keeps only pairs whose answer has
at most ``max_answer_words`` words (image references are checked later, by the NyxQA rule filters).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nyx.data.records import Record
from nyx.synth.text import n_words


class GenerationError(RuntimeError):
    """One generation call failed for good (after retries); the caller counts it and goes on."""


class GeneratorUnavailable(RuntimeError):
    """The generator backend keeps failing (e.g. endpoint down, bad credentials): stop the batch."""


@dataclass
class QAPair:
    """One synthetic question with its short answer.

    ``image_refs`` are 1-based positions among the chunk's images that the question needs (they become
    part of the query); they are kept as the generator gave them so post-processing can drop pairs whose
    references do not resolve.
    """

    question: str
    answer: str
    image_refs: list[int] = field(default_factory=list)
    kind: str = "qa"  # "qa" | "multi_image"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "image_refs": list(self.image_refs),
            "kind": self.kind,
            "meta": dict(self.meta),
        }


class GeneratorStats:
    """Thread-safe counters (calls, cache hits, unparseable responses, ...), reported as a plain dict."""

    def __init__(self) -> None:
        self._c: Counter[str] = Counter()
        self._lock = threading.Lock()

    def inc(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._c[key] += n

    def get(self, key: str) -> int:
        with self._lock:
            return self._c[key]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._c.items()))


class Generator(ABC):
    """Synthesises QA data and reads retrieved documents.

    Subclasses implement :meth:`generate_qa`, :meth:`generate_multi_image_qa`, :meth:`refine`,
    :meth:`distractors` and :meth:`answer`. ``concurrency`` tells callers how many chunks may be processed
    in parallel threads (1 = call from one thread only).
    """

    kind: str = "base"
    concurrency: int = 1

    def __init__(self, max_qa_per_chunk: int = 5, max_answer_words: int = 5, multi_image_questions: int = 1):
        self.max_qa_per_chunk = max_qa_per_chunk
        self.max_answer_words = max_answer_words
        self.multi_image_questions = multi_image_questions
        self.stats = GeneratorStats()

    # -- the method's passes ---------------------------------------------------------------------------------

    @abstractmethod
    def generate_qa(self, chunk: Record) -> list[QAPair]:
        """Up to ``max_qa_per_chunk`` self-contained QA pairs about ``chunk`` (first pass)."""

    @abstractmethod
    def generate_multi_image_qa(self, chunk: Record) -> list[QAPair]:
        """Up to ``multi_image_questions`` extra pairs that need >= 2 of the chunk's images (multi-image
        chunks only; callers skip other chunks)."""

    @abstractmethod
    def refine(self, chunk: Record, pairs: list[QAPair]) -> list[QAPair]:
        """Second pass: shorten answers to <= ``max_answer_words`` words, delete pairs that need outside
        context."""

    @abstractmethod
    def distractors(self, question: str, answer: str, chunk: Record, n: int = 3) -> list[str]:
        """Up to ``n`` plausible wrong answers (fewer when none can be found; never the answer itself)."""

    @abstractmethod
    def answer(
        self, question: str | Record, context_records: Sequence[Record], choices: Sequence[str] | None = None
    ) -> str:
        """Answer ``question`` from ``context_records`` (RAG reading); with ``choices``, return one of them
        when possible. ``question`` may be a query record (its images then go to the reader too)."""

    # -- shared plumbing ---------------------------------------------------------------------------------------

    def prepare(self, corpus: Sequence[Record]) -> None:  # noqa: B027
        """Look at the whole corpus once before :meth:`distractors` (default: nothing to do)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (for asset metadata). Never holds secrets."""
        return {
            "kind": self.kind,
            "max_qa_per_chunk": self.max_qa_per_chunk,
            "max_answer_words": self.max_answer_words,
            "multi_image_questions": self.multi_image_questions,
        }

    def qa_for_chunk(self, chunk: Record) -> list[QAPair]:
        """All passes for one chunk: generate, multi-image extras, refine, final guard."""
        pairs = self.generate_qa(chunk)[: self.max_qa_per_chunk]
        if chunk.n_images >= 2 and self.multi_image_questions > 0:
            candidates = self.generate_multi_image_qa(chunk)
            extra = [p for p in candidates if len(set(p.image_refs)) >= 2]
            self.stats.inc("dropped_multi_image_with_fewer_than_2_images", len(candidates) - len(extra))
            for p in extra:
                p.kind = "multi_image"
            pairs += extra[: self.multi_image_questions]
        self.stats.inc("pairs_generated", len(pairs))
        if pairs:
            pairs = self.refine(chunk, pairs)
        return self._guard(chunk, pairs)

    def _guard(self, chunk: Record, pairs: list[QAPair]) -> list[QAPair]:
        out: list[QAPair] = []
        seen: set[tuple[str, str]] = set()
        for p in pairs:
            p.question, p.answer = p.question.strip(), p.answer.strip()
            if not p.question or not p.answer:
                self.stats.inc("dropped_empty")
            elif n_words(p.answer) > self.max_answer_words:
                self.stats.inc("dropped_long_answer")
            elif (p.question.lower(), p.answer.lower()) in seen:
                self.stats.inc("dropped_duplicate")
            else:
                seen.add((p.question.lower(), p.answer.lower()))
                out.append(p)
        self.stats.inc("pairs_kept", len(out))
        return out

    def close(self) -> None:  # noqa: B027
        """Release clients, caches and models."""

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
