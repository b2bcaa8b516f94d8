"""2WikiMultihopQA -> BEIR folder.

Reads the files the authors publish (github.com/Alab-NII/2wikimultihop, ``data/{train,dev,test}.json``; schema in
that README, "the same format as HotpotQA"): a JSON array of questions with ``_id``, ``type`` (``comparison`` |
``inference`` | ``compositional`` | ``bridge_comparison``), ``question``, ``context`` (``[[title, [sentence, ...]],
...]``), ``supporting_facts`` (``[[title, sentence index], ...]``), ``evidences`` (``[[subject, relation, object],
...]``, not needed for retrieval) and ``answer``. The public test file has no answers: its questions are rejects.

Converted exactly as HotpotQA (:func:`nyx.data.convert.hotpotqa.convert_context_qa`): one deduplicated document per
context paragraph, the supporting-fact paragraphs as gold documents, ``answer`` as a one-item list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nyx.data.convert.common import ConvertResult, find_file
from nyx.data.convert.hotpotqa import convert_context_qa


def convert_2wiki(src: Path, out: Path, split: str | None = None, limit: int | None = None, **_: Any) -> ConvertResult:
    """2WikiMultihopQA: SRC is the JSON file, or a folder holding ``<split>.json`` (split ``dev``)."""
    split = split or "dev"
    path = find_file(Path(src), [f"{split}.json", f"data/{split}.json"], "2WikiMultihopQA file")
    return convert_context_qa(path, Path(out), "2wiki", split, limit)
