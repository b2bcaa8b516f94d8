"""Leakage: no training query may be an evaluation query.

:func:`evaluation_queries` collects the normalised text (:func:`normalize_text`) of every query of NyxQA dev and
test and of every evaluation folder the profile names (``stage1.eval_folders``);
:func:`~nyx.train.sources.check.check_source` reports any training query equal to one of them, naming the first
offending rows.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from nyx.data.rejects import RejectLog
from nyx.train.dataset import RESEARCH_IMAGE_TOKEN
from nyx.train.sources.layout import resolve_path

if TYPE_CHECKING:
    from nyx.paths import DataPaths

_SPACE = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """Lower case, Unicode NFKC, image tokens and punctuation removed, whitespace collapsed: two questions that
    differ only in these are the same question."""
    text = RESEARCH_IMAGE_TOKEN.sub(" ", unicodedata.normalize("NFKC", text or "")).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return _SPACE.sub(" ", text).strip()


def evaluation_queries(paths: DataPaths, folders: Iterable[str | os.PathLike] = ()) -> dict[str, str]:
    """``{normalised query text: "<set>:<query id>"}`` of NyxQA dev and test and of every BEIR folder in
    ``folders`` (a folder without ``queries.jsonl`` is an error: a named evaluation set must be checkable)."""
    from nyx.data.records import iter_jsonl

    sets: list[tuple[str, Path, bool]] = [
        (f"nyxqa/{s}", paths.nyxqa / s / "queries.jsonl", False) for s in ("dev", "test")
    ]
    sets += [(str(f), resolve_path(paths, f) / "queries.jsonl", True) for f in folders]
    out: dict[str, str] = {}
    for label, qfile, required in sets:
        if not qfile.is_file():
            if required:
                raise FileNotFoundError(f"evaluation folder {label!r} has no queries.jsonl ({qfile})")
            continue
        for rec in iter_jsonl(qfile, RejectLog(stage="evaluation-queries")):
            key = normalize_text(rec.text)
            if key:
                out.setdefault(key, f"{label}:{rec.id}")
    return out
