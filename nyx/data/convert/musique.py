"""MuSiQue -> BEIR folder.

Reads the files the authors publish (github.com/StonyBrookNLP/musique, ``musique_ans_v1.0_{train,dev,test}.jsonl``
and ``musique_full_v1.0_*.jsonl``; schema in that README): one JSON object per line with ``id``, ``question``,
``answer``, ``answer_aliases`` (list), ``answerable`` (bool), ``paragraphs`` (``[{idx, title, paragraph_text,
is_supporting}, ...]``, 20 per question) and ``question_decomposition`` (the single-hop steps; kept as ``hops``).

Each paragraph becomes a document with the content-addressed id ``<title>--<hash>`` (shared by every question
that comes with the same paragraph); the ``is_supporting`` paragraphs are the gold documents. The gold answers are
``answer`` plus ``answer_aliases``. Unanswerable questions (``answerable: false``, in the ``full`` files) have no
supporting paragraph by design and their ``answer`` is not what a reader should say: they are rejects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nyx.data.convert.common import (
    BenchmarkWriter,
    ConvertResult,
    RecordError,
    answer_list,
    find_file,
    iter_rows,
    require_str,
    text_doc_id,
    text_record,
)
from nyx.data.records import Record


def convert_musique(
    src: Path, out: Path, split: str | None = None, limit: int | None = None, **_: Any
) -> ConvertResult:
    """MuSiQue: SRC is the JSONL file, or a folder holding ``musique_ans_v1.0_<split>.jsonl`` (split ``dev``)."""
    split = split or "dev"
    path = find_file(
        Path(src),
        [f"musique_ans_v1.0_{split}.jsonl", f"data/musique_ans_v1.0_{split}.jsonl", f"musique_full_v1.0_{split}.jsonl"],
        "MuSiQue file",
    )
    with BenchmarkWriter("musique", path, split) as w:
        n = 0
        for where, row in iter_rows(path, w.rejects):
            if limit is not None and n >= limit:
                break
            n += 1
            qid = row.get("id") if isinstance(row, dict) else None
            with w.guard(where, str(qid) if qid is not None else None, raw=row):
                qid = require_str(row, "id")
                question = require_str(row, "question", qid)
                if row.get("answerable") is False:
                    raise RecordError(
                        "unanswerable question (answerable is false), with no supporting paragraph and "
                        "no answer to score",
                        record_id=qid,
                    )
                answers = answer_list(row.get("answer"), row.get("answer_aliases") or [])
                if not answers:
                    raise RecordError("no gold answer ('answer' is missing or empty)", record_id=qid)
                paragraphs = row.get("paragraphs")
                if not isinstance(paragraphs, list) or not paragraphs:
                    raise RecordError("field 'paragraphs' is missing or empty", record_id=qid)
                docs, gold = [], []
                for i, p in enumerate(paragraphs):
                    title = require_str(p, "title", qid) if isinstance(p, dict) else None
                    text = p.get("paragraph_text") if isinstance(p, dict) else None
                    if title is None or not isinstance(text, str) or not text.strip():
                        raise RecordError(
                            f"malformed paragraphs: paragraphs[{i}] has no title or paragraph_text", record_id=qid
                        )
                    doc = text_record(text_doc_id(title, text.strip()), title, text.strip())
                    docs.append(doc)
                    if p.get("is_supporting") is True:
                        gold.append(doc.id)
                if not gold:
                    raise RecordError("no paragraph has is_supporting: true", record_id=qid)
                hops = row.get("question_decomposition")
                extra = {"hops": len(hops)} if isinstance(hops, list) else {}
                w.add_question(Record.from_text(qid, question, answer=answers, **extra), gold, docs=docs)
        return w.write(out)
