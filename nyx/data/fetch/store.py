"""The content-addressed image store and its URL index.

**Store** (``<raw>/images``, the folder the bundled sample already keeps its images in):

* ``images/<sha256 of the bytes><ext>``: each distinct image once; ``ext`` comes from sniffing the bytes with PIL
  (``.jpg``, ``.png``, ``.gif``, ``.webp``, ``.bmp``, ``.tif``, ``.avif``), never from the URL or Content-Type.
  Two URLs serving the same bytes share one file.
* ``images/.fetch/index.jsonl``: the URL index, one JSON line appended per finished URL (stored file or failure
  reason, attempts, HTTP status). Append-only, written with one ``write`` per line; the last line for a URL wins.
  A run that is killed loses at most the downloads in flight: on restart every URL with a final result is skipped.
* ``images/.fetch/tmp/``: partial downloads (``*.part``); a file is renamed into the store only when complete and
  sniffed. Whatever a killed run left there is deleted when the next run starts (under ``images/.fetch/lock``, so
  two runs never share the store).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from nyx.data.fetch.config import FetchResult


class ImageStore:
    """The content-addressed image folder and its URL index. Use as a context manager (:meth:`open`): it takes
    the store's lock, deletes partial downloads of killed runs and reads the index."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.meta = self.root / ".fetch"
        self.index_path = self.meta / "index.jsonl"
        self.tmp = self.meta / "tmp"
        self._results: dict[str, FetchResult] = {}
        self._tried: set[str] = set()  # URLs attempted in this run (a transient failure is not retried twice)
        self._fd: int | None = None
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[ImageStore]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"another fetch is using the image store {self.root} (lock "
                    f"{self.meta / 'lock'}); wait for it to finish"
                ) from None
            self.clean_tmp()
            self._load_index()
            self._fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                yield self
            finally:
                os.close(self._fd)
                self._fd = None
                self.clean_tmp()
        finally:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def clean_tmp(self) -> int:
        """Delete partial downloads; returns how many there were."""
        n = 0
        if self.tmp.is_dir():
            for p in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink() if not p.is_dir() else shutil.rmtree(p)
                    n += 1
        return n

    def _load_index(self) -> None:
        self._results.clear()
        if not self.index_path.is_file():
            return
        data = self.index_path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line torn by a kill: end it so the next append starts clean
            with open(self.index_path, "ab") as f:
                f.write(b"\n")
        for line in data.splitlines():
            try:
                res = FetchResult.from_json(json.loads(line))
            except (ValueError, TypeError):
                continue  # the torn line: that URL simply has no result yet
            self._results[res.url] = res

    def result(self, url: str) -> FetchResult | None:
        return self._results.get(url)

    def path(self, name: str) -> Path:
        return self.root / name

    def is_done(self, url: str, transient_runs: int) -> bool:
        """Whether ``url`` has a final result: a stored file that is still there, a permanent failure, a transient
        one that has had its ``transient_runs`` runs, or any result from this run."""
        if url in self._tried:
            return True
        r = self._results.get(url)
        if r is None:
            return False
        if r.ok:
            return bool(r.file) and self.path(r.file).is_file()  # type: ignore[arg-type]
        return not r.transient or r.runs >= transient_runs

    def record(self, res: FetchResult) -> None:
        """Append one finished URL to the index (one ``write``: a kill leaves whole lines or one torn last line)."""
        assert self._fd is not None, "ImageStore.record outside open()"
        os.write(self._fd, (json.dumps(res.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        self._results[res.url] = res
        self._tried.add(res.url)
