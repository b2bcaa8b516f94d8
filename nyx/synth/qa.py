"""Synthetic QA over a stratified sample of chunks (NyxQA stage 3).

The paper samples 10k of its 46,741 chunks, stratified by image count (about 63% text-only, 30% one image,
the rest multi-image), and asks a VLM for QA pairs about each. :func:`synthesize_qa` does that with any
:class:`~nyx.synth.generators.Generator`, running ``generator.concurrency`` chunks in parallel threads.

A QA record is a query :class:`~nyx.data.records.Record`::

    id          "<chunk id>#q<k>"
    content     the query: the question's images (if any), then the question text
    question    the question text           answer       the short answer
    positive_id the chunk it was made from  image_refs   1-based chunk image numbers the generator named
    modality    the positive chunk's group (text / image1 / image2+), which NyxQA splits by
    query_modality  the query's own group   kind         qa | multi_image
    source      the generator kind          generator_meta  e.g. span type, prompt ids
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence, TypeVar

from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.synth.generators.base import GenerationError, Generator, QAPair

log = logging.getLogger(__name__)

GROUPS = ("text", "image1", "image2+")

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, what: str = "items") -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads, in order, logging progress about every 10%.

    If one call raises, calls not yet started are cancelled and the exception propagates (so a backend that
    is down stops the batch quickly instead of failing every remaining item through its retries).
    """
    n = len(items)
    step = max(1, n // 10)
    out: list[R] = []
    if workers <= 1 or n <= 1:
        for i, x in enumerate(items, start=1):
            out.append(fn(x))
            if i % step == 0 or i == n:
                log.info("%s: %d/%d done", what, i, n)
        return out
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nyx-synth")
    try:
        for i, r in enumerate(pool.map(fn, items), start=1):
            out.append(r)
            if i % step == 0 or i == n:
                log.info("%s: %d/%d done", what, i, n)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _allocate(sizes: Mapping[str, int], total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` over groups by ``weights`` (largest remainder), capped by ``sizes``; spare quota moves on."""
    alloc = {g: 0 for g in sizes}
    remaining = min(total, sum(sizes.values()))
    while remaining > 0:
        open_groups = [g for g in sizes if alloc[g] < sizes[g] and weights.get(g, 0) > 0]
        if not open_groups:
            open_groups = [g for g in sizes if alloc[g] < sizes[g]]
        wsum = sum(weights.get(g, 0) for g in open_groups) or len(open_groups)
        shares = {g: remaining * ((weights.get(g, 0) / wsum) if wsum else 1 / len(open_groups)) for g in open_groups}
        give = {g: min(int(shares[g]), sizes[g] - alloc[g]) for g in open_groups}
        left = remaining - sum(give.values())
        for g in sorted(open_groups, key=lambda g: (-(shares[g] - int(shares[g])), g)):
            if left <= 0:
                break
            if alloc[g] + give[g] < sizes[g]:
                give[g] += 1
                left -= 1
        if sum(give.values()) == 0:
            break
        for g in open_groups:
            alloc[g] += give[g]
        remaining -= sum(give.values())
    return alloc


def stratified_sample(chunks: Sequence[Record], sample_size: int | None, seed: int = 0, stratify: bool = True,
                      proportions: Mapping[str, float] | None = None) -> list[Record]:
    """A deterministic sample of ``sample_size`` chunks (all when None or larger than the corpus).

    With ``stratify``, the sample is split over the image-count groups in proportion to the corpus (or to
    ``proportions``, e.g. ``{"text": 0.63, "image1": 0.30, "image2+": 0.07}``); a group with too few chunks
    passes its spare quota to the others. The result is ordered by chunk id.
    """
    rng = random.Random(seed)
    pool = sorted(chunks, key=lambda c: c.id)
    if sample_size is None or sample_size >= len(pool):
        return pool
    if not stratify:
        return sorted(rng.sample(pool, sample_size), key=lambda c: c.id)
    groups: dict[str, list[Record]] = {g: [] for g in GROUPS}
    for c in pool:
        groups[c.modality].append(c)
    sizes = {g: len(v) for g, v in groups.items()}
    weights = dict(proportions) if proportions else {g: float(n) for g, n in sizes.items()}
    alloc = _allocate(sizes, sample_size, weights)
    picked = [c for g in GROUPS for c in rng.sample(groups[g], alloc[g])]
    return sorted(picked, key=lambda c: c.id)


def qa_record(chunk: Record, k: int, pair: QAPair, source: str) -> Record:
    """The query record of the ``k``-th pair of ``chunk`` (see the module docstring for the fields)."""
    chunk_images = chunk.images
    images = [chunk_images[i - 1] for i in pair.image_refs if 1 <= i <= len(chunk_images)]
    content = [Part.of_image(i) for i in images] + [Part.of_text(pair.question)]
    n = len(images)
    return Record(
        id=f"{chunk.id}#q{k}",
        content=content,
        extra={
            "question": pair.question,
            "answer": pair.answer,
            "positive_id": chunk.id,
            "image_refs": list(pair.image_refs),
            "modality": chunk.modality,
            "query_modality": "text" if n == 0 else ("image1" if n == 1 else "image2+"),
            "kind": pair.kind,
            "source": source,
            "generator_meta": dict(pair.meta),
        },
    )


def synthesize_qa(
    chunks: Sequence[Record],
    generator: Generator,
    sample_size: int | None = None,
    seed: int = 0,
    stratify: bool = True,
    rejects: RejectLog | None = None,
    proportions: Mapping[str, float] | None = None,
) -> tuple[list[Record], dict[str, Any]]:
    """Generate QA records for a stratified sample of ``chunks``; returns ``(qa_records, stats)``.

    A chunk whose generation fails (an image that cannot be loaded, a call that failed for good) goes to
    ``rejects`` and the batch goes on; ``GeneratorUnavailable`` (the backend is down) stops it.
    Stats: sample and QA counts per group, failed chunks, and the generator's own counters (calls, cache
    hits, retries, unparseable replies, ...).
    """
    rejects = rejects if rejects is not None else RejectLog(stage="synthetic_qa")
    sample = stratified_sample(chunks, sample_size, seed, stratify, proportions)

    def run(chunk: Record) -> list[QAPair] | None:
        try:
            return generator.qa_for_chunk(chunk)
        except RecordError as e:
            rejects.add(RecordError(f"generation failed: {e.reason}", record_id=chunk.id))
        except GenerationError as e:
            rejects.add(RecordError(f"generation failed: {e}", record_id=chunk.id))
        return None

    results = parallel_map(run, sample, max(1, int(generator.concurrency)), "QA generation (chunks)")

    records: list[Record] = []
    failed = 0
    with_qa = 0
    for chunk, pairs in zip(sample, results):
        if pairs is None:
            failed += 1
            continue
        with_qa += bool(pairs)
        records.extend(qa_record(chunk, k, p, generator.kind) for k, p in enumerate(pairs))
    stats: dict[str, Any] = {
        "chunks": len(chunks),
        "sampled": len(sample),
        "sampled_by_group": {g: n for g, n in sorted(Counter(c.modality for c in sample).items())},
        "chunks_with_qa": with_qa,
        "chunks_failed": failed,
        "qa": len(records),
        "qa_by_group": dict(sorted(Counter(r.extra["modality"] for r in records).items())),
        "qa_by_query_modality": dict(sorted(Counter(r.extra["query_modality"] for r in records).items())),
        "qa_by_kind": dict(sorted(Counter(r.extra["kind"] for r in records).items())),
        "generator": generator.describe(),
        "generator_stats": generator.stats.as_dict(),
    }
    log.info("synthesised %d QA pairs from %d sampled chunks (%d failed)", len(records), len(sample), failed)
    return records, stats
