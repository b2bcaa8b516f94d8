"""The training example (query, positive, hard negatives) and what every training-file reader shares."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nyx.data.jsonl import JsonLine, iter_jsonl_values
from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog


@dataclass(frozen=True)
class TrainingExample:
    """One training triple. ``exclude`` lists document ids that must never serve as negatives (relevant ones)."""

    query: Record
    positive: Record
    negatives: tuple[Record, ...]
    source: str
    exclude: frozenset[str] = frozenset()


def content_key(record: Record) -> tuple:
    """Identity of a record's content (ids aside): two records with the same key are the same document."""
    return tuple((p.type, p.text if p.type == "text" else p.image) for p in record.content)


def _malformed(line: JsonLine) -> RecordError:
    return RecordError(f"malformed JSON line: {line.cause}")


def iter_json_objects(path: str | os.PathLike, rejects: RejectLog) -> Iterator[tuple[str, Any]]:
    """``(<file>:<line>, decoded value)`` of every line of a training JSONL file; a line that is not UTF-8 JSON is
    rejected as a "malformed JSON line" (with the decoder's message) and skipped."""
    return iter_jsonl_values(path, rejects, lambda value, line: (line.where, value), malformed=_malformed)
