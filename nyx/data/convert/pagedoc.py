"""Page-level document QA (a folder of PDFs plus questions with gold pages) -> BEIR folder of rendered pages.

Reads the layout of MMLongBench-Doc (github.com/mayubo2333/MMLongBench-Doc: ``data/documents/*.pdf`` and
``data/samples.json``), the page-level document QA set published with its PDFs. ``samples.json`` is a JSON array
(a ``.jsonl`` or ``.parquet`` file of the same rows is read too) of questions with

* ``doc_id``: the PDF's file name (``PH_2016.06.08_Economy-Final.pdf``);
* ``question``; ``answer`` (a string; ``Not answerable`` for questions without evidence); ``answer_format``,
  ``doc_type``, ``evidence_sources`` (kept when present);
* ``evidence_pages``: the gold pages, 1-based, as a list or its JSON text (``"[19, 20]"``, ``"[]"``).

ViDoRe's QA rows (``vidore/*_test`` parquet; the columns its evaluator reads are ``query`` and
``image_filename``, and the rows carry ``answer`` and ``page``) name the page by its rendered image rather than by a
PDF; such rows convert too when they also carry ``doc_id`` naming the PDF: ``query`` is read as ``question`` and
``page`` as ``evidence_pages``. An optional ``id`` / ``qid`` names the question; otherwise its id is
``<pdf stem>-q<row number, 4 digits>``.

Every PDF under SRC (searched recursively; ``--limit`` keeps only the PDFs its questions name) becomes one
document per page, rendered and read by :mod:`nyx.data.pdf` exactly as ``nyx ingest`` does, with the same ids,
``<file stem>__p<NNN>``: a folder converted here and the same PDFs ingested with ``nyx ingest`` share page ids, so
these judgements score an index built from either. The gold pages are the qrels (score 1); questions without
evidence pages keep their answers and have no judgements. A row naming an unknown PDF, a page beyond the document,
or unparseable pages is a reject; so is a PDF that cannot be read (with the reason ``nyx ingest`` gives).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nyx.data.convert.common import (
    BenchmarkWriter,
    ConvertError,
    ConvertResult,
    RecordError,
    answer_list,
    iter_rows,
    require_str,
)
from nyx.data.records import Record

QUESTION_FILES = (
    "samples.json",
    "data/samples.json",
    "questions.jsonl",
    "questions.json",
    "samples.jsonl",
    "queries.parquet",
    "test.parquet",
)


def _question_file(src: Path) -> Path:
    for name in QUESTION_FILES:
        if (src / name).is_file():
            return src / name
    found = sorted(src.glob("*.parquet"))
    if len(found) == 1:
        return found[0]
    raise ConvertError(f"no question file in {src}: expected one of {', '.join(QUESTION_FILES)}")


def _rows(path: Path, writer: BenchmarkWriter) -> Iterator[tuple[str, Any]]:
    if path.suffix != ".parquet":
        yield from iter_rows(path, writer.rejects)
        return
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=[c for c in pq.read_schema(path).names if c != "image"])
    except (OSError, ValueError) as e:
        raise ConvertError(f"cannot read {path}: {e}") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path.name}[{i}]", row


def _pages(value: Any, qid: str) -> list[int]:
    """Gold pages from a list, an int, or their JSON text; 1-based."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            raise RecordError(
                f'bad evidence pages: {value!r} does not parse (expected e.g. "[3, 5]")', record_id=qid
            ) from None
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    pages = []
    for p in items:
        if isinstance(p, str) and p.strip().isdigit():
            p = int(p)
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise RecordError(f"bad evidence pages: {p!r} is not a page number (1-based)", record_id=qid)
        if p not in pages:
            pages.append(p)
    return pages


def convert_pagedoc(
    src: Path, out: Path, split: str | None = None, limit: int | None = None, image_config: Any = None, **_: Any
) -> ConvertResult:
    """Page-level document QA: SRC is the folder holding the PDFs and the question file."""
    from nyx.data.pdf import PdfStats, iter_pdf, page_id
    from nyx.data.sources import clean_id

    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f"pagedoc needs a folder holding the PDFs and the questions: {src}")
    qpath = _question_file(src)
    split = split or "test"
    with BenchmarkWriter("pagedoc", src, split) as w:
        pdfs: dict[str, Path] = {}
        for p in sorted(src.rglob("*")):
            if p.suffix.lower() != ".pdf" or not p.is_file() or any(x.startswith(".") for x in p.parts[-2:]):
                continue
            if p.name in pdfs:
                w.reject(
                    RecordError(f"a second PDF named {p.name} (kept {pdfs[p.name]})", record_id=p.name), location=str(p)
                )
                continue
            pdfs[p.name] = p
        if not pdfs:
            raise ConvertError(f"no PDF under {src}")

        # 1. the questions
        questions: list[tuple[str, str, Record, str, list[int]]] = []
        n = 0
        for where, row in _rows(qpath, w):
            if limit is not None and n >= limit:
                break
            n += 1
            given = (row.get("id") or row.get("qid")) if isinstance(row, dict) else None
            qid = str(given) if given else f"row-{n}"
            with w.guard(where, qid, raw=row):
                doc = require_str(row, "doc_id", qid)
                name = doc if doc.lower().endswith(".pdf") else f"{doc}.pdf"
                if name not in pdfs:
                    raise RecordError(f"unknown PDF: doc_id {doc!r} names no PDF under {src}", record_id=qid)
                if not given:
                    qid = f"{clean_id(Path(name).stem)}-q{n:04d}"
                question = require_str(row, "question" if "question" in row else "query", qid)
                answers = answer_list(row.get("answer"))
                if not answers:
                    raise RecordError("no gold answer ('answer' is missing or empty)", record_id=qid)
                pages = _pages(row.get("evidence_pages", row.get("page")), qid)
                extra = {
                    k: row[k] for k in ("answer_format", "doc_type", "evidence_sources") if isinstance(row.get(k), str)
                }
                query = Record.from_text(qid, question, answer=answers, doc_id=name, **extra)
                questions.append((where, qid, query, name, pages))

        # 2. the pages of the PDFs (all, or those the questions name when --limit cuts the questions)
        needed = {q[3] for q in questions} if limit is not None else set(pdfs)
        n_pages: dict[str, int] = {}
        stems: dict[str, str] = {}
        stats = PdfStats()
        for name in sorted(needed):
            stem = clean_id(pdfs[name].stem)
            if stem in stems:
                w.reject(
                    RecordError(
                        f"PDFs {stems[stem]} and {name} give the same page ids ({stem}__pNNN); kept the first",
                        record_id=name,
                    ),
                    location=str(pdfs[name]),
                )
                continue
            stems[stem] = name
            for rec in iter_pdf(
                pdfs[name], w.scratch / "pages", w.rejects, image_config, stem=stem, stats=stats, source=name
            ):
                w.add_doc(rec)
            if name in stats.per_file:  # opened (a file PDFium refuses is one reject, and not here)
                n_pages[name] = stats.per_file[name]["pages"] + stats.per_file[name]["rejected"]

        # 3. judgements on the page ids
        for where, qid, query, name, pages in questions:
            with w.guard(where, qid):
                stem = clean_id(pdfs[name].stem)
                if stems.get(stem) != name or name not in n_pages:
                    raise RecordError(f"unreadable PDF: {name} could not be read (see its reject)", record_id=qid)
                for page in pages:
                    if page > n_pages[name]:
                        raise RecordError(
                            f"page out of range: evidence page {page} is beyond {name}'s {n_pages[name]} pages",
                            record_id=qid,
                        )
                gold = [page_id(stem, p) for p in pages]
                if not pages:
                    query.extra["modality"] = "image1"  # every page is a rendered image
                w.add_question(query, gold)
        return w.write(out)
