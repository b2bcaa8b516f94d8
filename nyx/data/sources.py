"""``nyx ingest``: any mix of PDFs, image folders, JSONL records, BEIR folders and OBELICS shards -> one corpus.

What each input path is:

* a ``.pdf`` file: one record per page (:mod:`nyx.data.pdf`), id ``<stem>__pNNN``;
* an image file (``.jpg``, ``.png``, ... as in :data:`nyx.data.obelics.IMAGE_EXTENSIONS`): one record, the text of a
  sidecar caption ``<stem>.txt`` beside it (if any) then the image, id ``<stem>``;
* a ``.jsonl`` file: OBELICS rows (``texts``/``images`` lists) are read by :func:`nyx.data.obelics.iter_obelics`, any
  other JSONL (the Nyx part format, BEIR text records) by :func:`nyx.data.records.iter_jsonl`; the first decodable
  line decides;
* a ``.parquet`` file: an OBELICS shard;
* a folder holding ``corpus.jsonl``: a BEIR folder, of which the corpus is read (queries and judgements are not
  corpus: give them to ``nyx evaluate``);
* a folder holding ``.jsonl`` or ``.parquet`` files (an OBELICS shard folder such as ``data/raw``, a folder of
  records): those files, and the PDFs beside them; its image files and subfolders are taken as the records' own
  images, not as inputs;
* any other folder: walked recursively (hidden entries skipped), each file as above; ids are the path relative to
  that folder without the extension (``scans/page-1``, ``reports/annual__p007``), white space replaced by ``_`` (ids
  end up in TREC run files, which cannot hold it). Other files are skipped and listed.

Every image ends as a file: ``data:`` URLs and embedded bytes are written to the content-addressed image folder, and
every image is decoded fully (as ``raw_documents`` does), so a record whose image is missing or broken is a reject. A
record whose id an earlier input already gave is rejected (``duplicate id``, naming both inputs).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nyx.data.images import ImageConfig, decode_data_url, sniff_mime, verify_image
from nyx.data.obelics import IMAGE_EXTENSIONS, SHARD_SUFFIXES, iter_obelics
from nyx.data.obelics.image_refs import MIME_EXTENSIONS
from nyx.data.pdf import PDF_SUFFIX, PdfStats, iter_pdf
from nyx.data.records import Part, Record, is_data_url, iter_jsonl
from nyx.data.rejects import RecordError, RejectLog, ShardError
from nyx.utils.io import atomic_write

SourceKind = Literal["pdf", "image", "jsonl", "beir", "obelics"]
SOURCE_KINDS: tuple[str, ...] = ("pdf", "image", "jsonl", "beir", "obelics")
CAPTION_SUFFIX = ".txt"
BEIR_CORPUS = "corpus.jsonl"
_SNIFF_LINES = 50


@dataclass(frozen=True)
class Source:
    """One input: what it is, where it is, the id (stem) its records get and how it is named in rejects."""

    kind: SourceKind
    path: Path
    label: str  #: the path as the user gave it (joined with the relative path inside a folder)
    stem: str | None = None  #: PDFs and images: the record id (PDF: before ``__pNNN``)


@dataclass
class IngestStats:
    inputs: Counter = field(default_factory=Counter)  #: kind -> inputs found (rejected files included)
    records: Counter = field(default_factory=Counter)  #: kind -> records kept
    pdf: PdfStats = field(default_factory=PdfStats)
    skipped: list[dict[str, str]] = field(default_factory=list)  #: files that are no input, with why
    duplicates: int = 0
    pages: int = 0  #: PDF page records kept
    image_only_pages: int = 0  #: of which without a text layer

    def summary(self) -> dict[str, Any]:
        return {
            "records": sum(self.records.values()),
            "records_by_kind": {k: self.records.get(k, 0) for k in SOURCE_KINDS},
            "inputs": {k: self.inputs.get(k, 0) for k in SOURCE_KINDS},
            "pdf_files": self.pdf.files,
            "pages": self.pages,
            "text_pages": self.pages - self.image_only_pages,
            "image_only_pages": self.image_only_pages,
            "duplicate_ids": self.duplicates,
            "skipped": len(self.skipped),
            "skipped_files": self.skipped[:20],
        }


def clean_id(stem: str) -> str:
    """A record id from a (relative) path stem: ``/`` separators, white space runs replaced by ``_``."""
    return "_".join(stem.replace(os.sep, "/").split())


# ----------------------------------------------------------------------------------------------------------
# What the inputs are
# ----------------------------------------------------------------------------------------------------------


def is_obelics_jsonl(path: Path) -> bool:
    """True when the first decodable object of a JSONL file is an OBELICS row (``texts`` and ``images`` lists)."""
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f):
                if n >= _SNIFF_LINES:
                    break
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                return isinstance(obj, dict) and "content" not in obj and "texts" in obj and "images" in obj
    except OSError:
        return False
    return False


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _file_source(p: Path, label: str, stem: str) -> Source | None:
    suffix = p.suffix.lower()
    if suffix == PDF_SUFFIX:
        return Source("pdf", p, label, clean_id(stem))
    if _is_image(p):
        return Source("image", p, label, clean_id(stem))
    if p.suffix == ".parquet":
        return Source("obelics", p, label)
    if p.suffix == ".jsonl":
        return Source("obelics" if is_obelics_jsonl(p) else "jsonl", p, label)
    return None


def _walk(
    folder: Path, label: str, rel: str, out: list[Source], skipped: list[dict[str, str]], exclude: set[Path]
) -> None:
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    files = [e for e in entries if e.is_file()]
    dirs = [e for e in entries if e.is_dir()]

    def lab(e: Path) -> str:
        return f"{label}/{e.name}" if label else e.name

    def rid(e: Path) -> str:
        stem = e.name[: -len(e.suffix)] if e.suffix else e.name
        return f"{rel}/{stem}" if rel else stem

    if (folder / BEIR_CORPUS).is_file():
        out.append(Source("beir", folder, label or str(folder)))
        return
    data_files = [e for e in files if e.suffix in SHARD_SUFFIXES]
    if data_files:  # a folder of records: its images and subfolders belong to them
        for e in files:
            if e.suffix in SHARD_SUFFIXES or e.suffix.lower() == PDF_SUFFIX:
                out.append(_file_source(e, lab(e), rid(e)))  # type: ignore[arg-type]
            elif e.name != "manifest.txt":  # the shard sensor's list
                skipped.append(
                    {
                        "path": lab(e),
                        "why": "beside record files (taken as theirs)" if _is_image(e) else "unsupported file type",
                    }
                )
        for d in dirs:
            skipped.append({"path": lab(d), "why": "a folder beside record files (taken as their images)"})
        return
    image_stems = {e.stem for e in files if _is_image(e)}
    for e in files:
        src = _file_source(e, lab(e), rid(e))
        if src is not None:
            out.append(src)
        elif e.suffix.lower() == CAPTION_SUFFIX and e.stem in image_stems:
            continue  # a sidecar caption, read with its image
        else:
            skipped.append(
                {
                    "path": lab(e),
                    "why": "a .txt without an image of the same name"
                    if e.suffix.lower() == CAPTION_SUFFIX
                    else "unsupported file type",
                }
            )
    for d in dirs:
        if d.resolve() in exclude:
            skipped.append({"path": lab(d), "why": "the output folder"})
            continue
        _walk(d, lab(d), f"{rel}/{d.name}" if rel else d.name, out, skipped, exclude)


def discover(
    paths: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()
) -> tuple[list[Source], list[dict[str, str]]]:
    """The inputs under ``paths`` in order (folders walked in name order) and the files skipped, with why.

    ``exclude``: folders never walked into (the output folder). Raises FileNotFoundError for a missing path and
    ValueError for a file that is no input."""
    excluded = {Path(p).resolve() for p in exclude}
    out: list[Source] = []
    skipped: list[dict[str, str]] = []
    for p in paths:
        path = Path(p)
        label = str(p)
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if path.is_dir():
            _walk(path, label.rstrip("/") or label, "", out, skipped, excluded)
            continue
        src = _file_source(path, label, path.stem)
        if src is None:
            raise ValueError(f"cannot ingest {path}: expected a PDF, an image, a JSONL or Parquet file, or a folder")
        out.append(src)
    return out, skipped


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


def _store_bytes(data: bytes, image_dir: Path) -> str:
    """Write image bytes under their content address (as ``ImageResolver``'s byte cache names them)."""
    name = hashlib.sha256(data).hexdigest()[:32] + MIME_EXTENSIONS.get(sniff_mime(data) or "", ".bin")
    path = image_dir / name
    if not path.exists():
        with atomic_write(path, "wb") as f:
            f.write(data)
    return os.fspath(path.absolute())


def _checked(record: Record, image_dir: Path, cfg: ImageConfig) -> Record:
    """``record`` with ``data:`` images written to files, every image decoded fully (RecordError if one fails)."""
    parts = []
    for p in record.content:
        if p.type == "image" and p.image and is_data_url(p.image):
            p = Part.of_image(_store_bytes(decode_data_url(p.image, record.id), image_dir))
        if p.type == "image":
            verify_image(p.image, cfg, record_id=record.id)  # type: ignore[arg-type]
        parts.append(p)
    return Record(id=record.id, content=parts, extra=record.extra)


def _checked_all(
    records: Iterable[Record], image_dir: Path, cfg: ImageConfig, rejects: RejectLog, where: str
) -> Iterator[Record]:
    for r in records:
        try:
            yield _checked(r, image_dir, cfg)
        except RecordError as e:
            e.location = e.location or where
            rejects.add(e)


def _image_record(src: Source, cfg: ImageConfig) -> Record:
    rid = src.stem or src.path.stem
    verify_image(src.path, cfg, record_id=rid)
    parts = []
    caption = src.path.with_suffix(CAPTION_SUFFIX)
    if not caption.is_file() and src.path.with_suffix(CAPTION_SUFFIX.upper()).is_file():
        caption = src.path.with_suffix(CAPTION_SUFFIX.upper())
    if caption.is_file():
        try:
            text = caption.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise RecordError(
                f"unreadable caption: {caption.name} is not UTF-8 ({e.reason} at byte {e.start})", record_id=rid
            ) from None
        if text:
            parts.append(Part.of_text(text))
    parts.append(Part.of_image(src.path.absolute()))
    return Record(id=rid, content=parts, extra={"source": src.label})


def read_source(src: Source, image_dir: Path, rejects: RejectLog, cfg: ImageConfig, stats: IngestStats) -> list[Record]:
    """Every usable record of one input (bad records and bad files go to ``rejects``)."""
    if src.kind == "pdf":
        return list(iter_pdf(src.path, image_dir, rejects, cfg, stem=src.stem, stats=stats.pdf, source=src.label))
    if src.kind == "image":
        try:
            return [_image_record(src, cfg)]
        except RecordError as e:
            e.location = e.location or src.label
            rejects.add(e)
            return []
    if src.kind == "obelics":
        try:  # collected first: a shard unreadable past its first rows keeps none of them
            rows = list(iter_obelics(src.path, rejects, bytes_cache=image_dir))  # images are checked below
        except ShardError as e:
            rejects.add(e.reason, location=src.label)
            return []
        return list(_checked_all(rows, image_dir, cfg, rejects, src.label))
    path = src.path / BEIR_CORPUS if src.kind == "beir" else src.path
    return list(_checked_all(iter_jsonl(path, rejects), image_dir, cfg, rejects, src.label))


def ingest_sources(
    sources: Iterable[Source],
    image_dir: str | os.PathLike,
    rejects: RejectLog,
    cfg: ImageConfig,
    stats: IngestStats | None = None,
) -> list[Record]:
    """The records of every input, in order; an id already taken by an earlier input is a reject naming both."""
    stats = stats if stats is not None else IngestStats()
    image_dir = Path(image_dir)
    seen: dict[str, str] = {}
    out: list[Record] = []
    for src in sources:
        try:
            records = read_source(src, image_dir, rejects, cfg, stats)
        except (OSError, ValueError) as e:  # RecordError is a ValueError
            reason = e.reason if isinstance(e, RecordError) else f"unreadable file: {src.label} ({e})"
            rejects.add(reason, location=src.label)
            continue
        stats.inputs[src.kind] += 1
        for r in records:
            if r.id in seen:
                stats.duplicates += 1
                rejects.add(
                    RecordError(
                        f"duplicate id: {r.id!r} from {src.label} (kept the one from {seen[r.id]})",
                        record_id=r.id,
                        location=src.label,
                    )
                )
                continue
            seen[r.id] = src.label
            stats.records[src.kind] += 1
            if src.kind == "pdf":
                stats.pages += 1
                stats.image_only_pages += not any(p.type == "text" for p in r.content)
            out.append(r)
    return out


__all__ = [
    "IngestStats",
    "SOURCE_KINDS",
    "Source",
    "clean_id",
    "discover",
    "ingest_sources",
    "is_obelics_jsonl",
    "read_source",
]
