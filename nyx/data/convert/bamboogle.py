"""Bamboogle -> questions and answers, with no corpus and no judgements.

Reads the CSV the authors publish (Press et al., "Measuring and Narrowing the Compositionality Gap", the Bamboogle
sheet linked from github.com/ofirpress/self-ask, exported as CSV): a header row with the columns ``Question`` and
``Answer`` (any others are ignored), one question per row. Question ids are ``bamboogle-<row>`` (1-based data row,
stable as long as the file is).

Bamboogle was written to be answered with a web search engine: it ships **no corpus and no gold documents**. The
folder therefore holds the questions with their answers (``queries.jsonl``: what the RAG answer metrics read), an
empty ``corpus.jsonl`` and a ``qrels.tsv`` with only its header, and ``convert.json`` says so. Retrieval metrics are
undefined for it (``nyx evaluate`` reports that no query has judgements); to measure answers, retrieve from a corpus
of your own: ``nyx report INDEX --queries OUT/queries.jsonl --qrels OUT/qrels.tsv --corpus YOUR_CORPUS``, or give the
extra evaluation set a ``corpus`` in the profile (``eval.extra_sets``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from nyx.data.convert.common import BenchmarkWriter, ConvertError, ConvertResult, RecordError, answer_list
from nyx.data.records import Record

NOTE = (
    "Bamboogle ships no corpus and no gold documents: corpus.jsonl is empty and qrels.tsv has no judgements. "
    "Retrieval metrics are undefined; answer metrics need a corpus of your own (nyx report --corpus, or the "
    "extra set's 'corpus' in the profile)."
)


def _csv_file(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise ConvertError(f"no such file or folder: {src}")
    found = sorted(src.glob("*.csv"))
    if len(found) != 1:
        raise ConvertError(f"expected one Bamboogle .csv file in {src}, found {len(found)}")
    return found[0]


def convert_bamboogle(
    src: Path, out: Path, split: str | None = None, limit: int | None = None, **_: Any
) -> ConvertResult:
    """Bamboogle: SRC is the CSV file (or a folder holding one)."""
    path = _csv_file(Path(src))
    split = split or "test"
    with BenchmarkWriter("bamboogle", path, split) as w:
        w.notes.append(NOTE)
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                columns = {c.strip().lower(): c for c in reader.fieldnames or []}
                if "question" not in columns or "answer" not in columns:
                    raise ConvertError(
                        f"{path.name}: expected the columns Question and Answer, found "
                        f"{', '.join(reader.fieldnames or []) or 'no header'}"
                    )
                for i, row in enumerate(reader, start=1):
                    if limit is not None and i > limit:
                        break
                    qid = f"bamboogle-{i:03d}"
                    with w.guard(f"{path.name}:{i + 1}", qid, raw=row):
                        question = (row.get(columns["question"]) or "").strip()
                        answers = answer_list(row.get(columns["answer"]))
                        if not question:
                            raise RecordError("empty Question", record_id=qid)
                        if not answers:
                            raise RecordError("empty Answer", record_id=qid)
                        w.add_question(Record.from_text(qid, question, answer=answers, modality="text"), [])
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ConvertError(f"cannot read {path}: {e}") from None
        return w.write(out)
