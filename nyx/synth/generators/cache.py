"""A response cache on disk, so a re-materialisation or a resumed run pays for no call twice.

One SQLite file (``responses.sqlite``) in the cache folder; safe across threads (one lock) and processes
(SQLite's own locking, WAL journal). Keys are sha256 hex digests computed by the caller from everything
that determines a reply (model, prompt id, parameters, inputs including image-content hashes). Only the
reply text and non-secret bookkeeping are stored; request headers (and so API keys) never are.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from nyx.utils.io import file_sha256


def cache_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``payload``."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def image_fingerprint(ref: str) -> str:
    """Content hash of an image reference: file bytes for a path, the URL itself for a data URL."""
    if ref.startswith("data:"):
        return "sha256:" + hashlib.sha256(ref.encode("ascii", errors="replace")).hexdigest()
    return "sha256:" + file_sha256(ref)


class ResponseCache:
    """``get(key) -> str | None`` and ``put(key, response, **meta)`` over one SQLite file."""

    FILENAME = "responses.sqlite"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / self.FILENAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync per cached answer
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, "
            "model TEXT, prompt TEXT, purpose TEXT, created REAL)"
        )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, response: str, model: str = "", prompt: str = "", purpose: str = "") -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, response, model, prompt, purpose, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, response, model, prompt, purpose, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
