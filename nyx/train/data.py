"""Training triples for contrastive learning: (query, positive document, hard-negative documents).

Sources
-------
* **NyxQA** (``kind="nyxqa"``): a BEIR folder (``corpus.jsonl``, ``queries.jsonl`` with extra fields such as
  ``answer``/``choices``, ``qrels``) plus a hard-negatives JSONL, one line per training query::

      {"query_id": "q1", "positive_id": "c7", "negative_ids": ["c3", "c9", ...]}

  Queries without a line in that file use their qrels positive and negatives from the source's pool.
* **Nyx triples** (``kind="triples"``), any number of extra sets, one JSON object per line::

      {"query": {"content": [...]}, "positive": {"content": [...]}, "negatives": [{"content": [...]}, ...]}

  (records in the Nyx part format; ``id`` optional; image paths relative to the file).
* **Research format** (``kind="research"``): the public research code's records (``qry``, ``qry_image_path``,
  ``pos_text``, ``pos_image_path``, ``neg_text``, ``neg_image_path``; ``<|image|>`` marks where each image
  goes in the text), converted by :func:`research_to_triple` / :func:`convert_research_file`.

Negatives
---------
Every example ends up with exactly ``n_negatives`` hard negatives: its own (valid, de-duplicated, seeded
choice) first, then, when it has too few (none mined, broken references, empty records), other *real*
negatives drawn from the same source's pool. A replacement is never the positive, never another document
judged relevant to the query, and never a duplicate. Broken negatives, and examples whose query or positive
is unusable, are recorded in the :class:`~nyx.data.rejects.RejectLog` and never stop the run.

Mixing
------
:func:`build_training_set` takes each source's examples, keeps at most ``cap`` (seeded subsample), scales by
``weight`` (whole copies plus a seeded remainder: 0.5 keeps half, 2.0 doubles) and concatenates;
:func:`global_batches` shuffles per epoch (seeded) into global batches that every process slices the same way.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nyx.data.beir import load_beir
from nyx.data.records import Part, Record, record_from_json, resolve_image
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.config import SourceConfig
from nyx.utils.io import atomic_write

#: Where the research format puts an image inside text (``<|image|>``; VLM2Vec/mmE5 write ``<|image_1|>``).
RESEARCH_IMAGE_TOKEN = re.compile(r"<\|image(?:_\d+)?\|>")


@dataclass(frozen=True)
class TrainingExample:
    """One training triple. ``exclude`` lists document ids that must never serve as negatives (relevant ones)."""

    query: Record
    positive: Record
    negatives: tuple[Record, ...]
    source: str
    exclude: frozenset[str] = frozenset()


def content_key(record: Record) -> tuple:
    """Identity of a record's content (ids aside): two records with the same key are the same document."""
    return tuple((p.type, p.text if p.type == "text" else p.image) for p in record.content)


# ----------------------------------------------------------------------------------------------------------
# Research format
# ----------------------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def research_content(text: Any, image_paths: Any, image_root: str | os.PathLike | None) -> list[dict[str, str]]:
    """Nyx parts from research text with ``<|image|>`` placeholders and the matching image path(s).

    Images fill the placeholders in order; text without placeholders gets its images in front (the
    research code's convention for image-first inputs). A count mismatch is an error.
    """
    text = "" if text is None else text
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    images = [str(p) for p in _as_list(image_paths)]
    if any(not p.strip() for p in images):
        raise ValueError("empty image path")
    images = [resolve_image(p, image_root) for p in images]
    pieces = RESEARCH_IMAGE_TOKEN.split(text)
    n_slots = len(pieces) - 1
    if n_slots == 0:  # no placeholder: images go first
        pieces, n_slots = [""] * len(images) + [text], len(images)
    if n_slots != len(images):
        raise ValueError(f"{n_slots} image placeholder(s) but {len(images)} image path(s)")
    parts: list[dict[str, str]] = []
    for i, piece in enumerate(pieces):
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
        if i < len(images):
            parts.append({"type": "image", "image": images[i]})
    if not parts:
        raise ValueError("no text and no image")
    return parts


def research_to_triple(
    obj: dict[str, Any], image_root: str | os.PathLike | None = None, record_id: str | None = None
) -> dict[str, Any]:
    """Convert one research-format record into the Nyx triples JSON shape.

    ``neg_text``/``neg_image_path`` may be a single negative or parallel lists of negatives. A negative that
    cannot be converted is left out (and counted under ``"dropped_negatives"``); a bad query or positive
    raises :class:`RecordError`.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}", record_id=record_id)
    rid = str(obj.get("id", record_id or "")) or None
    try:
        query = research_content(obj.get("qry"), obj.get("qry_image_path"), image_root)
    except ValueError as e:
        raise RecordError(f"query: {e}", record_id=rid) from None
    try:
        positive = research_content(obj.get("pos_text"), obj.get("pos_image_path"), image_root)
    except ValueError as e:
        raise RecordError(f"positive: {e}", record_id=rid) from None
    neg_texts = obj.get("neg_text")
    neg_images = obj.get("neg_image_path")
    if isinstance(neg_texts, (list, tuple)):
        neg_images = list(neg_images) if isinstance(neg_images, (list, tuple)) else [neg_images] * len(neg_texts)
        if len(neg_images) != len(neg_texts):
            raise RecordError(f"{len(neg_texts)} neg_text but {len(neg_images)} neg_image_path", record_id=rid)
        pairs = list(zip(neg_texts, neg_images))
    elif neg_texts in (None, "") and not _as_list(neg_images):
        pairs = []
    else:
        pairs = [(neg_texts, neg_images)]
    negatives, dropped = [], []
    for i, (t, imgs) in enumerate(pairs):
        try:
            negatives.append({"content": research_content(t, imgs, image_root)})
        except ValueError as e:
            dropped.append(f"negative {i}: {e}")
    out: dict[str, Any] = {"query": {"content": query}, "positive": {"content": positive}, "negatives": negatives}
    if rid:
        out["id"] = rid
    if dropped:
        out["dropped_negatives"] = dropped
    return out


def convert_research_file(
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    rejects: RejectLog | None = None,
) -> int:
    """Convert a research-format JSONL file into a Nyx triples JSONL file; returns the number written.

    Image paths are resolved against ``image_root`` (default: the input file's folder) and written relative
    to the output file when they lie beneath its folder.
    """
    out_path = Path(out_path)
    rejects = rejects if rejects is not None else RejectLog(stage="research-convert")
    n = 0
    with atomic_write(out_path, "w") as f:
        for triple in _iter_research(Path(path), image_root, rejects):
            for role in ("query", "positive"):
                triple[role]["content"] = _relative_parts(triple[role]["content"], out_path.parent)
            for neg in triple["negatives"]:
                neg["content"] = _relative_parts(neg["content"], out_path.parent)
            f.write(json.dumps(triple, ensure_ascii=False) + "\n")
            n += 1
    return n


def _relative_parts(parts: list[dict[str, str]], base_dir: Path) -> list[dict[str, str]]:
    return [p if p["type"] == "text" else Part.of_image(p["image"]).to_json(base_dir) for p in parts]


def _iter_json_lines(path: Path, rejects: RejectLog) -> Iterator[tuple[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"no such JSONL file: {path}")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                yield where, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                rejects.add(
                    RecordError(f"malformed JSON line: {e}", location=where),
                    raw=raw.decode("utf-8", errors="replace").rstrip("\n"),
                )


def _iter_research(path: Path, image_root: str | os.PathLike | None, rejects: RejectLog) -> Iterator[dict[str, Any]]:
    root = image_root if image_root is not None else path.parent
    for where, obj in _iter_json_lines(path, rejects):
        try:
            triple = research_to_triple(obj, root, record_id=where)
        except RecordError as e:
            e.location = e.location or where
            rejects.add(e, raw=obj)
            continue
        for reason in triple.pop("dropped_negatives", []):
            rejects.add(RecordError(f"broken negative dropped: {reason}", record_id=triple.get("id"), location=where))
        yield triple


# ----------------------------------------------------------------------------------------------------------
# Loading sources
# ----------------------------------------------------------------------------------------------------------


def _triple_records(
    obj: Any, where: str, source: str, base_dir: str | os.PathLike | None, rejects: RejectLog
) -> TrainingExample | None:
    """One Nyx-triples object -> example (broken negatives logged and left out), or None when unusable."""
    if not isinstance(obj, dict):
        rejects.add(RecordError(f"expected a JSON object, got {type(obj).__name__}", location=where))
        return None
    base_id = str(obj.get("id") or f"{source}:{where.rsplit(':', 1)[-1]}")

    def parse(raw: Any, role: str) -> Record:
        if isinstance(raw, dict) and "id" not in raw and "_id" not in raw:
            raw = {"id": f"{base_id}:{role}", **raw}
        return record_from_json(raw, base_dir)

    try:
        query = parse(obj.get("query"), "query")
        positive = parse(obj.get("positive"), "positive")
    except RecordError as e:
        rejects.add(RecordError(f"unusable triple: {e.reason}", record_id=base_id, location=where), raw=obj)
        return None
    negs_raw = obj.get("negatives") or []
    if not isinstance(negs_raw, list):
        rejects.add(RecordError("'negatives' must be a list; ignored", record_id=base_id, location=where))
        negs_raw = []
    negatives = []
    for i, raw in enumerate(negs_raw):
        try:
            negatives.append(parse(raw, f"neg{i}"))
        except RecordError as e:
            rejects.add(
                RecordError(f"broken negative {i} replaced: {e.reason}", record_id=base_id, location=where), raw=raw
            )
    return TrainingExample(query, positive, tuple(negatives), source)


def load_triples(path: str | os.PathLike, source: str, rejects: RejectLog) -> list[TrainingExample]:
    """Examples from a Nyx triples JSONL file (image paths relative to the file)."""
    path = Path(path)
    out = []
    for where, obj in _iter_json_lines(path, rejects):
        ex = _triple_records(obj, where, source, path.parent, rejects)
        if ex is not None:
            out.append(ex)
    return out


def load_research(
    path: str | os.PathLike, source: str, rejects: RejectLog, image_root: str | os.PathLike | None = None
) -> list[TrainingExample]:
    """Examples from a research-format JSONL file (converted on the fly)."""
    path = Path(path)
    out = []
    for i, triple in enumerate(_iter_research(path, image_root, rejects), start=1):
        ex = _triple_records(triple, f"{path.name}:{triple.get('id', i)}", source, None, rejects)
        if ex is not None:
            out.append(ex)
    return out


def load_nyxqa(
    folder: str | os.PathLike,
    hard_negatives: str | os.PathLike | None,
    source: str,
    rejects: RejectLog,
    split: str | None = None,
) -> list[TrainingExample]:
    """Examples from a NyxQA BEIR folder and its mined hard negatives.

    With a hard-negatives line, its ``positive_id`` is the positive (it must exist in the corpus);
    otherwise the query's highest-judged qrels document. Every document judged relevant to the query is
    excluded from its negatives.
    """
    ds = load_beir(folder, rejects, split=split)
    mined: dict[str, dict[str, Any]] = {}
    if hard_negatives is not None:
        hn_path = Path(hard_negatives)
        for where, obj in _iter_json_lines(hn_path, rejects):
            qid = obj.get("query_id") if isinstance(obj, dict) else None
            if not isinstance(qid, str) or not qid:
                rejects.add(RecordError("hard-negatives line without 'query_id'", location=where), raw=obj)
                continue
            if qid in mined:
                rejects.add(RecordError("duplicate hard-negatives line (first kept)", record_id=qid, location=where))
                continue
            mined[qid] = {**obj, "_where": where}
    out = []
    for qid, query in ds.queries.items():
        rel = ds.qrels.get(qid, {})
        relevant = {d for d, s in rel.items() if s > 0}
        line = mined.get(qid)
        where = line["_where"] if line else f"{Path(folder).name}/qrels"
        pos_id = line.get("positive_id") if line else None
        if pos_id is None and relevant:
            pos_id = max(sorted(relevant), key=lambda d: rel[d])
        if pos_id is None:
            rejects.add(RecordError("query has no positive (no qrels, no hard-negatives line)", record_id=qid))
            continue
        if pos_id not in ds.corpus:
            rejects.add(RecordError(f"positive {pos_id!r} not in the corpus", record_id=qid, location=where))
            continue
        exclude = frozenset(relevant | {pos_id})
        negatives = []
        neg_ids = line.get("negative_ids") if line else []
        if not isinstance(neg_ids, list):
            rejects.add(RecordError("'negative_ids' must be a list; ignored", record_id=qid, location=where))
            neg_ids = []
        for i, nid in enumerate(neg_ids):
            if not isinstance(nid, str) or nid not in ds.corpus:
                rejects.add(
                    RecordError(
                        f"broken negative {i} replaced: {nid!r} not in the corpus", record_id=qid, location=where
                    )
                )
            elif nid in exclude:
                rejects.add(
                    RecordError(
                        f"broken negative {i} replaced: {nid!r} is relevant to the query", record_id=qid, location=where
                    )
                )
            else:
                negatives.append(ds.corpus[nid])
        out.append(TrainingExample(query, ds.corpus[pos_id], tuple(negatives), source, exclude))
    for qid in mined.keys() - ds.queries.keys():
        rejects.add(
            RecordError("hard-negatives line names an unknown query", record_id=qid, location=mined[qid]["_where"])
        )
    return out


def load_source(cfg: SourceConfig, rejects: RejectLog) -> list[TrainingExample]:
    """The examples of one configured source (unfilled: negatives as found)."""
    if cfg.kind == "nyxqa":
        return load_nyxqa(cfg.path, cfg.hard_negatives, cfg.name, rejects, cfg.split)
    if cfg.kind == "triples":
        return load_triples(cfg.path, cfg.name, rejects)
    return load_research(cfg.path, cfg.name, rejects, cfg.image_root)


# ----------------------------------------------------------------------------------------------------------
# Negatives and mixing
# ----------------------------------------------------------------------------------------------------------


def fill_negatives(
    examples: Sequence[TrainingExample], n_negatives: int, rng: random.Random, rejects: RejectLog
) -> list[TrainingExample]:
    """Give every example exactly ``n_negatives`` negatives (see the module docstring).

    The pool is every distinct negative of ``examples`` (one source). Own negatives that duplicate the
    positive's content or each other are dropped; shortfalls are drawn from the pool excluding the positive
    (by id and content), documents in ``exclude`` and negatives already chosen. Examples that cannot be
    filled go to ``rejects``.
    """
    pool: list[Record] = []
    seen: set[tuple] = set()
    for ex in examples:
        for neg in ex.negatives:
            key = content_key(neg)
            if key not in seen:
                seen.add(key)
                pool.append(neg)
    out = []
    for ex in examples:
        banned_ids = set(ex.exclude) | {ex.positive.id}
        banned_keys = {content_key(ex.positive)}

        def usable(r: Record) -> bool:
            return r.id not in banned_ids and content_key(r) not in banned_keys  # noqa: B023

        own = []
        for neg in ex.negatives:
            if usable(neg):
                own.append(neg)
                banned_keys.add(content_key(neg))
            elif content_key(neg) == content_key(ex.positive) or neg.id in banned_ids:
                rejects.add(
                    RecordError(
                        f"negative {neg.id!r} equals the positive or a relevant document: replaced",
                        record_id=ex.query.id,
                    )
                )
        chosen = rng.sample(own, n_negatives) if len(own) > n_negatives else own
        if len(chosen) < n_negatives:
            need = n_negatives - len(chosen)
            picked_keys = {content_key(r) for r in chosen}
            candidates = [r for r in pool if usable(r) and content_key(r) not in picked_keys]
            if len(candidates) < need:
                rejects.add(
                    RecordError(
                        f"only {len(chosen) + len(candidates)} usable negatives for "
                        f"{n_negatives} required (source {ex.source!r})",
                        record_id=ex.query.id,
                    )
                )
                continue
            chosen = chosen + rng.sample(candidates, need)
        out.append(TrainingExample(ex.query, ex.positive, tuple(chosen), ex.source, ex.exclude))
    return out


def apply_cap_and_weight(
    examples: Sequence[TrainingExample], cap: int | None, weight: float, rng: random.Random
) -> list[TrainingExample]:
    """At most ``cap`` examples (seeded subsample, order kept), then ``weight`` x as many (copies + remainder)."""
    items = list(examples)
    if cap is not None and len(items) > cap:
        keep = sorted(rng.sample(range(len(items)), cap))
        items = [items[i] for i in keep]
    whole, frac = divmod(weight, 1.0)
    out = items * int(whole)
    extra = round(frac * len(items))
    if extra:
        keep = sorted(rng.sample(range(len(items)), extra))
        out += [items[i] for i in keep]
    return out


@dataclass
class TrainingSet:
    """The mixed examples and, per source, how many were loaded and how many entered the mix."""

    examples: list[TrainingExample]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def build_training_set(sources: Iterable[SourceConfig], n_negatives: int, seed: int, rejects: RejectLog) -> TrainingSet:
    """Load, fill negatives, cap and weight every source; concatenate in configuration order (seeded)."""
    examples: list[TrainingExample] = []
    counts: dict[str, dict[str, int]] = {}
    for i, cfg in enumerate(sources):
        if cfg.name in counts:
            raise ValueError(f"two training sources are named {cfg.name!r}")
        rng = random.Random(f"{seed}:{i}:{cfg.name}")
        loaded = load_source(cfg, rejects)
        filled = fill_negatives(loaded, n_negatives, rng, rejects)
        mixed = apply_cap_and_weight(filled, cfg.cap, cfg.weight, rng)
        counts[cfg.name] = {"loaded": len(loaded), "usable": len(filled), "mixed": len(mixed)}
        examples.extend(mixed)
    if not examples:
        raise ValueError(
            f"no usable training examples in {list(counts)} ({rejects.count} rejected: {rejects.reasons()})"
        )
    return TrainingSet(examples, counts)


# ----------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------


def global_batches(n_examples: int, global_batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of every full global batch of one epoch (seeded shuffle; a short tail is dropped)."""
    if global_batch_size <= 0:
        raise ValueError(f"global batch size must be > 0, got {global_batch_size}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=g).tolist()
    n_full = n_examples // global_batch_size
    return [order[i * global_batch_size : (i + 1) * global_batch_size] for i in range(n_full)]


def local_slice(batch: Sequence[int], rank: int, world_size: int) -> Sequence[int]:
    """The contiguous share of process ``rank`` (rank order = order of the gathered embeddings)."""
    per = len(batch) // world_size
    return batch[rank * per : (rank + 1) * per]


def in_batch_false_negatives(examples: Sequence[TrainingExample]) -> torch.Tensor:
    """``[N, N]`` bool: True where example *j*'s positive is not a negative for example *i* (``j != i``).

    That is when both positives are the same document (same id or same content: two questions written
    from one chunk) or when *j*'s positive is a document judged relevant to *i* (``exclude``). The loss
    leaves those pairs out of the softmax instead of pushing a query away from its own answer.
    """
    ids = [e.positive.id for e in examples]
    keys = [content_key(e.positive) for e in examples]
    n = len(examples)
    mask = torch.zeros((n, n), dtype=torch.bool)
    for i, ex in enumerate(examples):
        for j in range(n):
            if j != i and (ids[j] == ids[i] or keys[j] == keys[i] or ids[j] in ex.exclude):
                mask[i, j] = True
    return mask


def batch_records(examples: Sequence[TrainingExample]) -> tuple[list[Record], list[Record]]:
    """Queries, and documents laid out as [positives..., negatives of query 0..., of query 1..., ...]."""
    queries = [e.query for e in examples]
    docs = [e.positive for e in examples] + [n for e in examples for n in e.negatives]
    return queries, docs
