"""Reading JSON-lines files: one decoded value, or one clear error, per non-blank line.

Every JSONL reader of the project goes through :func:`iter_json_lines` (Nyx records, OBELICS JSONL shards,
training triples and hard negatives): a line that is not UTF-8 or not JSON is reported as that line (file, line
number, raw text, the decoder's message), never as the end of the file. :func:`iter_jsonl_values` adds the usual
policy on top: parse each value, send a bad line or an unusable value to the
:class:`~nyx.data.rejects.RejectLog` with its location and raw text, and go on (or raise when there is no log).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nyx.data.rejects import RecordError, RejectLog

T = TypeVar("T")

#: Added to a bad line's reason (with ``note_truncation``) when it is the file's last line and has no newline.
TRUNCATION_NOTE = " (last line has no newline: the file looks truncated)"


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file: its decoded ``value``, or the decoder's error in ``cause``."""

    path: Path
    lineno: int  # line number in the file, from 1 (blank lines counted)
    index: int  # position among the non-blank lines, from 0
    raw: bytes
    value: Any = None
    cause: UnicodeDecodeError | json.JSONDecodeError | None = None

    @property
    def where(self) -> str:
        """``<file name>:<line number>``."""
        return f"{self.path.name}:{self.lineno}"

    @property
    def text(self) -> str:
        """The line as text (undecodable bytes replaced), without its newline: what a reject log keeps."""
        return self.raw.decode("utf-8", errors="replace").rstrip("\n")

    @property
    def truncated(self) -> bool:
        """True for a last line without a newline (a file cut mid-record)."""
        return not self.raw.endswith(b"\n")

    def error(self, note_truncation: bool = False) -> RecordError:
        """The decoding error of a bad line as a :class:`RecordError` (no location: the caller names the line).

        With ``note_truncation``, the reason of a cut last line says the file looks truncated."""
        e = self.cause
        if e is None:
            raise ValueError(f"{self.where} decoded: it has no error")
        cut = TRUNCATION_NOTE if note_truncation and self.truncated else ""
        if isinstance(e, UnicodeDecodeError):
            return RecordError(f"line is not valid UTF-8 ({e.reason} at byte {e.start}){cut}")
        return RecordError(f"malformed JSON: {e.msg} at column {e.colno}{cut}")


def iter_json_lines(path: str | os.PathLike) -> Iterator[JsonLine]:
    """Every non-blank line of a JSONL file, decoded or with its decoding error; blank lines are skipped.

    Raises :class:`FileNotFoundError` when ``path`` is not a file; an I/O error while reading propagates."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such JSONL file: {path}")
    with open(path, "rb") as f:
        index = 0
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                yield JsonLine(path, lineno, index, raw, cause=e)
            else:
                yield JsonLine(path, lineno, index, raw, value)
            index += 1


def iter_jsonl_values(
    path: str | os.PathLike,
    rejects: RejectLog | None,
    parse: Callable[[Any, JsonLine], T],
    malformed: Callable[[JsonLine], RecordError] = JsonLine.error,
) -> Iterator[T]:
    """``parse(value, line)`` for every good line of a JSONL file; bad lines are rejected and skipped.

    A line that does not decode (reason from ``malformed``, by default :meth:`JsonLine.error`) or whose value
    ``parse`` refuses with a :class:`RecordError` goes to ``rejects`` with the line's text, located at
    ``<file>:<line>`` unless the error names its own location; with ``rejects=None`` it is raised instead.
    """
    for line in iter_json_lines(path):
        try:
            if line.cause is not None:
                raise malformed(line)
            item = parse(line.value, line)
        except RecordError as e:
            e.location = e.location or line.where
            if rejects is None:
                raise
            rejects.add(e, raw=line.text)
            continue
        yield item
