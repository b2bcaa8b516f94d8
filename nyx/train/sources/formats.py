"""Reading a training source as its publisher ships it: the rows of a file (JSONL, a JSON array, or parquet) and
one reader per format that turns a row into one Nyx triple (JSON with absolute image paths), or a RecordError.

Formats (published schemas; the readers accept JSONL, a JSON array, or parquet)
-------------------------------------------------------------------------------
* ``research``: MMEB / mmE5 rows (``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text``,
  ``neg_image_path``; ``<|image|>`` / ``<|image_1|>`` place the images), as ``kind="research"`` reads them, plus the
  paper's rules: a row whose ``pos_text`` is empty is dropped, and an image token in a query that has no image (a
  text-only query) is removed (counted under ``fixed``).
* ``triples``: Nyx triples (image paths relative to the file), validated and copied.
* ``hotpotqa`` / ``2wikimultihopqa`` with recipe ``gold``: the distractor-setting train file (``_id``, ``question``,
  ``context`` = ``[[title, [sentence, ...]], ...]``, ``supporting_facts`` = ``[[title, sent_id], ...]``; the Hugging
  Face column form ``{"title": [...], "sentences": [...]}`` / ``{"title": [...], "sent_id": [...]}`` too). The
  first supporting paragraph (in context order) is the positive, the paragraphs that support nothing are the hard
  negatives; other supporting paragraphs are neither (one triple per question, so no question meets its own
  second paragraph as an in-batch negative).
* ``musique`` with recipe ``gold``: ``id``, ``question``, ``paragraphs`` = ``[{"idx", "title", "paragraph_text",
  "is_supporting"}, ...]``; the same rule (unanswerable rows, without a supporting paragraph, are rejected).
* any text QA set with recipe ``retrieved``: questions with pre-retrieved passages, ranked best first: the paper's
  files (``qry``, ``retrieved_docs`` = list of passage strings) or FlashRAG's (``question``,
  ``output.retrieval_result`` or ``retrieval_result`` = list of ``{"contents"}`` / ``{"title", "text"}``). The
  top-1 passage is the (pseudo-)positive, passages ranked 11 and below the negatives.

Text passages become records ``"<title>\\n<text>"`` with content-derived ids, so the same paragraph is the same
document wherever it occurs (in-batch false negatives are masked by id).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nyx.data.records import record_from_json
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.dataset import RESEARCH_IMAGE_TOKEN, research_to_triple
from nyx.train.dataset.research import as_list
from nyx.utils.io import read_json

#: ``retrieved`` recipe: passages ranked this or lower (1-based) are the negatives
RETRIEVED_NEGATIVES_FROM_RANK = 11

_SPACE = re.compile(r"\s+")


def iter_rows(path: Path, rejects: RejectLog, cap: int | None = None) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` of a JSONL file, a JSON array (or object of rows) or a parquet file, the first ``cap`` rows
    only. A malformed JSONL line is a row too (it counts towards ``cap``) and goes to ``rejects``."""
    if not path.is_file():
        raise FileNotFoundError(f"training source file not found: {path}")
    n = 0

    def capped() -> bool:
        return cap is not None and n >= cap

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if capped():
                    return
                n += 1
                yield f"{path.name}:{n}", row
        return
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if path.suffix == ".json" and head.startswith(b"["):
        rows = read_json(path)
        for i, row in enumerate(rows, start=1):
            if capped():
                return
            n += 1
            yield f"{path.name}[{i - 1}]", row
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if capped():
                return
            n += 1
            where = f"{path.name}:{lineno}"
            try:
                yield where, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                rejects.add(
                    RecordError(f"malformed JSON line: {e}", location=where),
                    raw=raw.decode("utf-8", errors="replace").rstrip("\n"),
                )


def _text_doc(source: str, title: Any, text: Any) -> dict[str, Any]:
    title = str(title or "").strip()
    body = (" ".join(str(s) for s in text) if isinstance(text, (list, tuple)) else str(text or "")).strip()
    full = f"{title}\n{body}" if title and body else (title or body)
    if not full:
        raise ValueError("empty passage")
    digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:16]
    return {"id": f"{source}:p:{digest}", "content": [{"type": "text", "text": full}]}


def _query(source: str, row_id: str, text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        raise RecordError("query: empty question", record_id=row_id)
    return {"id": f"{source}:{row_id}:query", "content": [{"type": "text", "text": text.strip()}]}


def _row_id(row: dict[str, Any], where: str) -> str:
    rid = row.get("_id", row.get("id"))
    return str(rid) if rid not in (None, "") else where


def research_row(row: Any, where: str, source: str, image_root: Path, fixed: dict[str, int]) -> dict[str, Any]:
    """A research (MMEB / mmE5) row as a triple, with the paper's rules (see the module docstring)."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = _row_id(row, where)
    pos_text = row.get("pos_text")
    if pos_text is None or (isinstance(pos_text, str) and not pos_text.strip()):
        raise RecordError("empty pos_text: row dropped", record_id=rid, location=where)
    qry = row.get("qry")
    has_image = any(str(p).strip() for p in as_list(row.get("qry_image_path")))
    if isinstance(qry, str) and not has_image and RESEARCH_IMAGE_TOKEN.search(qry):
        row = {**row, "qry": _SPACE.sub(" ", RESEARCH_IMAGE_TOKEN.sub(" ", qry)).strip(), "qry_image_path": None}
        fixed["stray image token removed from a text-only query"] = (
            fixed.get("stray image token removed from a text-only query", 0) + 1
        )
    triple = research_to_triple({**row, "id": rid}, image_root, record_id=rid)
    triple["id"] = f"{source}:{rid}"
    return triple


def triples_row(row: Any, where: str, source: str, base_dir: Path) -> dict[str, Any]:
    """A Nyx triple (image paths relative to ``base_dir``) with absolute image paths; broken negatives are listed
    under ``dropped_negatives``."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = str(row.get("id") or where)
    out: dict[str, Any] = {"id": f"{source}:{rid}", "negatives": [], "dropped_negatives": []}
    for role in ("query", "positive"):
        raw = row.get(role)
        if isinstance(raw, dict) and "id" not in raw and "_id" not in raw:
            raw = {"id": f"{source}:{rid}:{role}", **raw}
        try:
            out[role] = record_from_json(raw, base_dir).to_json(None)
        except RecordError as e:
            raise RecordError(f"{role}: {e.reason}", record_id=rid, location=where) from None
    negs = row.get("negatives") or []
    for i, raw in enumerate(negs if isinstance(negs, list) else []):
        if isinstance(raw, dict) and "id" not in raw and "_id" not in raw:
            raw = {"id": f"{source}:{rid}:neg{i}", **raw}
        try:
            out["negatives"].append(record_from_json(raw, base_dir).to_json(None))
        except RecordError as e:
            out["dropped_negatives"].append(f"negative {i}: {e.reason}")
    return out


def _pairs(value: Any, keys: tuple[str, str]) -> list[tuple[Any, Any]]:
    """HotpotQA's ``[[a, b], ...]`` or the Hugging Face column form ``{keys[0]: [...], keys[1]: [...]}``."""
    if isinstance(value, dict):
        return list(zip(value.get(keys[0]) or [], value.get(keys[1]) or []))
    out = []
    for item in value or []:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((item[0], item[1]))
        else:
            raise ValueError(f"expected [{keys[0]}, {keys[1]}] pairs, got {item!r:.80}")
    return out


def gold_row(fmt: str, row: Any, where: str, source: str) -> dict[str, Any]:
    """A HotpotQA / 2WikiMultihopQA / MuSiQue train row (recipe ``gold``) as a triple."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = _row_id(row, where)
    query = _query(source, rid, row.get("question"))
    try:
        if fmt == "musique":
            paras = [
                (p.get("title"), p.get("paragraph_text"), bool(p.get("is_supporting")))
                for p in row.get("paragraphs") or []
                if isinstance(p, dict)
            ]
        else:
            context = _pairs(row.get("context"), ("title", "sentences"))
            supporting = {str(t) for t, _ in _pairs(row.get("supporting_facts"), ("title", "sent_id"))}
            paras = [(t, s, str(t) in supporting) for t, s in context]
    except (ValueError, TypeError, AttributeError) as e:
        raise RecordError(f"unreadable paragraphs: {e}", record_id=rid, location=where) from None
    if not paras:
        raise RecordError("no paragraphs", record_id=rid, location=where)
    positive, negatives, dropped = None, [], []
    for i, (title, text, is_supporting) in enumerate(paras):
        try:
            doc = _text_doc(source, title, text)
        except ValueError as e:
            if is_supporting and positive is None:
                raise RecordError(f"positive: {e}", record_id=rid, location=where) from None
            dropped.append(f"paragraph {i}: {e}")
            continue
        if is_supporting:
            positive = positive or doc
        else:
            negatives.append(doc)
    if positive is None:
        raise RecordError("no supporting paragraph (unanswerable)", record_id=rid, location=where)
    return {
        "id": f"{source}:{rid}",
        "query": query,
        "positive": positive,
        "negatives": negatives,
        "dropped_negatives": dropped,
    }


def _passage(source: str, doc: Any) -> dict[str, Any]:
    if isinstance(doc, str):
        return _text_doc(source, "", doc)
    if isinstance(doc, dict):
        if doc.get("contents") is not None:  # FlashRAG corpus: '"Title"\ntext'
            title, _, text = str(doc["contents"]).partition("\n")
            if len(title) >= 2 and title.startswith('"') and title.endswith('"') and text:
                return _text_doc(source, title[1:-1], text)
            return _text_doc(source, "", doc["contents"])
        return _text_doc(source, doc.get("title"), doc.get("text"))
    raise ValueError(f"a passage must be a string or an object, got {type(doc).__name__}")


def retrieved_row(row: Any, where: str, source: str) -> dict[str, Any]:
    """A question with ranked pre-retrieved passages (recipe ``retrieved``) as a triple: top-1 positive,
    ranks 11 and below negatives."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = _row_id(row, where)
    query = _query(source, rid, row.get("question", row.get("qry")))
    docs = row.get("retrieved_docs")
    if docs is None:
        docs = (row.get("output") or {}).get("retrieval_result") if isinstance(row.get("output"), dict) else None
    if docs is None:
        docs = row.get("retrieval_result")
    if not isinstance(docs, list) or not docs:
        raise RecordError(
            "no retrieved passages (retrieved_docs / output.retrieval_result)", record_id=rid, location=where
        )
    try:
        positive = _passage(source, docs[0])
    except ValueError as e:
        raise RecordError(f"positive: {e}", record_id=rid, location=where) from None
    negatives, dropped = [], []
    for rank, doc in enumerate(docs[RETRIEVED_NEGATIVES_FROM_RANK - 1 :], start=RETRIEVED_NEGATIVES_FROM_RANK):
        try:
            negatives.append(_passage(source, doc))
        except ValueError as e:
            dropped.append(f"passage at rank {rank}: {e}")
    return {
        "id": f"{source}:{rid}",
        "query": query,
        "positive": positive,
        "negatives": negatives,
        "dropped_negatives": dropped,
    }
