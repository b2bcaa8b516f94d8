"""Bad input never stops a batch: it is counted, explained and kept for inspection."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record that cannot be used, with the record (id or file:line) and the reason."""

    def __init__(self, reason: str, record_id: str | None = None, location: str | None = None):
        self.reason = reason
        self.record_id = record_id
        self.location = location
        super().__init__(reason)

    def __str__(self) -> str:
        who = []
        if self.record_id is not None:
            who.append(f"record {self.record_id!r}")
        if self.location:
            who.append(f"at {self.location}")
        return f"{' '.join(who)}: {self.reason}" if who else self.reason


class ShardError(ValueError):
    """A whole input file (a shard) that cannot be read (truncated, corrupt, unreadable): the file's name and the
    reader's own error. Not a bad record: the caller rejects the shard as a whole and goes on with the others."""

    def __init__(self, shard: str, reason: str):
        self.shard = shard
        self.reason = reason
        super().__init__(f"shard {shard}: {reason}")


@dataclass
class RejectLog:
    """Collects rejected records; ``write`` saves them as JSONL (one reason per line)."""

    stage: str = "input"
    items: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self, error: RecordError | str, record_id: str | None = None, raw: Any = None, location: str | None = None
    ) -> None:
        if isinstance(error, RecordError):
            record_id = record_id or error.record_id
            location = location or error.location
            reason = error.reason
        else:
            reason = str(error)
        item: dict[str, Any] = {"stage": self.stage, "record_id": record_id, "location": location, "reason": reason}
        if raw is not None:
            item["raw"] = raw if isinstance(raw, (str, int, float, bool, dict, list)) else repr(raw)
        with self._lock:
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def count(self) -> int:
        return len(self.items)

    def reasons(self) -> dict[str, int]:
        """Counts by reason, with record-specific detail stripped after the first colon."""
        return dict(Counter(i["reason"].split(":")[0] for i in self.items))

    def extend(self, other: RejectLog) -> None:
        with self._lock:
            self.items.extend(other.items)

    def write(self, path: str | os.PathLike) -> Path:
        from nyx.utils.io import atomic_write

        path = Path(path)
        with atomic_write(path, "w") as f:
            for item in self.items:
                f.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
        return path
