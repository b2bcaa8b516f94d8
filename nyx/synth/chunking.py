"""Cut interleaved documents into retrieval chunks of at most ``max_tokens`` tokens.

The NyxQA recipe (arXiv 2510.17354, stage 2): chunks of at most 200 tokens where each image counts as one
token, every image travels with the chunk in which it stands, chunks with more than 5 images are dropped,
and every chunk image must decode. The research code also drops the last partial chunk of each document;
here that is :attr:`ChunkingConfig.drop_last_partial` (off by default: the paper does not mention it).

Text is packed sentence by sentence (a sentence never straddles two chunks unless it alone exceeds the
budget, in which case it is cut by tokens). Token counts are exact: each stored text part is counted as it
is stored, with the counter given (by default the backbone's own tokenizer).

Chunk ids are ``<doc id>#c<ordinal>``, the ordinal counted before any chunk is dropped, so a rerun (or a run
with other drop settings) gives every surviving chunk the same id.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from nyx.data.images import ImageConfig, verify_image
from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.synth.text import split_sentences, word_spans
from nyx.utils.config import ConfigModel

log = logging.getLogger(__name__)

Span = tuple[int, int]


# --------------------------------------------------------------------------------------------------------------
# Token counting
# --------------------------------------------------------------------------------------------------------------


class TokenCounter(ABC):
    """Counts the tokens of a text and cuts an over-long text into pieces that fit a budget."""

    name: str = "tokens"

    @abstractmethod
    def count(self, text: str) -> int:
        """Number of tokens of ``text`` (no special tokens)."""

    def __call__(self, text: str) -> int:
        return self.count(text)

    def split(self, text: str, max_tokens: int) -> list[Span]:
        """Spans of ``text`` that each count at most ``max_tokens``, covering all its words in order.

        The generic version cuts between words (or inside a word that alone is too long) by binary search on
        :meth:`count`; tokenizers with offsets override it with a direct cut.
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        words = word_spans(text)
        out: list[Span] = []
        i = 0
        while i < len(words):
            start = words[i][0]
            lo, hi = i + 1, len(words)  # largest j with count(text[start:words[j-1].end]) <= max
            if self.count(text[start : words[i][1]]) > max_tokens:
                out.extend(self._split_chars(text, words[i], max_tokens))
                i += 1
                continue
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count(text[start : words[mid - 1][1]]) <= max_tokens:
                    lo = mid
                else:
                    hi = mid - 1
            out.append((start, words[lo - 1][1]))
            i = lo
        return out

    def _split_chars(self, text: str, span: Span, max_tokens: int) -> list[Span]:
        out: list[Span] = []
        s, end = span
        while s < end:
            lo, hi = s + 1, end
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count(text[s:mid]) <= max_tokens:
                    lo = mid
                else:
                    hi = mid - 1
            out.append((s, lo))
            s = lo
        return out


class WhitespaceTokenCounter(TokenCounter):
    """One token per white-space separated word. For tests and quick looks only: real budgets need the
    backbone's tokenizer (:class:`HFTokenCounter`)."""

    name = "whitespace"

    def count(self, text: str) -> int:
        return len(text.split())


class CallableTokenCounter(TokenCounter):
    """Adapts any ``str -> int`` callable (e.g. ``lambda s: len(tok.encode(s))``)."""

    def __init__(self, fn: Callable[[str], int], name: str = "callable"):
        self._fn = fn
        self.name = name

    def count(self, text: str) -> int:
        return int(self._fn(text))


class HFTokenCounter(TokenCounter):
    """Counts with a Hugging Face tokenizer (the backbone's, so the budget matches what the model sees)."""

    def __init__(self, tokenizer: Any, name: str | None = None):
        self.tokenizer = tokenizer
        self.name = name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> HFTokenCounter:
        """Load the tokenizer of a model folder (hub layout) or a tokenizer folder; offline."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(os.fspath(path)), name=str(path))

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def split(self, text: str, max_tokens: int) -> list[Span]:
        if not getattr(self.tokenizer, "is_fast", False):
            return super().split(text, max_tokens)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [o for o in enc["offset_mapping"] if o[1] > o[0]]
        out: list[Span] = []
        for i in range(0, len(offsets), max_tokens):
            group = offsets[i : i + max_tokens]
            s, e = group[0][0], group[-1][1]
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if s == e:
                continue
            # Re-tokenising a cut piece can differ by a token at its edges; fall back to the exact search.
            if self.count(text[s:e]) <= max_tokens:
                out.append((s, e))
            else:
                out.extend((s + a, s + b) for a, b in super().split(text[s:e], max_tokens))
        return out


def load_token_counter(spec: str | os.PathLike | Callable[[str], int] | TokenCounter | None = None) -> TokenCounter:
    """A :class:`TokenCounter` from a spec.

    - ``None``: the backbone's tokenizer (the tiny offline profile's model folder);
    - ``"whitespace"``: :class:`WhitespaceTokenCounter` (tests only);
    - a path: a tokenizer or model folder;
    - a tokenizer object, a ``str -> int`` callable, or a ready counter.
    """
    if isinstance(spec, TokenCounter):
        return spec
    if spec is None:
        from nyx.model.tiny import ensure_tiny_model

        return HFTokenCounter.from_pretrained(ensure_tiny_model())
    if isinstance(spec, (str, Path)):
        if str(spec) == "whitespace":
            return WhitespaceTokenCounter()
        return HFTokenCounter.from_pretrained(spec)
    if hasattr(spec, "convert_tokens_to_ids"):  # a transformers tokenizer
        return HFTokenCounter(spec)
    if callable(spec):
        return CallableTokenCounter(spec)
    raise TypeError(f"cannot make a token counter from {type(spec).__name__}")


# --------------------------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------------------------


class ChunkingConfig(ConfigModel):
    """Settings of :func:`chunk_documents` (defaults: the paper's)."""

    max_tokens: int = 200
    """Budget per chunk: text tokens plus one per image."""
    max_images: int = 5
    """Chunks with more images than this are dropped."""
    drop_last_partial: bool = False
    """Drop the last chunk of every document that yields more than one chunk (what the research code does
    with the tail remainder). A one-chunk document is kept either way."""
    verify_images: bool = True
    """Fully decode every chunk image; a chunk with an image that fails goes to the rejects."""
    tokenizer: str | None = None
    """Tokenizer for :func:`load_token_counter` when no counter is passed: None = the backbone's,
    a folder path, or ``"whitespace"`` (tests only)."""
    image: ImageConfig = Field(default_factory=ImageConfig)

    @model_validator(mode="after")
    def _check(self) -> ChunkingConfig:
        if self.max_tokens < 2:
            raise ValueError("max_tokens must be >= 2")
        if self.max_images < 0:
            raise ValueError("max_images must be >= 0")
        return self


@dataclass
class _Segment:
    kind: str  # "text" | "image"
    part: int = -1
    start: int = 0
    end: int = 0
    tokens: int = 1
    image: str | None = None


class _Packer:
    """Greedy packing of sentences and images into chunks with exact token counts."""

    def __init__(self, texts: dict[int, str], counter: TokenCounter, max_tokens: int):
        self.texts = texts
        self.counter = counter
        self.max_tokens = max_tokens
        self.chunks: list[list[_Segment]] = []
        self.current: list[_Segment] = []
        self.used = 0

    def flush(self) -> None:
        if self.current:
            self.chunks.append(self.current)
        self.current, self.used = [], 0

    def add_image(self, ref: str) -> None:
        if self.used + 1 > self.max_tokens:
            self.flush()
        self.current.append(_Segment("image", image=ref))
        self.used += 1

    def add_text(self, part: int, start: int, end: int, tokens: int) -> None:
        last = self.current[-1] if self.current else None
        if last is not None and last.kind == "text" and last.part == part:
            merged = self.counter.count(self.texts[part][last.start : end])
            if self.used - last.tokens + merged <= self.max_tokens:
                self.used += merged - last.tokens
                last.end, last.tokens = end, merged
                return
        if self.used + tokens > self.max_tokens:
            self.flush()
        self.current.append(_Segment("text", part=part, start=start, end=end, tokens=tokens))
        self.used += tokens


def _pack_document(doc: Record, counter: TokenCounter, max_tokens: int) -> tuple[list[list[_Segment]], int]:
    texts = {i: p.text or "" for i, p in enumerate(doc.content) if p.type == "text"}
    packer = _Packer(texts, counter, max_tokens)
    n_cut = 0
    for i, part in enumerate(doc.content):
        if part.type == "image":
            packer.add_image(part.image or "")
            continue
        text = texts[i]
        for s, e in split_sentences(text):
            n = counter.count(text[s:e])
            if n <= max_tokens:
                packer.add_text(i, s, e, n)
                continue
            n_cut += 1
            for a, b in counter.split(text[s:e], max_tokens):
                packer.add_text(i, s + a, s + b, counter.count(text[s + a : s + b]))
    packer.flush()
    return packer.chunks, n_cut


def _to_record(doc: Record, ordinal: int, segments: list[_Segment]) -> Record:
    parts: list[Part] = []
    n_tokens = 0
    for seg in segments:
        n_tokens += seg.tokens
        if seg.kind == "image":
            parts.append(Part.of_image(seg.image or ""))
        else:
            parts.append(Part.of_text((doc.content[seg.part].text or "")[seg.start : seg.end]))
    n_images = sum(1 for p in parts if p.type == "image")
    return Record(
        id=f"{doc.id}#c{ordinal}",
        content=parts,
        extra={"doc_id": doc.id, "ordinal": ordinal, "n_tokens": n_tokens, "n_images": n_images},
    )


def chunk_documents(
    docs: Iterable[Record],
    cfg: ChunkingConfig | None = None,
    counter: TokenCounter | Callable[[str], int] | str | None = None,
    rejects: RejectLog | None = None,
) -> tuple[list[Record], dict[str, Any]]:
    """Chunk ``docs``; returns ``(chunks, stats)``.

    Chunk records: ``id = "<doc id>#c<ordinal>"``, interleaved ``content`` in document order, and extra
    fields ``doc_id``, ``ordinal``, ``n_tokens`` (text tokens + images), ``n_images``. Chunks whose images
    fail verification go to ``rejects`` (reason ``image failed verification``); without a reject log they
    are only counted. Stats: document/chunk counts, chunks per modality, drops by reason, token figures.
    """
    cfg = cfg or ChunkingConfig()
    counter = load_token_counter(counter if counter is not None else cfg.tokenizer)
    rejects = rejects if rejects is not None else RejectLog(stage="chunking")
    n_rejects_before = len(rejects)
    chunks: list[Record] = []
    dropped: Counter[str] = Counter()
    verified: dict[str, str | None] = {}  # image ref -> None if fine, else the reason
    n_docs = n_docs_empty = n_cut = 0
    for doc in docs:
        n_docs += 1
        packed, cut = _pack_document(doc, counter, cfg.max_tokens)
        n_cut += cut
        kept_before = len(chunks)
        for ordinal, segments in enumerate(packed):
            if cfg.drop_last_partial and len(packed) > 1 and ordinal == len(packed) - 1:
                dropped["last_partial"] += 1
                continue
            chunk = _to_record(doc, ordinal, segments)
            if chunk.n_images > cfg.max_images:
                dropped["too_many_images"] += 1
                continue
            if cfg.verify_images and chunk.n_images:
                bad = _first_bad_image(chunk, cfg.image, verified)
                if bad is not None:
                    dropped["image_failed"] += 1
                    rejects.add(RecordError(f"image failed verification: {bad}", record_id=chunk.id))
                    continue
            chunks.append(chunk)
        if len(chunks) == kept_before:
            n_docs_empty += 1
    tokens = [int(c.extra["n_tokens"]) for c in chunks]
    stats: dict[str, Any] = {
        "documents": n_docs,
        "documents_without_chunks": n_docs_empty,
        "chunks": len(chunks),
        "chunks_by_modality": dict(sorted(Counter(c.modality for c in chunks).items())),
        "dropped": dict(sorted(dropped.items())),
        "rejected": len(rejects) - n_rejects_before,
        "sentences_cut_by_tokens": n_cut,
        "tokens_mean": round(sum(tokens) / len(tokens), 2) if tokens else 0.0,
        "tokens_max": max(tokens, default=0),
        "max_tokens": cfg.max_tokens,
        "token_counter": counter.name,
    }
    log.info("chunked %d documents into %d chunks (dropped %s)", n_docs, len(chunks), dict(dropped))
    return chunks, stats


def _first_bad_image(chunk: Record, image_cfg: ImageConfig, verified: dict[str, str | None]) -> str | None:
    for ref in chunk.images:
        if ref not in verified:
            try:
                verify_image(ref, image_cfg, chunk.id)
                verified[ref] = None
            except RecordError as e:
                verified[ref] = e.reason
        if verified[ref] is not None:
            return f"{ref}: {verified[ref]}"
    return None
