"""HotpotQA (distractor setting) -> BEIR folder.

Reads the file the HotpotQA authors publish, ``hotpot_dev_distractor_v1.json`` (hotpotqa.github.io; schema in the
HotpotQA README): a JSON array of questions, each with

* ``_id``, ``question``, ``answer``, ``type`` (``bridge`` | ``comparison``), ``level`` (``easy`` | ``medium`` |
  ``hard``);
* ``context``: ``[[title, [sentence, ...]], ...]`` -- the two gold paragraphs and eight distractors;
* ``supporting_facts``: ``[[title, sentence index], ...]``.

Each context paragraph becomes a document (title on the first line, then its sentences), with the stable,
content-addressed id ``<title>--<hash>`` (:func:`~nyx.data.convert.common.text_doc_id`): a paragraph that recurs
across questions, as distractors do, is one document. The paragraphs whose titles appear in ``supporting_facts``
are the question's gold documents (score 1). The corpus is the union of all questions' contexts (the distractor
setting's pool). ``answer`` becomes a one-item list; all questions are ``text``.

The same reader serves 2WikiMultihopQA (:mod:`nyx.data.convert.twowiki`), which publishes the HotpotQA layout.
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

#: optional question fields kept in the query record (``type``, ``level``) per format
_KEEP = ("type", "level")


def _paragraphs(row: dict[str, Any], qid: str) -> dict[str, Record]:
    """``{title: document}`` of a question's ``context`` (empty paragraphs are left out)."""
    context = row.get("context")
    if not isinstance(context, list) or not context:
        raise RecordError("field 'context' is missing or not a list of [title, sentences]", record_id=qid)
    out: dict[str, Record] = {}
    for i, entry in enumerate(context):
        if (
            not isinstance(entry, (list, tuple))
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], list)
            or not all(isinstance(s, str) for s in entry[1])
        ):
            raise RecordError(f"malformed context: context[{i}] is not [title, [sentence, ...]]", record_id=qid)
        title, sentences = entry[0].strip(), entry[1]
        text = " ".join(s.strip() for s in sentences if s.strip())
        if text and title not in out:
            out[title] = text_record(text_doc_id(title, text), title, text)
    return out


def _supporting_titles(row: dict[str, Any], qid: str) -> list[str]:
    facts = row.get("supporting_facts")
    if not isinstance(facts, list) or not facts:
        raise RecordError("field 'supporting_facts' is missing or empty", record_id=qid)
    titles: list[str] = []
    for i, f in enumerate(facts):
        if not isinstance(f, (list, tuple)) or len(f) < 1 or not isinstance(f[0], str):
            raise RecordError(
                f"malformed supporting_facts: supporting_facts[{i}] is not [title, sentence index]", record_id=qid
            )
        if f[0].strip() not in titles:
            titles.append(f[0].strip())
    return titles


def convert_context_qa(path: Path, out: Path, fmt: str, split: str, limit: int | None = None) -> ConvertResult:
    """Convert a HotpotQA-layout file (HotpotQA, 2WikiMultihopQA): see the module docstring."""
    with BenchmarkWriter(fmt, path, split) as w:
        n = 0
        for where, row in iter_rows(path, w.rejects):
            if limit is not None and n >= limit:
                break
            n += 1
            qid = row.get("_id") if isinstance(row, dict) else None
            with w.guard(where, str(qid) if qid is not None else None, raw=row):
                qid = require_str(row, "_id")
                question = require_str(row, "question", qid)
                answers = answer_list(row.get("answer"))
                if not answers:
                    raise RecordError("no gold answer ('answer' is missing or empty)", record_id=qid)
                paragraphs = _paragraphs(row, qid)
                gold = []
                for title in _supporting_titles(row, qid):
                    if title not in paragraphs:
                        raise RecordError(
                            f"supporting fact not in context: the title {title!r} is not among the context paragraphs",
                            record_id=qid,
                        )
                    gold.append(paragraphs[title].id)
                extra = {k: row[k] for k in _KEEP if isinstance(row.get(k), str)}
                w.add_question(Record.from_text(qid, question, answer=answers, **extra), gold, docs=paragraphs.values())
        return w.write(out)


def convert_hotpotqa(
    src: Path, out: Path, split: str | None = None, limit: int | None = None, **_: Any
) -> ConvertResult:
    """HotpotQA: SRC is the JSON file, or a folder holding ``hotpot_<split>_distractor_v1.json`` (split ``dev``)."""
    split = split or "dev"
    path = find_file(
        Path(src),
        [f"hotpot_{split}_distractor_v1.json", f"hotpot_{split}_v1.1.json", f"hotpot_{split}_fullwiki_v1.json"],
        "HotpotQA file",
    )
    return convert_context_qa(path, Path(out), "hotpotqa", split, limit)
