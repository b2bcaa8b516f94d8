"""What every benchmark converter shares: reading the published files, building a deduplicated corpus, queries and
judgements, and writing them as one BEIR folder that ``nyx evaluate``, ``nyx report`` and ``eval_report`` read.

The output folder (written atomically: built beside it, swapped in whole on success)::

    corpus.jsonl         documents in the Nyx part format (images copied under images/, paths relative)
    queries.jsonl        questions; the gold answers the RAG evaluation reads are in each record's extra fields:
                         ``answer`` (a list: every published answer and alias), ``choices`` + ``correct_index``
                         (multiple choice only) and ``modality`` (text | image1 | image2+: images in the gold
                         documents, the grouping NyxQA uses)
    qrels.tsv            judgements (query-id, corpus-id, score); the same again as qrels/<split>.tsv
    rejects.jsonl        the rows that could not be used, each with its id, where it was and why (only if any)
    convert.json         what was read and what came out: format, source, split, counts, notes

Bad rows never stop a conversion: each becomes a reject naming the row and the reason, and the rest goes on. A file
that cannot be read at all (missing, not JSON) is a :class:`ConvertError`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog

__all__ = [
    "BenchmarkWriter",
    "ConvertError",
    "ConvertResult",
    "answer_list",
    "find_file",
    "iter_rows",
    "modality_for",
    "require_str",
    "slug",
    "text_doc_id",
    "text_record",
]

MANIFEST_FILE = "convert.json"
REJECTS_FILE = "rejects.jsonl"
#: what a converted folder holds (a folder holding anything else is not overwritten)
OUTPUT_ENTRIES = frozenset(
    {"corpus.jsonl", "queries.jsonl", "qrels.tsv", "qrels", "images", REJECTS_FILE, MANIFEST_FILE}
)


class ConvertError(ValueError):
    """A source that cannot be converted at all (a missing or unreadable file), as opposed to a bad row."""


@dataclass
class ConvertResult:
    """What a conversion wrote, with counts (what ``nyx convert`` prints)."""

    format: str
    source: str
    out: Path
    split: str
    queries: int = 0
    docs: int = 0
    qrels: int = 0
    queries_without_qrels: int = 0
    rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    rejects_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "source": self.source,
            "split": self.split,
            "out": str(self.out),
            "corpus": str(self.out / "corpus.jsonl"),
            "queries_file": str(self.out / "queries.jsonl"),
            "qrels_file": str(self.out / "qrels.tsv"),
            "queries": self.queries,
            "docs": self.docs,
            "qrels": self.qrels,
            "queries_without_qrels": self.queries_without_qrels,
            "rejected": self.rejected,
            "rejects": dict(sorted(self.reject_reasons.items())),
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------


def slug(text: str, max_len: int = 60) -> str:
    """A readable id fragment: white space runs become ``_`` (ids end up in TREC runs and TSV files)."""
    out = "_".join(text.split())[:max_len]
    return out or "untitled"


def text_doc_id(title: str, text: str) -> str:
    """A stable, content-addressed id for a titled paragraph: ``<title slug>--<sha1(title, text)[:10]>``.

    The same paragraph repeated across questions (HotpotQA distractors) gets the same id; two different paragraphs
    under one title get two ids, so judgements always point at the paragraph the question was published with."""
    digest = hashlib.sha1(f"{title}\n{text}".encode()).hexdigest()[:10]
    return f"{slug(title)}--{digest}"


def answer_list(*values: Any) -> list[str]:
    """Every non-empty answer among ``values`` (strings, numbers, or lists of them), de-duplicated, in order."""
    out: list[str] = []
    for v in values:
        items = v if isinstance(v, (list, tuple)) else [v]
        for a in items:
            if isinstance(a, bool) or a is None:
                continue
            if isinstance(a, (int, float)):
                a = str(a)
            if isinstance(a, str) and a.strip() and a.strip() not in out:
                out.append(a.strip())
    return out


def modality_for(n_images: int) -> str:
    """The NyxQA modality group of a question from the image count of its gold documents."""
    return "text" if n_images == 0 else ("image1" if n_images == 1 else "image2+")


def require_str(row: Mapping[str, Any], key: str, record_id: str | None = None) -> str:
    """``row[key]`` as a non-empty string, or a :class:`RecordError` naming the field."""
    if not isinstance(row, Mapping):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", record_id=record_id)
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else f"not a non-empty string ({type(value).__name__})"
        raise RecordError(f"field {key!r} is {what}", record_id=record_id)
    return value.strip()


def find_file(src: Path, candidates: Sequence[str], what: str) -> Path:
    """``src`` itself when it is a file, else the first of ``candidates`` (relative paths) under it."""
    if src.is_file():
        return src
    if not src.exists():
        raise ConvertError(f"no such file or folder: {src}")
    for c in candidates:
        if (src / c).is_file():
            return src / c
    raise ConvertError(f"no {what} in {src}: expected one of {', '.join(candidates)}")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_rows(path: Path, rejects: RejectLog) -> Iterator[tuple[str, Any]]:
    """``(location, row)`` of a JSON-lines file or a JSON array (``.gz`` too). A malformed JSON line is a reject
    and the next line goes on; a JSON array that does not parse is a :class:`ConvertError` (nothing can be read)."""
    name = path.name
    jsonl = ".jsonl" in path.suffixes
    try:
        with _open_text(path) as f:
            if not jsonl:
                try:
                    data = json.load(f)
                except json.JSONDecodeError as e:
                    raise ConvertError(f"{name} is not valid JSON: {e.msg} at line {e.lineno}") from None
                if isinstance(data, dict):  # {id: row} (ScienceQA's problems.json) -> rows carrying their key
                    data = [{"__key__": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
                if not isinstance(data, list):
                    raise ConvertError(f"{name}: expected a JSON array of rows, got {type(data).__name__}")
                for i, row in enumerate(data):
                    yield f"{name}[{i}]", row
                return
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    rejects.add(
                        RecordError(f"malformed JSON: {e.msg} at column {e.colno}", location=f"{name}:{lineno}"),
                        raw=line.rstrip("\n")[:500],
                    )
                    continue
                yield f"{name}:{lineno}", row
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ConvertError(f"cannot read {path}: {e}") from None


# ----------------------------------------------------------------------------------------------------------
# The writer every converter fills
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Doc:
    record: Record
    signature: str


def _signature(r: Record) -> str:
    return json.dumps([[p.type, p.text or p.image] for p in r.content], ensure_ascii=False)


class BenchmarkWriter:
    """Collects one benchmark's documents, questions and judgements, then writes the BEIR folder.

    * :meth:`add_doc` de-duplicates: an id seen before with the same content is the same document; with other
      content it is a reject (``conflicting document``) and the first one stays.
    * :meth:`add_question` takes a question with its own documents and gold document ids at once, so a row that
      fails validation adds nothing (no orphan documents). A gold id that is not in the corpus rejects the question.
    * :meth:`guard` turns any malformed-row error into a reject naming the row, and the conversion goes on.

    Use as a context manager: :attr:`scratch` is a temporary folder (rendered PDF pages) removed on exit.
    """

    def __init__(self, fmt: str, source: str | os.PathLike, split: str, stage: str | None = None) -> None:
        self.format = fmt
        self.source = str(source)
        self.split = split
        self.rejects = RejectLog(stage=stage or f"convert-{fmt}")
        self.notes: list[str] = []
        self._docs: dict[str, _Doc] = {}
        self._queries: dict[str, Record] = {}
        self._qrels: dict[str, dict[str, int]] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> BenchmarkWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def scratch(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"nyx-convert-{self.format}-")
        return Path(self._tmp.name)

    # -- content --------------------------------------------------------------------------------------------
    def has_doc(self, doc_id: str) -> bool:
        return doc_id in self._docs

    def doc(self, doc_id: str) -> Record:
        return self._docs[doc_id].record

    def add_doc(self, record: Record) -> str:
        """Add a document (or find it again); returns its id."""
        sig = _signature(record)
        seen = self._docs.get(record.id)
        if seen is None:
            self._docs[record.id] = _Doc(record, sig)
        elif seen.signature != sig:
            self.rejects.add(
                RecordError(
                    "conflicting document: the id was seen before with other content (kept the first)",
                    record_id=record.id,
                )
            )
        return record.id

    def add_question(
        self, query: Record, relevant: Mapping[str, int] | Iterable[str], docs: Iterable[Record] = ()
    ) -> None:
        """Add a question, the documents it comes with, and its gold documents (ids, or ids with grades).

        Sets ``extra['modality']`` from the images of the gold documents unless the caller set it. Raises
        :class:`RecordError` (nothing added) for a duplicate question id or a gold id not in the corpus."""
        docs = list(docs)
        rel = dict(relevant) if isinstance(relevant, Mapping) else {d: 1 for d in relevant}
        if query.id in self._queries:
            raise RecordError("duplicate question id (kept the first)", record_id=query.id)
        local = {d.id for d in docs}
        missing = [d for d in rel if d not in local and d not in self._docs]
        if missing:
            raise RecordError(f"gold document not in corpus: {missing[0]!r}", record_id=query.id)
        for d in docs:
            self.add_doc(d)
        if "modality" not in query.extra:
            query.extra["modality"] = modality_for(sum(self._docs[d].record.n_images for d in rel))
        self._queries[query.id] = query
        if rel:
            self._qrels[query.id] = rel

    def reject(self, error: RecordError | str, location: str | None = None, raw: Any = None) -> None:
        self.rejects.add(error, location=location, raw=raw)

    @contextlib.contextmanager
    def guard(self, location: str, record_id: str | None = None, raw: Any = None) -> Iterator[None]:
        """Turn a malformed row into a reject (id, location, reason) and go on with the next row."""
        try:
            yield
        except RecordError as e:
            e.record_id = e.record_id or record_id
            e.location = e.location or location
            self.rejects.add(e, raw=_short(raw))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            reason = (
                f"malformed row: missing field {e}"
                if isinstance(e, KeyError)
                else f"malformed row: {type(e).__name__}: {e}"
            )
            self.rejects.add(RecordError(reason, record_id=record_id, location=location), raw=_short(raw))

    @property
    def n_queries(self) -> int:
        return len(self._queries)

    # -- output ---------------------------------------------------------------------------------------------
    def write(self, out: str | os.PathLike) -> ConvertResult:
        """Write the folder (atomically). Raises :class:`ConvertError` when no question is usable; the rejects are
        then written beside the folder (``<out>.rejects.jsonl``)."""
        from nyx.data.beir import CORPUS_FILE, QRELS_FILE, QUERIES_FILE, place_images, write_qrels, write_records
        from nyx.utils.io import atomic_dir, write_json

        out = Path(out)
        if not self._queries:
            path = out.with_name(f"{out.name}.rejects.jsonl")
            if self.rejects.count:
                self.rejects.write(path)
            raise ConvertError(
                f"no usable questions in {self.source}"
                + (f" ({self.rejects.count} rejected; details in {path})" if self.rejects.count else "")
            )
        result = ConvertResult(
            format=self.format,
            source=self.source,
            out=out,
            split=self.split,
            queries=len(self._queries),
            docs=len(self._docs),
            qrels=sum(len(v) for v in self._qrels.values()),
            queries_without_qrels=sum(q not in self._qrels for q in self._queries),
            rejected=self.rejects.count,
            reject_reasons=self.rejects.reasons(),
            notes=list(self.notes),
        )
        placed: dict[str, str] = {}
        with atomic_dir(out) as tmp:
            corpus = place_images([d.record for d in self._docs.values()], out, tmp, "copy", placed)
            queries = place_images(list(self._queries.values()), out, tmp, "copy", placed)
            write_records(corpus, tmp / CORPUS_FILE, out.absolute())
            write_records(queries, tmp / QUERIES_FILE, out.absolute())
            write_qrels(self._qrels, tmp / QRELS_FILE)
            write_qrels(self._qrels, tmp / "qrels" / f"{self.split}.tsv")
            if self.rejects.count:
                self.rejects.write(tmp / REJECTS_FILE)
                result.rejects_file = out / REJECTS_FILE
            manifest = result.summary()
            manifest.pop("out"), manifest.pop("corpus"), manifest.pop("queries_file"), manifest.pop("qrels_file")
            manifest["rejects_file"] = REJECTS_FILE if self.rejects.count else None
            write_json(manifest, tmp / MANIFEST_FILE)
        return result


def _short(raw: Any) -> Any:
    """A rejected row as kept in rejects.jsonl: whole if small, else its JSON cut to 2,000 characters."""
    if raw is None:
        return None
    try:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(raw)[:2000]
    return raw if len(text) <= 2000 else text[:2000] + "..."


def text_record(doc_id: str, title: str, text: str, **extra: Any) -> Record:
    """A titled text document: the title on the first line, then the text (as BEIR text records load)."""
    body = f"{title}\n{text}".strip() if title else text.strip()
    return Record(id=doc_id, content=[Part.of_text(body)], extra={"title": title, **extra} if title else extra)
