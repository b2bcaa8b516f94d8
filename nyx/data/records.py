"""The mixed-modal data model: a document or a query is an ordered list of parts, each text or image.

Interchange format (JSONL, one record per line)::

    {"id": "doc-1", "content": [{"type": "text", "text": "..."}, {"type": "image", "image": "images/a.jpg"}], ...}

Image references in files are relative to the JSONL file's folder; absolute paths and ``data:`` URLs are
accepted too. In memory, :class:`Part.image` always holds an absolute path or a ``data:`` URL, so a record
can be handed to any component without knowing where it was read from. Extra fields are kept in
:attr:`Record.extra` and written back unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nyx.data.jsonl import iter_jsonl_values
from nyx.data.rejects import RecordError, RejectLog

PartType = Literal["text", "image"]


@dataclass(frozen=True)
class Part:
    """One element of an interleaved sequence: a text span or an image reference."""

    type: PartType
    text: str | None = None
    image: str | None = None  # absolute path or data: URL

    def __post_init__(self) -> None:
        if self.type == "text":
            if not isinstance(self.text, str) or self.image is not None:
                raise ValueError("a text part needs a string 'text' and no 'image'")
        elif self.type == "image":
            if not isinstance(self.image, str) or not self.image or self.text is not None:
                raise ValueError("an image part needs a non-empty string 'image' and no 'text'")
        else:
            raise ValueError(f"unknown part type {self.type!r} (expected 'text' or 'image')")

    @classmethod
    def of_text(cls, text: str) -> Part:
        return cls(type="text", text=text)

    @classmethod
    def of_image(cls, image: str | os.PathLike) -> Part:
        return cls(type="image", image=str(image))

    def to_json(self, base_dir: str | os.PathLike | None = None) -> dict[str, str]:
        if self.type == "text":
            return {"type": "text", "text": self.text or ""}
        return {"type": "image", "image": relativize_image(self.image or "", base_dir)}


@dataclass
class Record:
    """A document, a chunk or a query: an id, interleaved content and any extra fields."""

    id: str
    content: list[Part]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All text parts joined with blank lines (what a text-only retriever sees)."""
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)

    @property
    def images(self) -> list[str]:
        return [p.image for p in self.content if p.type == "image" and p.image]

    @property
    def n_images(self) -> int:
        return sum(1 for p in self.content if p.type == "image")

    @property
    def modality(self) -> str:
        """The modality group used for NyxQA splits and report breakdowns."""
        n = self.n_images
        return "text" if n == 0 else ("image1" if n == 1 else "image2+")

    def to_json(self, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "content": [p.to_json(base_dir) for p in self.content]}
        out.update({k: v for k, v in self.extra.items() if k not in ("id", "content")})
        return out

    @classmethod
    def from_text(cls, id: str, text: str, **extra: Any) -> Record:
        return cls(id=id, content=[Part.of_text(text)], extra=dict(extra))


def is_data_url(ref: str) -> bool:
    return ref.startswith("data:")


def image_resolves(ref: str) -> bool:
    """Whether an image reference of a read record can be opened: a data URL, or a file that exists."""
    return is_data_url(ref) or os.path.isfile(ref)


def resolve_image(ref: str, base_dir: str | os.PathLike | None) -> str:
    """Absolute path (or data URL) for an image reference read from a file in ``base_dir``."""
    if is_data_url(ref) or os.path.isabs(ref) or base_dir is None:
        return ref
    return os.path.normpath(os.path.join(os.fspath(base_dir), ref))


def relativize_image(ref: str, base_dir: str | os.PathLike | None) -> str:
    """The reference to write into a file in ``base_dir``: relative to it, so a data tree moves as one piece."""
    if base_dir is None or is_data_url(ref) or not os.path.isabs(ref):
        return ref
    base = os.path.abspath(os.fspath(base_dir))
    try:
        rel = os.path.relpath(ref, base)
    except ValueError:  # different drive
        return ref
    return rel


def record_from_json(obj: Any, base_dir: str | os.PathLike | None = None) -> Record:
    """Parse one decoded JSON object into a :class:`Record`.

    Accepts the Nyx part format and text-only BEIR records (``_id``, ``title``, ``text``).
    Raises :class:`RecordError` (with the record id when known) on anything else.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id", obj.get("_id"))
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        raise RecordError("missing 'id' (or BEIR '_id')")
    if not isinstance(rid, (str, int)):
        raise RecordError(f"id must be a string, got {type(rid).__name__}")
    rid = str(rid)
    if "content" in obj:
        raw = obj["content"]
        if not isinstance(raw, list):
            raise RecordError("'content' must be a list of parts", record_id=rid)
        parts: list[Part] = []
        for i, p in enumerate(raw):
            if not isinstance(p, dict):
                raise RecordError(f"part {i} is not an object", record_id=rid)
            kind = p.get("type")
            try:
                if kind == "text":
                    parts.append(Part.of_text(p.get("text")))  # type: ignore[arg-type]
                elif kind == "image":
                    ref = p.get("image")
                    if not isinstance(ref, str) or not ref:
                        raise ValueError("image part without an 'image' reference")
                    parts.append(Part.of_image(resolve_image(ref, base_dir)))
                else:
                    raise ValueError(f"unknown part type {kind!r}")
            except ValueError as e:
                raise RecordError(f"part {i}: {e}", record_id=rid) from None
        extra = {k: v for k, v in obj.items() if k not in ("id", "content")}
    elif "text" in obj or "title" in obj:  # BEIR corpus/queries record
        title = obj.get("title") or ""
        text = obj.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise RecordError("BEIR 'title' and 'text' must be strings", record_id=rid)
        body = f"{title}\n{text}".strip() if title else text
        parts = [Part.of_text(body)] if body else []
        extra = {k: v for k, v in obj.items() if k not in ("_id", "id", "title", "text")}
        if title:
            extra["title"] = title
    else:
        raise RecordError("record has neither 'content' nor BEIR 'text'", record_id=rid)
    if not any((p.type == "text" and p.text and p.text.strip()) or p.type == "image" for p in parts):
        raise RecordError("empty record: no text and no image", record_id=rid)
    return Record(id=rid, content=parts, extra=extra)


def iter_jsonl(path: str | os.PathLike, rejects: RejectLog | None = None) -> Iterator[Record]:
    """Stream records from a JSONL file. Bad lines go to ``rejects`` (or raise when it is None)."""
    base_dir = Path(path).parent
    yield from iter_jsonl_values(path, rejects, lambda obj, _line: record_from_json(obj, base_dir))


def read_jsonl(path: str | os.PathLike, rejects: RejectLog | None = None) -> list[Record]:
    return list(iter_jsonl(path, rejects))


def write_jsonl(records: Iterable[Record], path: str | os.PathLike) -> int:
    """Write records atomically (temporary file + rename); image paths relative to the file's folder."""
    from nyx.utils.io import atomic_write

    path = Path(path)
    n = 0
    with atomic_write(path, "w") as f:
        for r in records:
            f.write(json.dumps(r.to_json(path.parent), ensure_ascii=False) + "\n")
            n += 1
    return n
