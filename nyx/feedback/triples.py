"""Feedback triples (Stage 2's preferences) and their JSON-lines files: written by ``feedback_preferences``, read by
its checks and by Stage 2's training data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from nyx.data.jsonl import JsonLine, iter_jsonl_values
from nyx.data.rejects import RecordError
from nyx.utils.io import atomic_write

T = TypeVar("T")


@dataclass
class FeedbackTriple:
    """One Stage-2 training example (ranks are 1-based positions in the retrieved list)."""

    query_id: str
    positive_id: str
    negative_ids: list[str]
    positive_rank: int
    n_correct_windows: int
    stage1_rank_of_gold: int | None  # best rank of a gold document in the top-K, None if none was retrieved
    positive_score: float = 1.0
    n_windows_read: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_triples(triples: Iterable[FeedbackTriple], path: str | os.PathLike) -> Path:
    """Write triples as JSONL, atomically."""
    with atomic_write(path, "w") as f:
        for t in triples:
            f.write(json.dumps(t.to_json(), ensure_ascii=False) + "\n")
    return Path(path)


def _read(path: str | os.PathLike, what: str, parse: Callable[[Any], T]) -> list[T]:
    """``parse(object)`` of each non-blank line; a malformed line, or one ``parse`` refuses with a ``TypeError`` or
    ``KeyError``, is a :class:`RecordError` naming it (``<file>:<line>``)."""

    def one(obj: Any, line: JsonLine) -> T:
        try:
            return parse(obj)
        except (KeyError, TypeError) as e:
            raise RecordError(f"malformed {what}: {type(e).__name__}: {e}") from None

    def malformed(line: JsonLine) -> RecordError:
        return RecordError(f"malformed {what}: {line.cause}")

    return list(iter_jsonl_values(path, None, one, malformed=malformed))


def read_triples(path: str | os.PathLike) -> list[FeedbackTriple]:
    """Read triples written by :func:`write_triples`."""
    return _read(path, "feedback triple", lambda obj: FeedbackTriple(**obj))


def _triple_ids(obj: Any) -> dict:
    return {
        "query": obj["query"]["id"],
        "positive": obj["positive"]["id"],
        "negatives": [n["id"] for n in obj["negatives"]],
    }


def read_training_triple_ids(path: str | os.PathLike) -> list[dict]:
    """The record ids of each line of ``train_triples.jsonl`` (full records): ``{"query", "positive",
    "negatives"}``."""
    return _read(path, "training triple", _triple_ids)
