"""MultimodalQA (MMQA) -> BEIR folder, images included.

Reads the files the authors publish (github.com/allenai/multimodalqa, ``dataset/``; schema in that README), plain
or gzipped:

* ``MMQA_<split>.jsonl``: ``qid``, ``question``, ``answers`` (``[{answer, type, modality, text_instances,
  table_indices, image_instances}, ...]``), ``metadata`` (``type``, ``modalities``, ``text_doc_ids``,
  ``image_doc_ids``, ``table_id``, ...) and ``supporting_context`` (``[{doc_id, doc_part: text|table|image}, ...]``);
  the test file has neither answers nor supporting context, so its questions are rejects;
* ``MMQA_texts.jsonl`` (``id``, ``title``, ``url``, ``text``), ``MMQA_tables.jsonl`` (``id``, ``title``, ``url``,
  ``table: {table_name, header: [{column_name, ...}], table_rows: [[{text, links}, ...], ...]}``) and
  ``MMQA_images.jsonl`` (``id``, ``title``, ``url``, ``path``);
* the image folder from ``final_dataset_images.zip`` (``final_dataset_images/`` or ``images/`` beside the files, or
  the folder itself), where each image's ``path`` points.

Documents keep MMQA's own ids: a text passage is its title and text, a table is its title, name, header and rows
as ``|``-separated lines, an image is its title (the Wikipedia entity it depicts) then the image. The corpus is the
union of the questions' contexts (``metadata`` text, image and table ids plus the supporting context), each document
once. Gold documents are the ``supporting_context`` ids; gold answers all ``answers[].answer`` strings (MMQA has no
options). A question's modality group counts the images among its gold documents. A context document missing from
the files, or an image whose file is missing, is a reject; a question whose gold document is missing is a reject.
"""

from __future__ import annotations

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
    text_record,
)
from nyx.data.records import Part, Record

_PARTS = ("text", "table", "image")


def _find(src: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz", f"dataset/{stem}.jsonl", f"dataset/{stem}.jsonl.gz"):
        if (src / name).is_file():
            return src / name
    raise ConvertError(f"no {stem}.jsonl(.gz) in {src}")


def _image_root(src: Path) -> Path:
    for name in ("final_dataset_images", "images", "dataset/final_dataset_images"):
        if (src / name).is_dir():
            return src / name
    return src


def _table_text(row: dict[str, Any]) -> str:
    table = row["table"]
    lines = [str(table.get("table_name") or "")]
    header = [str(h.get("column_name", "")) if isinstance(h, dict) else str(h) for h in table.get("header") or []]
    if header:
        lines.append(" | ".join(header))
    for cells in table.get("table_rows") or []:
        lines.append(" | ".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in cells))
    return "\n".join(x for x in lines if x.strip())


def _context_ids(row: dict[str, Any], qid: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``({doc_id: part}, gold [(doc_id, part)])`` of a question row."""
    found = row.get("metadata")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    ids: dict[str, str] = {}
    for key, part in (("text_doc_ids", "text"), ("image_doc_ids", "image")):
        for d in meta.get(key) or []:
            ids.setdefault(str(d), part)
    if meta.get("table_id"):
        ids.setdefault(str(meta["table_id"]), "table")
    gold: list[tuple[str, str]] = []
    support = row.get("supporting_context")
    if not isinstance(support, list) or not support:
        raise RecordError("no supporting_context (the unlabelled test split has none)", record_id=qid)
    for i, s in enumerate(support):
        if not isinstance(s, dict) or not s.get("doc_id") or s.get("doc_part") not in _PARTS:
            raise RecordError(
                f"malformed supporting_context: supporting_context[{i}] is not {{doc_id, doc_part}}", record_id=qid
            )
        pair = (str(s["doc_id"]), s["doc_part"])
        if pair not in gold:
            gold.append(pair)
        ids.setdefault(pair[0], pair[1])
    return ids, gold


def convert_mmqa(src: Path, out: Path, split: str | None = None, limit: int | None = None, **_: Any) -> ConvertResult:
    """MMQA: SRC is the folder holding the four JSONL files and the images (split ``dev``)."""
    split = split or "dev"
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f"MMQA needs a folder (MMQA_{split}.jsonl, MMQA_texts/tables/images.jsonl, images): {src}")
    qpath = _find(src, f"MMQA_{split}")
    with BenchmarkWriter("mmqa", src, split) as w:
        # 1. the questions (so only the documents they name are kept from the large context files)
        questions: list[tuple[str, str, list[str], dict[str, str], list[tuple[str, str]], dict[str, Any]]] = []
        n = 0
        for where, row in iter_rows(qpath, w.rejects):
            if limit is not None and n >= limit:
                break
            n += 1
            qid = row.get("qid") if isinstance(row, dict) else None
            with w.guard(where, str(qid) if qid is not None else None, raw=row):
                qid = require_str(row, "qid")
                question = require_str(row, "question", qid)
                raw_answers = row.get("answers")
                answers = answer_list([a.get("answer") if isinstance(a, dict) else a for a in raw_answers or []])
                if not answers:
                    raise RecordError("no gold answer (the unlabelled test split has none)", record_id=qid)
                ids, gold = _context_ids(row, qid)
                meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
                extra = {"type": meta["type"]} if isinstance(meta.get("type"), str) else {}
                questions.append((where, qid, answers, ids, gold, {"question": question, **extra}))
        wanted: dict[str, set[str]] = {p: set() for p in _PARTS}
        for _where, _qid, _answers, ids, _gold, _extra in questions:
            for d, part in ids.items():
                wanted[part].add(d)

        # 2. the documents they name
        docs: dict[str, Record] = {}
        image_root = _image_root(src)
        for part, stem in (("text", "MMQA_texts"), ("table", "MMQA_tables"), ("image", "MMQA_images")):
            if not wanted[part]:
                continue
            path = _find(src, stem)
            for where, row in iter_rows(path, w.rejects):
                did = str(row.get("id")) if isinstance(row, dict) and row.get("id") is not None else None
                if did is None or did not in wanted[part] or did in docs:
                    continue
                with w.guard(where, did, raw=row):
                    title = str(row.get("title") or "")
                    if part == "text":
                        docs[did] = text_record(did, title, require_str(row, "text", did), part="text")
                    elif part == "table":
                        docs[did] = text_record(did, title, _table_text(row), part="table")
                    else:
                        image = image_root / require_str(row, "path", did)
                        if not image.is_file():
                            raise RecordError(f"image file not found: {image}", record_id=did)
                        content = ([Part.of_text(title)] if title else []) + [Part.of_image(image.absolute())]
                        docs[did] = Record(id=did, content=content, extra={"title": title, "part": "image"})
            for did in sorted(wanted[part] - docs.keys()):
                if not any(r.get("record_id") == did for r in w.rejects.items):
                    w.reject(
                        RecordError(
                            f"document missing from the context files: a question names this {part} document, "
                            f"{path.name} does not hold it",
                            record_id=did,
                        ),
                        location=path.name,
                    )

        # 3. questions with their contexts
        for where, qid, answers, ids, gold, extra in questions:
            with w.guard(where, qid):
                for d, part in gold:
                    if d not in docs:
                        raise RecordError(
                            f"gold document missing: the {part} document {d!r} could not be read (see its reject)",
                            record_id=qid,
                        )
                question = extra.pop("question")
                w.add_question(
                    Record.from_text(qid, question, answer=answers, **extra),
                    [d for d, _ in gold],
                    docs=[docs[d] for d in ids if d in docs],
                )
        return w.write(out)
