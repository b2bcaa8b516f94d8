"""Synthetic QA over a stratified sample of chunks (NyxQA stage 3).

The paper samples 10k of its 46,741 chunks *in total*, stratified by image count (about 63% text-only, 30% one
image, the rest multi-image), and asks a VLM for QA pairs about each. :func:`synthesize_qa` does that with any
:class:`~nyx.synth.generators.Generator`, running ``generator.concurrency`` chunks in parallel threads;
:func:`plan_sample` fixes the total budget over a corpus split into shards, so that each shard is sampled on its
own and the shards together take ``sample_size`` chunks (see the comment above :func:`sample_key`).

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

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

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


# -- sampling ---------------------------------------------------------------------------------------------------
#
# The budget is a total over the whole corpus, not per shard, and a shard is sampled without the other shards'
# chunks in memory. Every chunk gets a fixed pseudo-random key, ``sha256(seed, chunk id)`` (a "permanent random
# number"), and a stratum (its image-count group, or one stratum without ``stratify``). :func:`plan_sample` looks
# at the ids and groups of the whole population (all chunk shards present), gives each stratum its quota of the
# budget with :func:`_allocate`, and keeps per stratum the *cutoff*: the key of the quota-th smallest key. A chunk
# is selected iff its key is at most its stratum's cutoff, which :meth:`SamplePlan.selects` decides from the chunk
# alone, so each shard applies the same plan on its own and the shards together select exactly ``sample_size``
# chunks (the per-group quotas exactly) when they are sampled with the plan of the same population.
#
# Why keys and cutoffs rather than a random draw per run, or an inclusion probability ``sample_size / total``:
# - exact: the total and the per-group counts are the quotas, not a binomial draw around them;
# - stable: the order of chunks by key never changes, so when shards are added (or removed) a stratum's
#   selection only moves its cutoff along that fixed order: within the chunks already there, the new selection
#   is a prefix of the same order as the old one (one contains the other), and the chunks that change are exactly
#   those whose key lies between the old and the new cutoff. A re-run of an old shard therefore only drops (or
#   adds) chunks at the margin, and drops cost nothing with a cached generator;
# - deterministic: the plan depends on the set of chunk ids, their groups, the budget and the seed only (not on
#   file order, shard boundaries or which partitions run together).


def sample_key(chunk_id: str, seed: int = 0) -> tuple[int, str]:
    """The chunk's fixed place in the sampling order: a 64-bit hash of ``(seed, id)``, ties broken by the id."""
    digest = hashlib.sha256(f"{seed}\x1f{chunk_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big"), chunk_id


def _group_of(chunk: Record | tuple[str, str]) -> tuple[str, str]:
    if isinstance(chunk, Record):
        return chunk.id, chunk.modality
    cid, group = chunk
    if group not in GROUPS:
        raise ValueError(f"chunk {cid!r}: unknown group {group!r} (expected one of {GROUPS})")
    return cid, group


@dataclass(frozen=True)
class SamplePlan:
    """Which chunks the QA sample takes (see the comment above :func:`sample_key`).

    ``cutoffs`` maps each stratum (a group of :data:`GROUPS`, or ``"all"`` without ``stratify``) to the largest
    selected :func:`sample_key`, or None when the stratum selects nothing; ``cutoffs is None`` selects every chunk
    (no budget, or a budget at least the population).
    """

    sample_size: int | None
    seed: int
    stratify: bool
    population: int
    group_sizes: dict[str, int]
    allocation: dict[str, int]
    cutoffs: dict[str, tuple[int, str] | None] | None

    def stratum(self, group: str) -> str:
        return group if self.stratify else "all"

    def selects(self, chunk: Record | tuple[str, str]) -> bool:
        """Whether ``chunk`` (a record, or ``(id, group)``) is in the sample; decided from the chunk alone."""
        cid, group = _group_of(chunk)
        if self.cutoffs is None:
            return True
        cut = self.cutoffs.get(self.stratum(group))
        return cut is not None and sample_key(cid, self.seed) <= cut

    def select(self, chunks: Sequence[Record]) -> list[Record]:
        """The selected chunks of ``chunks`` (any part of the population, e.g. one shard), ordered by id."""
        return sorted((c for c in chunks if self.selects(c)), key=lambda c: c.id)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (for asset metadata): budget, population, group sizes, quotas, cutoff keys."""
        return {
            "sample_size": self.sample_size,
            "seed": self.seed,
            "stratify": self.stratify,
            "population": self.population,
            "group_sizes": dict(self.group_sizes),
            "allocation": dict(self.allocation),
            "cutoffs": None
            if self.cutoffs is None
            else {k: (None if v is None else f"{v[0]:016x}") for k, v in self.cutoffs.items()},
        }


def plan_sample(
    population: Iterable[Record | tuple[str, str]],
    sample_size: int | None,
    seed: int = 0,
    stratify: bool = True,
    proportions: Mapping[str, float] | None = None,
) -> SamplePlan:
    """The :class:`SamplePlan` that takes ``sample_size`` chunks in total from ``population``.

    ``population``: every chunk the budget is spread over (records, or ``(id, group)`` pairs: only ids and groups
    are needed), e.g. all shards present. With ``stratify`` the budget is split over the image-count groups in
    proportion to the population (or to ``proportions``; a group with too few chunks passes its spare quota on),
    and each group takes its quota of smallest keys. ``sample_size`` None, or at least the population, selects all.
    Duplicate ids count once.
    """
    if sample_size is not None and sample_size < 0:
        raise ValueError(f"sample_size must be >= 0 or None, got {sample_size}")
    groups: dict[str, str] = {}
    for item in population:
        cid, group = _group_of(item)
        groups[cid] = group
    sizes = {g: 0 for g in GROUPS}
    for group in groups.values():
        sizes[group] += 1
    n = len(groups)
    if sample_size is None or sample_size >= n:
        return SamplePlan(sample_size, seed, stratify, n, sizes, dict(sizes), None)
    if stratify:
        weights = dict(proportions) if proportions else {g: float(k) for g, k in sizes.items()}
        alloc = _allocate(sizes, sample_size, weights)
    else:
        alloc = {"all": sample_size}
    keys: dict[str, list[tuple[int, str]]] = {s: [] for s in alloc}
    for cid, group in groups.items():
        keys[group if stratify else "all"].append(sample_key(cid, seed))
    cutoffs: dict[str, tuple[int, str] | None] = {}
    for s, quota in alloc.items():
        ordered = sorted(keys[s])
        cutoffs[s] = ordered[quota - 1] if quota > 0 else None
    return SamplePlan(sample_size, seed, stratify, n, sizes, alloc, cutoffs)


def stratified_sample(
    chunks: Sequence[Record],
    sample_size: int | None,
    seed: int = 0,
    stratify: bool = True,
    proportions: Mapping[str, float] | None = None,
) -> list[Record]:
    """A deterministic sample of ``sample_size`` of ``chunks`` (all when None or larger than the corpus).

    ``plan_sample(chunks, ...).select(chunks)``: with ``stratify``, the sample is split over the image-count groups
    in proportion to the corpus (or to ``proportions``, e.g. ``{"text": 0.63, "image1": 0.30, "image2+": 0.07}``);
    a group with too few chunks passes its spare quota to the others. The result is ordered by chunk id. To sample
    one shard of a larger corpus, plan over the whole corpus and :meth:`SamplePlan.select` the shard.
    """
    return plan_sample(chunks, sample_size, seed, stratify, proportions).select(chunks)


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
    plan: SamplePlan | None = None,
) -> tuple[list[Record], dict[str, Any]]:
    """Generate QA records for a stratified sample of ``chunks``; returns ``(qa_records, stats)``.

    The sample is ``plan.select(chunks)`` when a :class:`SamplePlan` is given (``chunks`` is then one part, e.g.
    one shard, of the population the plan spreads its total budget over; ``sample_size``, ``seed``, ``stratify``
    and ``proportions`` are the plan's and must not be given too), else ``stratified_sample(chunks, sample_size,
    seed, stratify, proportions)``.

    A chunk whose generation fails (an image that cannot be loaded, a call that failed for good) goes to
    ``rejects`` and the batch goes on; ``GeneratorUnavailable`` (the backend is down) stops it.
    Stats: sample and QA counts per group, failed chunks, and the generator's own counters (calls, cache
    hits, retries, unparseable replies, ...).
    """
    rejects = rejects if rejects is not None else RejectLog(stage="synthetic_qa")
    if plan is None:
        plan = plan_sample(chunks, sample_size, seed, stratify, proportions)
    elif sample_size is not None or proportions is not None:
        raise ValueError("give either a plan or sample_size/proportions, not both")
    sample = plan.select(chunks)

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
        "sample_plan": plan.describe(),
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
