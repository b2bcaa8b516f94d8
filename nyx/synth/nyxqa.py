"""NyxQA post-processing (stage 4): rule filters, multiple-choice options, leakage-free splits, BEIR export.

1. Rule filters drop a question that points to an unseen context ("the text", "the author", "the passage",
   ...), whose image references do not resolve to its positive chunk's images (an image number beyond the
   chunk's images, or a question that talks about an image while the query carries none), whose answer is
   empty or longer than ``max_answer_words`` words, or whose positive chunk is unknown. Exact duplicates
   (same question text) keep their first; a question text repeated with different answers (templated
   boilerplate) has no unique positive and is dropped entirely ("ambiguous question").
2. Options: ``n_distractors`` distractors from the generator plus the answer, shuffled deterministically
   (seeded by the query id), with ``correct_index``. Questions with too few distinct distractors are dropped.
3. Splits per group of the positive chunk's image count (``text`` / ``image1`` / ``image2+``): ``test`` and
   ``dev`` get up to ``test_per_group`` / ``dev_per_group`` questions each (paper: 200 each; together at most
   ``max_eval_fraction`` of the group), the rest is ``train``. A positive chunk's questions always go to
   one split, and so does a question text repeated over chunks (no leakage).
4. :func:`export_beir` writes one BEIR folder per split (``corpus.jsonl`` = all chunks, ``queries.jsonl``,
   ``qrels.tsv``) so ``nyx evaluate`` runs on it.

Every dropped question goes to the reject log with its reason; the stats count them by reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from nyx.data.beir import write_beir
from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.synth.generators.base import Generator
from nyx.synth.qa import GROUPS, parallel_map
from nyx.synth.text import CONTEXT_REFERENCE, n_words, normalize_answer
from nyx.utils.config import ConfigModel

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
_NUMBERED_IMAGE = re.compile(r"\b(?:image|picture|photo|photograph|figure)\s*(?:#|no\.?|number)?\s*(\d+)\b", re.I)
_ANY_IMAGE = re.compile(r"\b(?:image|images|picture|pictures|photo|photos|photograph|photographs)\b", re.I)


class NyxQAConfig(ConfigModel):
    """Settings of :func:`build_nyxqa` (defaults: the paper's)."""

    dev_per_group: int = 200
    test_per_group: int = 200
    n_distractors: int = 3
    max_answer_words: int = 5
    max_eval_fraction: float = 0.5
    """dev + test together take at most this share of a group's questions (small corpora keep a train set)."""
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> NyxQAConfig:
        if self.dev_per_group < 0 or self.test_per_group < 0:
            raise ValueError("dev_per_group and test_per_group must be >= 0")
        if not 0.0 <= self.max_eval_fraction <= 1.0:
            raise ValueError("max_eval_fraction must be in [0, 1]")
        if self.n_distractors < 1:
            raise ValueError("n_distractors must be >= 1")
        return self


@dataclass
class NyxQA:
    """The benchmark: its queries (with ``split``, ``choices``, ``correct_index``) and the chunk corpus."""

    queries: list[Record]
    corpus: list[Record]
    stats: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Record]:
        return [q for q in self.queries if q.extra["split"] == name]

    def qrels(self, name: str | None = None) -> dict[str, dict[str, int]]:
        qs = self.queries if name is None else self.split(name)
        return {q.id: {q.extra["positive_id"]: 1} for q in qs}


def _rng(*keys: Any) -> random.Random:
    return random.Random(int(hashlib.sha256("\x1f".join(map(str, keys)).encode()).hexdigest()[:16], 16))


def filter_reason(qa: Record, chunk: Record | None, max_answer_words: int = 5) -> str | None:
    """Why a QA record must be dropped by the rule filters, or ``None`` to keep it."""
    question = str(qa.extra.get("question") or "").strip()
    answer = str(qa.extra.get("answer") or "").strip()
    if chunk is None:
        return "unknown positive chunk"
    if not question or not answer:
        return "empty question or answer"
    if n_words(answer) > max_answer_words:
        return "answer too long"
    if CONTEXT_REFERENCE.search(question):
        return "refers to an unseen context"
    refs = qa.extra.get("image_refs") or []
    n = chunk.n_images
    if any(not isinstance(i, int) or not 1 <= i <= n for i in refs):
        return "unresolved image reference"
    if any(int(m.group(1)) > n or int(m.group(1)) < 1 for m in _NUMBERED_IMAGE.finditer(question)):
        return "unresolved image reference"
    if not set(qa.images) <= set(chunk.images):
        return "unresolved image reference"
    if _ANY_IMAGE.search(question) and not qa.images:
        return "mentions an image the query does not carry"
    return None


def _dedupe_key(qa: Record) -> str:
    """The question text, case, spacing and end punctuation aside (query images do not make it another
    question: questions must be self-contained, so the text alone has to identify the answer)."""
    return " ".join(str(qa.extra.get("question", "")).lower().split()).rstrip(" ?.!")


def _split_units(queries: Sequence[Record]) -> list[list[Record]]:
    """Queries that must share a split: linked by the same positive chunk or the same question text."""
    parent = list(range(len(queries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, q in enumerate(queries):
        for key in (("positive", str(q.extra["positive_id"])), ("question", _dedupe_key(q))):
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    units: dict[int, list[Record]] = defaultdict(list)
    for i, q in enumerate(queries):
        units[find(i)].append(q)
    return sorted(units.values(), key=lambda u: min(q.id for q in u))


def assign_splits(queries: Sequence[Record], cfg: NyxQAConfig) -> dict[str, str]:
    """``{query id: split}``.

    Queries are grouped into units that must not be split (same positive chunk, or same question text, so
    no question leaks from train into dev/test); units in a seeded random order fill ``test`` then ``dev``
    while every group they touch stays within its size; the rest is ``train``.
    """
    totals = Counter(q.extra["modality"] for q in queries)
    target: dict[str, dict[str, int]] = {}
    for group, total in totals.items():
        t = {"test": cfg.test_per_group, "dev": cfg.dev_per_group}
        budget = int(total * cfg.max_eval_fraction)
        if sum(t.values()) > budget:  # scale both down to fit
            scale = budget / max(1, sum(t.values()))
            t = {"test": int(round(t["test"] * scale)), "dev": int(t["dev"] * scale)}
        target[group] = t
    filled: dict[str, Counter[str]] = {s: Counter() for s in ("test", "dev")}
    units = _split_units(queries)
    _rng(cfg.seed, "split").shuffle(units)
    out: dict[str, str] = {}
    for unit in units:
        need = Counter(q.extra["modality"] for q in unit)
        split = next(
            (s for s in ("test", "dev") if all(filled[s][g] + n <= target[g][s] for g, n in need.items())), "train"
        )
        if split != "train":
            filled[split].update(need)
        for q in unit:
            out[q.id] = split
    return out


def build_nyxqa(
    qa_records: Sequence[Record],
    chunks: Sequence[Record],
    generator: Generator,
    cfg: NyxQAConfig | None = None,
    rejects: RejectLog | None = None,
) -> tuple[NyxQA, dict[str, Any]]:
    """Filter, add options, split; returns ``(nyxqa, stats)``.

    ``chunks`` is the whole retrieval corpus (positives are looked up in it; the generator's
    :meth:`~nyx.synth.generators.Generator.prepare` sees it before drawing distractors).
    Query records keep the QA fields and add ``choices``, ``correct_index`` and ``split``.
    """
    cfg = cfg or NyxQAConfig()
    rejects = rejects if rejects is not None else RejectLog(stage="nyxqa")
    by_id = {c.id: c for c in chunks}
    dropped: Counter[str] = Counter()

    def drop(qa: Record, reason: str) -> None:
        dropped[reason] += 1
        rejects.add(RecordError(reason, record_id=qa.id))

    groups: dict[str, list[Record]] = defaultdict(list)
    for qa in sorted(qa_records, key=lambda r: r.id):
        reason = filter_reason(qa, by_id.get(str(qa.extra.get("positive_id"))), cfg.max_answer_words)
        if reason is not None:
            drop(qa, reason)
            continue
        groups[_dedupe_key(qa)].append(qa)
    kept: list[Record] = []
    for same in groups.values():
        if len({normalize_answer(str(q.extra["answer"])) for q in same}) > 1:
            for qa in same:  # one question, several answers: no unique positive
                drop(qa, "ambiguous question")
            continue
        kept.append(same[0])
        for qa in same[1:]:
            drop(qa, "duplicate question")
    kept.sort(key=lambda r: r.id)

    generator.prepare(chunks)

    def options(qa: Record) -> list[str]:
        return generator.distractors(
            qa.extra["question"], qa.extra["answer"], by_id[qa.extra["positive_id"]], n=cfg.n_distractors
        )

    all_distractors = parallel_map(options, kept, max(1, int(generator.concurrency)), "distractors (questions)")

    with_options: list[Record] = []
    for qa, distractors in zip(kept, all_distractors):
        answer = str(qa.extra["answer"])
        choices = [answer]
        norms = {normalize_answer(answer)}
        for d in distractors:
            if normalize_answer(d) and normalize_answer(d) not in norms:
                norms.add(normalize_answer(d))
                choices.append(d)
        if len(choices) < cfg.n_distractors + 1:
            drop(qa, "too few distractors")
            continue
        choices = choices[: cfg.n_distractors + 1]
        order = list(range(len(choices)))
        _rng(cfg.seed, "options", qa.id).shuffle(order)
        extra = {**qa.extra, "choices": [choices[i] for i in order], "correct_index": order.index(0)}
        with_options.append(Record(id=qa.id, content=list(qa.content), extra=extra))

    splits = assign_splits(with_options, cfg)
    for q in with_options:
        q.extra["split"] = splits[q.id]

    counts = {s: {g: 0 for g in GROUPS} for s in SPLITS}
    for q in with_options:
        counts[q.extra["split"]][q.extra["modality"]] += 1
    stats: dict[str, Any] = {
        "input": len(qa_records),
        "kept": len(with_options),
        "dropped": dict(sorted(dropped.items())),
        "splits": counts,
        "split_sizes": {s: sum(counts[s].values()) for s in SPLITS},
        "positives": len({q.extra["positive_id"] for q in with_options}),
        "corpus": len(chunks),
        "generator_stats": generator.stats.as_dict(),
    }
    log.info("NyxQA: %d of %d questions kept; splits %s", len(with_options), len(qa_records), stats["split_sizes"])
    return NyxQA(queries=with_options, corpus=list(chunks), stats=stats), stats


def export_beir(
    nyxqa: NyxQA,
    out_dir: str | os.PathLike,
    splits: Sequence[str] = SPLITS,
    images: Literal["reference", "copy"] = "reference",
) -> dict[str, Path]:
    """Write ``<out_dir>/<split>/{corpus.jsonl, queries.jsonl, qrels.tsv}`` for each split (atomically each).

    Queries carry the question as content (with its images), and ``answer``, ``choices``,
    ``correct_index``, ``modality``, ``split`` and ``positive_id`` as extra fields.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (expected one of {SPLITS})")
        paths[split] = write_beir(out / split, nyxqa.corpus, nyxqa.split(split), nyxqa.qrels(split), images=images)
    return paths
