"""The research format (the public research code's training records) and its conversion to Nyx triples.

Records have ``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text``, ``neg_image_path``;
``<|image|>`` marks where each image goes in the text. :func:`research_to_triple` converts one record,
:func:`convert_research_file` a whole JSONL file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nyx.data.records import Part, resolve_image
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.dataset.examples import iter_json_objects
from nyx.utils.io import atomic_write

#: Where the research format puts an image inside text (``<|image|>``; VLM2Vec/mmE5 write ``<|image_1|>``).
RESEARCH_IMAGE_TOKEN = re.compile(r"<\|image(?:_\d+)?\|>")


def as_list(value: Any) -> list:
    """A research-format field as a list: None or "" -> [], a list or tuple as it is, one value -> [value]."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def research_content(text: Any, image_paths: Any, image_root: str | os.PathLike | None) -> list[dict[str, str]]:
    """Nyx parts from research text with ``<|image|>`` placeholders and the matching image path(s).

    Images fill the placeholders in order; text without placeholders gets its images in front (the
    research code's convention for image-first inputs). A count mismatch is an error.
    """
    text = "" if text is None else text
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    images = [str(p) for p in as_list(image_paths)]
    if any(not p.strip() for p in images):
        raise ValueError("empty image path")
    images = [resolve_image(p, image_root) for p in images]
    pieces = RESEARCH_IMAGE_TOKEN.split(text)
    n_slots = len(pieces) - 1
    if n_slots == 0:  # no placeholder: images go first
        pieces, n_slots = [""] * len(images) + [text], len(images)
    if n_slots != len(images):
        raise ValueError(f"{n_slots} image placeholder(s) but {len(images)} image path(s)")
    parts: list[dict[str, str]] = []
    for i, piece in enumerate(pieces):
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
        if i < len(images):
            parts.append({"type": "image", "image": images[i]})
    if not parts:
        raise ValueError("no text and no image")
    return parts


def research_to_triple(
    obj: dict[str, Any], image_root: str | os.PathLike | None = None, record_id: str | None = None
) -> dict[str, Any]:
    """Convert one research-format record into the Nyx triples JSON shape.

    ``neg_text``/``neg_image_path`` may be a single negative or parallel lists of negatives. A negative that
    cannot be converted is left out (and counted under ``"dropped_negatives"``); a bad query or positive
    raises :class:`RecordError`.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}", record_id=record_id)
    rid = str(obj.get("id", record_id or "")) or None
    try:
        query = research_content(obj.get("qry"), obj.get("qry_image_path"), image_root)
    except ValueError as e:
        raise RecordError(f"query: {e}", record_id=rid) from None
    try:
        positive = research_content(obj.get("pos_text"), obj.get("pos_image_path"), image_root)
    except ValueError as e:
        raise RecordError(f"positive: {e}", record_id=rid) from None
    neg_texts = obj.get("neg_text")
    neg_images = obj.get("neg_image_path")
    if isinstance(neg_texts, (list, tuple)):
        neg_images = list(neg_images) if isinstance(neg_images, (list, tuple)) else [neg_images] * len(neg_texts)
        if len(neg_images) != len(neg_texts):
            raise RecordError(f"{len(neg_texts)} neg_text but {len(neg_images)} neg_image_path", record_id=rid)
        pairs = list(zip(neg_texts, neg_images))
    elif neg_texts in (None, "") and not as_list(neg_images):
        pairs = []
    else:
        pairs = [(neg_texts, neg_images)]
    negatives, dropped = [], []
    for i, (t, imgs) in enumerate(pairs):
        try:
            negatives.append({"content": research_content(t, imgs, image_root)})
        except ValueError as e:
            dropped.append(f"negative {i}: {e}")
    out: dict[str, Any] = {"query": {"content": query}, "positive": {"content": positive}, "negatives": negatives}
    if rid:
        out["id"] = rid
    if dropped:
        out["dropped_negatives"] = dropped
    return out


def convert_research_file(
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    rejects: RejectLog | None = None,
) -> int:
    """Convert a research-format JSONL file into a Nyx triples JSONL file; returns the number written.

    Image paths are resolved against ``image_root`` (default: the input file's folder) and written relative
    to the output file when they lie beneath its folder.
    """
    out_path = Path(out_path)
    rejects = rejects if rejects is not None else RejectLog(stage="research-convert")
    n = 0
    with atomic_write(out_path, "w") as f:
        for triple in iter_research_triples(Path(path), image_root, rejects):
            for role in ("query", "positive"):
                triple[role]["content"] = _relative_parts(triple[role]["content"], out_path.parent)
            for neg in triple["negatives"]:
                neg["content"] = _relative_parts(neg["content"], out_path.parent)
            f.write(json.dumps(triple, ensure_ascii=False) + "\n")
            n += 1
    return n


def _relative_parts(parts: list[dict[str, str]], base_dir: Path) -> list[dict[str, str]]:
    return [p if p["type"] == "text" else Part.of_image(p["image"]).to_json(base_dir) for p in parts]


def iter_research_triples(
    path: Path, image_root: str | os.PathLike | None, rejects: RejectLog
) -> Iterator[dict[str, Any]]:
    """Nyx triples (JSON shape) of a research-format JSONL file; bad lines and records go to ``rejects``."""
    root = image_root if image_root is not None else path.parent
    for where, obj in iter_json_objects(path, rejects):
        try:
            triple = research_to_triple(obj, root, record_id=where)
        except RecordError as e:
            e.location = e.location or where
            rejects.add(e, raw=obj)
            continue
        for reason in triple.pop("dropped_negatives", []):
            rejects.add(RecordError(f"broken negative dropped: {reason}", record_id=triple.get("id"), location=where))
        yield triple
