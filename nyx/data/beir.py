"""BEIR-layout evaluation folders and TREC run files.

A folder holds::

    corpus.jsonl    documents in the Nyx part format (text-only BEIR records with _id/title/text load too)
    queries.jsonl   queries in the same format; extra fields are kept (answer, choices, correct_index, modality)
    qrels.tsv       header "query-id<TAB>corpus-id<TAB>score", one judgement per line
                    (the BEIR ``qrels/<split>.tsv`` layout is read as well)

Image paths in the JSONL files are relative to the folder. Runs (retrieval results) are TREC run files:
``qid Q0 docid rank score tag``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nyx.data.records import Record, is_data_url, iter_jsonl
from nyx.data.rejects import RecordError, RejectLog
from nyx.utils.io import atomic_dir, atomic_write

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FILE = "qrels.tsv"
QRELS_HEADER = ("query-id", "corpus-id", "score")
QUERY_FIELDS = ("answer", "choices", "correct_index", "modality")  # extra query fields NyxQA writes


@dataclass
class BeirDataset:
    """An evaluation set: corpus and queries by id, and graded relevance judgements."""

    corpus: dict[str, Record] = field(default_factory=dict)
    queries: dict[str, Record] = field(default_factory=dict)
    qrels: Qrels = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.queries)


# ----------------------------------------------------------------------------------------------------------
# qrels and runs
# ----------------------------------------------------------------------------------------------------------


def _reject_or_raise(err: RecordError, rejects: RejectLog | None, raw: str | None = None) -> None:
    if rejects is None:
        raise err
    rejects.add(err, raw=raw)


def read_qrels(path: str | os.PathLike, rejects: RejectLog | None = None) -> Qrels:
    """``{query_id: {doc_id: score}}`` from a BEIR qrels TSV (header optional; scores must be integers)."""
    path = Path(path)
    qrels: Qrels = {}
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and tuple(c.strip().lower() for c in row[:3]) == QRELS_HEADER:
                continue
            where = f"{path.name}:{lineno}"
            if len(row) != 3:
                _reject_or_raise(
                    RecordError(f"malformed qrels line: {len(row)} fields, expected 3", location=where),
                    rejects,
                    "\t".join(row),
                )
                continue
            qid, did, score = (c.strip() for c in row)
            try:
                value = float(score)
                if not value.is_integer():
                    raise ValueError
            except ValueError:
                _reject_or_raise(
                    RecordError(
                        f"malformed qrels line: score {score!r} is not an integer", record_id=qid, location=where
                    ),
                    rejects,
                    "\t".join(row),
                )
                continue
            if not qid or not did:
                _reject_or_raise(RecordError("malformed qrels line: empty id", location=where), rejects, "\t".join(row))
                continue
            qrels.setdefault(qid, {})[did] = int(value)
    return qrels


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> Path:
    """Write qrels as BEIR TSV (with header), sorted by query then document id, atomically."""
    with atomic_write(path, "w") as f:
        f.write("\t".join(QRELS_HEADER) + "\n")
        for qid in sorted(qrels):
            for did in sorted(qrels[qid]):
                f.write(f"{qid}\t{did}\t{int(qrels[qid][did])}\n")
    return Path(path)


def read_trec_run(path: str | os.PathLike) -> Run:
    """``{query_id: {doc_id: score}}`` from a TREC run file (``qid Q0 docid rank score tag``)."""
    path = Path(path)
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise RecordError(
                    f"malformed run line: {len(fields)} fields, expected 6", location=f"{path.name}:{lineno}"
                )
            qid, _, did, _, score, _ = fields
            try:
                run.setdefault(qid, {})[did] = float(score)
            except ValueError:
                raise RecordError(
                    f"malformed run line: score {score!r} is not a number",
                    record_id=qid,
                    location=f"{path.name}:{lineno}",
                ) from None
    return run


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str = "nyx") -> Path:
    """Write a TREC run file atomically: per query, documents by descending score (ties by id), ranks from 1."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be one word, got {tag!r}")
    with atomic_write(path, "w") as f:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda kv: (-float(kv[1]), kv[0]))
            for rank, (did, score) in enumerate(ranked, start=1):
                if any(c.isspace() for c in qid + did):
                    raise ValueError(f"ids in a TREC run cannot contain white space: {qid!r} / {did!r}")
                f.write(f"{qid} Q0 {did} {rank} {float(score):.6f} {tag}\n")
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------------


def _load_records(path: Path, rejects: RejectLog | None, kind: str) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for r in iter_jsonl(path, rejects):
        if r.id in out:
            _reject_or_raise(RecordError(f"duplicate {kind} id", record_id=r.id, location=path.name), rejects)
            continue
        out[r.id] = r
    return out


def _qrels_path(folder: Path, split: str | None) -> Path:
    if split is None and (folder / QRELS_FILE).is_file():
        return folder / QRELS_FILE
    candidate = folder / "qrels" / f"{split or 'test'}.tsv"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"no qrels in {folder}: expected {QRELS_FILE} or qrels/{split or 'test'}.tsv")


def load_beir(folder: str | os.PathLike, rejects: RejectLog | None = None, split: str | None = None) -> BeirDataset:
    """Read a BEIR folder. Bad records and judgements naming unknown ids go to ``rejects`` (or raise)."""
    folder = Path(folder)
    corpus = _load_records(folder / CORPUS_FILE, rejects, "corpus")
    queries = _load_records(folder / QUERIES_FILE, rejects, "query")
    qrels: Qrels = {}
    qrels_path = _qrels_path(folder, split)
    where = qrels_path.relative_to(folder).as_posix()
    for qid, docs in read_qrels(qrels_path, rejects).items():
        if qid not in queries:
            _reject_or_raise(RecordError("qrels name an unknown query", record_id=qid, location=where), rejects)
            continue
        kept = {}
        for did, score in docs.items():
            if did in corpus:
                kept[did] = score
            else:
                _reject_or_raise(
                    RecordError(f"qrels name an unknown document {did!r}", record_id=qid, location=where), rejects
                )
        if kept:
            qrels[qid] = kept
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def place_images(
    records: Iterable[Record], final: Path, tmp: Path, images: str, placed: dict[str, str]
) -> list[Record]:
    """Rewrite image paths so they stay valid once ``tmp`` becomes ``final``.

    Images already under ``final`` are carried over at the same relative path (the old folder is replaced);
    with ``images="copy"`` others are copied to ``images/<sha256 prefix><ext>``; otherwise they stay absolute.
    """
    final_abs = final.absolute()
    out = []
    for r in records:
        changed = False
        parts = []
        for p in r.content:
            ref = p.image
            if p.type == "image" and ref and not is_data_url(ref):
                src = Path(ref).absolute()
                if ref not in placed:
                    try:
                        rel = src.relative_to(final_abs)
                    except ValueError:
                        rel = None
                    if rel is None and images == "copy":
                        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:32]
                        rel = Path("images") / (digest + src.suffix.lower())
                    if rel is not None:
                        dest = tmp / rel
                        if not dest.exists():
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(src, dest)
                        placed[ref] = os.fspath(final_abs / rel)
                    else:
                        placed[ref] = os.fspath(src)
                if placed[ref] != ref:
                    p = type(p).of_image(placed[ref])
                    changed = True
            parts.append(p)
        out.append(Record(id=r.id, content=parts, extra=r.extra) if changed else r)
    return out


def write_records(records: Iterable[Record], path: Path, base_dir: Path) -> int:
    n = 0
    seen: set[str] = set()
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            if r.id in seen:
                raise ValueError(f"duplicate id {r.id!r} in {path.name}")
            seen.add(r.id)
            f.write(json.dumps(r.to_json(base_dir), ensure_ascii=False) + "\n")
            n += 1
    return n


def write_beir(
    folder: str | os.PathLike,
    corpus: Iterable[Record],
    queries: Iterable[Record],
    qrels: Mapping[str, Mapping[str, int]],
    images: Literal["reference", "copy"] = "reference",
) -> Path:
    """Write a BEIR folder atomically (built beside it, swapped in whole on success).

    ``images="copy"`` makes the folder self-contained (images copied under ``images/``); the default keeps
    references to images elsewhere as absolute paths. Images that already lie inside ``folder`` are kept.
    """
    if images not in ("reference", "copy"):
        raise ValueError(f"images must be 'reference' or 'copy', got {images!r}")
    final = Path(folder)
    placed: dict[str, str] = {}
    with atomic_dir(final) as tmp:
        corpus_l = place_images(corpus, final, tmp, images, placed)
        queries_l = place_images(queries, final, tmp, images, placed)
        write_records(corpus_l, tmp / CORPUS_FILE, final.absolute())
        write_records(queries_l, tmp / QUERIES_FILE, final.absolute())
        write_qrels(qrels, tmp / QRELS_FILE)
    return final


__all__ = [
    "BeirDataset",
    "CORPUS_FILE",
    "QRELS_FILE",
    "QUERIES_FILE",
    "QUERY_FIELDS",
    "Qrels",
    "Run",
    "load_beir",
    "read_qrels",
    "read_trec_run",
    "write_beir",
    "write_qrels",
    "write_trec_run",
]
