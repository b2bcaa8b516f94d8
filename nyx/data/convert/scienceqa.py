"""ScienceQA -> BEIR folder with multiple-choice answers, images included.

Reads the files the authors publish (github.com/lupantech/ScienceQA: ``data/scienceqa/problems.json``,
``data/scienceqa/pid_splits.json``, and the images from ``tools/download.sh`` under ``images/<split>/<pid>/``; the
fields as the authors' own loaders ``models/run_gpt3.py`` and ``models/base_prompt.py`` read them):

* ``problems.json``: ``{pid: {question, choices, answer (index into choices), hint (the text context), image
  (file name, e.g. ``image.png``, or null), lecture, solution, split, subject, grade, topic, category, skill,
  task}}``;
* ``pid_splits.json``: ``{train|val|test|minival|minitest|...: [pid, ...]}`` (``--split``, default ``test``);
* the image of a problem at ``images/<its split>/<pid>/<image>``.

What is retrieved (ScienceQA has no retrieval corpus; this is our choice, stated in each folder's notes):

* the question's **context document** ``sqa-<pid>``: its image (if any) followed by its hint text (if any). This is
  what the question is about (the map, the diagram, the passage); score 2;
* the **lecture** (background knowledge of the question's skill) as a document shared by every question with the
  same lecture, id ``lecture--<hash>``; score 1;
* never the ``solution``: it states the answer.

Queries carry the question text, ``choices``, ``correct_index`` and ``answer`` (the correct choice's text), so
RAG accuracy is multiple-choice correctness. The modality group is ``image1`` for questions with an image and
``text`` otherwise. Questions with no hint, no image and no lecture keep their answers and have no judgements.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nyx.data.convert.common import (
    BenchmarkWriter,
    ConvertError,
    ConvertResult,
    RecordError,
    find_file,
    iter_rows,
    require_str,
)
from nyx.data.records import Part, Record

NOTE = (
    "ScienceQA has no retrieval corpus: each question's context (its image, then its hint) is its gold "
    "document 'sqa-<pid>' (score 2) and its lecture a shared document 'lecture--<hash>' (score 1); solutions "
    "are left out (they state the answer)."
)


def convert_scienceqa(
    src: Path, out: Path, split: str | None = None, limit: int | None = None, **_: Any
) -> ConvertResult:
    """ScienceQA: SRC is the folder holding problems.json and pid_splits.json (and images/)."""
    split = split or "test"
    src = Path(src)
    problems_path = find_file(
        src, ["problems.json", "data/scienceqa/problems.json", "scienceqa/problems.json"], "ScienceQA problems.json"
    )
    base = problems_path.parent
    splits_path = base / "pid_splits.json"
    if not splits_path.is_file():
        raise ConvertError(f"no pid_splits.json beside {problems_path}")
    try:
        pid_splits = json.loads(splits_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"cannot read {splits_path}: {e}") from None
    if split not in pid_splits:
        raise ConvertError(f"split {split!r} is not in {splits_path.name} (it has {', '.join(sorted(pid_splits))})")
    image_roots = [
        r
        for r in (base / "images", src / "images", base.parent / "images", base.parent.parent / "images")
        if r.is_dir()
    ]
    with BenchmarkWriter("scienceqa", src, split) as w:
        w.notes.append(NOTE)
        problems: dict[str, tuple[str, Any]] = {}
        for where, row in iter_rows(problems_path, w.rejects):
            if isinstance(row, dict) and "__key__" in row:
                problems[str(row.pop("__key__"))] = (where, row)
        pids = [str(p) for p in pid_splits[split]]
        for pid in pids[:limit] if limit is not None else pids:
            if pid not in problems:
                w.reject(
                    RecordError(f"unknown pid: listed in pid_splits[{split!r}], not in problems.json", record_id=pid),
                    location=splits_path.name,
                )
                continue
            where, row = problems[pid]
            with w.guard(where, pid, raw=row):
                question = require_str(row, "question", pid)
                choices = row.get("choices")
                if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                    raise RecordError("bad choices: 'choices' is not a list of at least two strings", record_id=pid)
                idx = row.get("answer")
                if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(choices):
                    raise RecordError(
                        f"bad answer index: 'answer' {idx!r} is not an index into its {len(choices)} choices",
                        record_id=pid,
                    )
                parts: list[Part] = []
                if row.get("image"):
                    image = _image_path(image_roots, str(row.get("split") or split), pid, str(row["image"]))
                    if image is None:
                        raise RecordError(
                            f"image file not found: images/{row.get('split') or split}/{pid}/{row['image']}",
                            record_id=pid,
                        )
                    parts.append(Part.of_image(image))
                hint = row.get("hint")
                if isinstance(hint, str) and hint.strip():
                    parts.append(Part.of_text(hint.strip()))
                docs, gold = [], {}
                if parts:
                    doc = Record(id=f"sqa-{pid}", content=parts, extra={"pid": pid})
                    docs.append(doc)
                    gold[doc.id] = 2
                lecture = row.get("lecture")
                if isinstance(lecture, str) and lecture.strip():
                    lid = "lecture--" + hashlib.sha1(lecture.strip().encode("utf-8")).hexdigest()[:12]
                    docs.append(Record.from_text(lid, lecture.strip()))
                    gold[lid] = 1
                extra = {
                    k: row[k] for k in ("subject", "grade", "topic", "category", "skill") if isinstance(row.get(k), str)
                }
                query = Record.from_text(
                    pid,
                    question,
                    answer=[choices[idx]],
                    choices=list(choices),
                    correct_index=idx,
                    modality="image1" if row.get("image") else "text",
                    **extra,
                )
                w.add_question(query, gold, docs=docs)
        return w.write(out)


def _image_path(roots: list[Path], split: str, pid: str, name: str) -> Path | None:
    for root in roots:
        p = root / split / pid / name
        if p.is_file():
            return p.absolute()
    return None
