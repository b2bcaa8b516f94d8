"""Document embeddings kept on disk per model, so that a corpus is encoded once per model, not once per use.

Dev evaluation, VLM feedback, the evaluation report and the corpus index all need the same model's embeddings of
the same corpus. :class:`EmbeddingStore` keeps them, addressed by *what was encoded* rather than by who asked:

* a **model key** (:func:`model_key`) digests everything that changes a document's embedding: the model's identity
  and weights (the SHA-256 manifest of a trained folder; see :mod:`nyx.utils.integrity`), the encoder settings that
  shape its input (prompt, pixel budget, context length, pooling), dtype and device type;
* a **record key** (:func:`record_key`) digests the record: id, text and image *bytes* (so an image replaced under
  the same path is a new record).

Layout under the store's root::

    <model key>/model.json                         what the key stands for (readable by a person)
    <model key>/segments/<source>-<uid>/           one per write, complete or absent (written atomically)
        embeddings.npy                             float32 or float16 [n, dim]
        keys.json                                  {"ids": [...], "keys": [...]}, row i of embeddings.npy
        segment.json                               source, count, dim, dtype, seconds, when, pid
    <model key>/encodes.jsonl                      one line per segment: who encoded how much, when

Segments are written every ``shard_size`` records (:func:`nyx.index.store_lookup.lookup_or_encode` reads what is
stored and encodes the rest), so a killed encode keeps what it finished and the next run encodes only the rest. A
half-written segment is a hidden ``.<name>.tmp`` folder, ignored and removed by :meth:`EmbeddingStore.clean`.
Concurrent writers (several Dagster processes, one per shard) never share a segment folder; a record encoded twice
(two processes racing on the same shard) is harmless, and counted by :meth:`EmbeddingStore.duplicates`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nyx.data.records import Record
from nyx.index.manifest import CorpusHasher
from nyx.utils.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

StoreDtype = Literal["float32", "float16"]
SEGMENTS = "segments"
EMBEDDINGS_FILE = "embeddings.npy"
KEYS_FILE = "keys.json"
SEGMENT_FILE = "segment.json"
MODEL_FILE = "model.json"
ENCODES_LOG = "encodes.jsonl"


def record_key(record: Record) -> str:
    """The SHA-256 of a record's id, text and image bytes (:class:`~nyx.index.manifest.CorpusHasher`)."""
    return CorpusHasher().update([record]).hexdigest()


def model_key(identity: Mapping[str, Any]) -> str:
    """A short stable digest of a model identity (a JSON-able mapping; see ``DenseRetriever.embedding_identity``)."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def folder_weights_id(path: str | os.PathLike | None) -> str | None:
    """What identifies the weights in a local model or adapter folder: the digest of its SHA-256 manifest when it
    has one (every folder the trainer writes does), else a fingerprint of file names, sizes and modification times
    (changes whenever a file is rewritten). ``None`` for anything that is not a folder (a hub id, a profile name:
    their revision identifies them)."""
    if path is None or not Path(path).is_dir():
        return None
    from nyx.utils.integrity import MANIFEST

    folder = Path(path)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            return "sha256-manifest:" + str(json.loads(manifest.read_text())["digest"])
        except (ValueError, KeyError, TypeError):
            pass  # unreadable manifest: fall back to the file fingerprint (the stage code reports the manifest)
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        st = p.stat()
        h.update(f"{p.relative_to(folder).as_posix()}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1e".encode())
    return "stat:" + h.hexdigest()


class _Segment:
    def __init__(self, folder: Path):
        meta = read_json(folder / KEYS_FILE)
        self.folder = folder
        self.ids: list[str] = meta["ids"]
        self.keys: list[str] = meta["keys"]
        self._emb: np.ndarray | None = None
        if len(self.ids) != len(self.keys):
            raise ValueError(f"{folder}: {len(self.ids)} ids but {len(self.keys)} keys")

    @property
    def embeddings(self) -> np.ndarray:
        if self._emb is None:
            emb = np.load(self.folder / EMBEDDINGS_FILE, mmap_mode="r")
            if emb.shape[0] != len(self.keys):
                raise ValueError(f"{self.folder}: {emb.shape[0]} embeddings but {len(self.keys)} keys")
            self._emb = emb
        return self._emb


class ModelEmbeddings:
    """The stored embeddings of one model: look up records by key, add new segments."""

    def __init__(self, folder: Path, key: str, dtype: StoreDtype):
        self.folder = folder
        self.key = key
        self.dtype = dtype
        self._segments: dict[str, _Segment] = {}
        self._where: dict[str, tuple[str, int]] = {}
        self.refresh()

    @property
    def segments_dir(self) -> Path:
        return self.folder / SEGMENTS

    def refresh(self) -> None:
        """Pick up segments written since (by this process or another)."""
        if not self.segments_dir.is_dir():
            return
        for d in sorted(self.segments_dir.iterdir()):
            if d.name.startswith(".") or d.name in self._segments or not (d / SEGMENT_FILE).is_file():
                continue  # hidden = being written (or left by a killed writer); no segment.json = incomplete
            try:
                seg = _Segment(d)
            except (OSError, ValueError, KeyError) as e:
                log.warning("embedding store: ignoring unreadable segment %s: %s", d, e)
                continue
            self._segments[d.name] = seg
            for row, k in enumerate(seg.keys):
                self._where.setdefault(k, (d.name, row))

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Embeddings (float32) of ``keys``, in order; ``KeyError`` names the first key not stored."""
        if not keys:
            return np.zeros((0, 0), np.float32)
        where = [self._where[k] for k in keys]
        by_segment: dict[str, list[int]] = {}
        for i, (seg, _) in enumerate(where):
            by_segment.setdefault(seg, []).append(i)
        first = self._segments[where[0][0]].embeddings
        out = np.empty((len(keys), first.shape[1]), np.float32)
        for seg, positions in by_segment.items():  # one fancy-indexed read per segment, not one per row
            out[positions] = self._segments[seg].embeddings[[where[i][1] for i in positions]]
        return out

    def put(
        self,
        ids: Sequence[str],
        keys: Sequence[str],
        embeddings: np.ndarray,
        source: str,
        seconds: float = 0.0,
        inputs: Mapping[str, int] | None = None,
    ) -> str:
        """Write one segment atomically; returns its name."""
        if not len(ids):
            return ""
        if len(ids) != len(keys) or len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids, {len(keys)} keys and {len(embeddings)} embeddings")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[:80] or "segment"
        name = f"{safe}-{uuid.uuid4().hex[:8]}"
        with atomic_dir(self.segments_dir / name) as tmp:
            np.save(tmp / EMBEDDINGS_FILE, np.asarray(embeddings, dtype=self.dtype))
            write_json({"ids": list(ids), "keys": list(keys)}, tmp / KEYS_FILE)
            write_json(
                {
                    "source": source,
                    "count": len(ids),
                    "dim": int(embeddings.shape[1]),
                    "dtype": self.dtype,
                    "seconds": round(seconds, 3),
                    "pid": os.getpid(),
                    "inputs": dict(inputs or {}),
                    "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                tmp / SEGMENT_FILE,
            )
        with open(self.folder / ENCODES_LOG, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "segment": name,
                        "source": source,
                        "count": len(ids),
                        "seconds": round(seconds, 3),
                        "pid": os.getpid(),
                        "inputs": dict(inputs or {}),
                        "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                )
                + "\n"
            )
        self.refresh()
        return name

    def input_totals(self) -> dict[str, int]:
        """What the encoder did to the inputs of every record stored for this model (images shrunk or dropped to
        fit the context, texts cut), summed over its segments."""
        totals: dict[str, int] = {}
        for e in self.encode_log():
            for k, v in (e.get("inputs") or {}).items():
                totals[k] = totals.get(k, 0) + v
        return totals

    def encode_log(self) -> list[dict[str, Any]]:
        """Every segment write of this model, oldest first."""
        path = self.folder / ENCODES_LOG
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class EmbeddingStore:
    """Document embeddings on disk, one folder per model key (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, dtype: StoreDtype = "float32"):
        if dtype not in ("float32", "float16"):
            raise ValueError(f"embedding store dtype must be float32 or float16, not {dtype!r}")
        self.root = Path(root)
        self.dtype: StoreDtype = dtype
        self._models: dict[str, ModelEmbeddings] = {}

    def model(self, identity: Mapping[str, Any]) -> ModelEmbeddings:
        """The stored embeddings of the model ``identity`` describes (created on first use)."""
        key = model_key(identity)
        if key not in self._models:
            folder = self.root / key
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / MODEL_FILE).is_file():
                write_json({"key": key, "identity": dict(identity), "dtype": self.dtype}, folder / MODEL_FILE)
            self._models[key] = ModelEmbeddings(folder, key, self.dtype)
        else:
            self._models[key].refresh()
        return self._models[key]

    def models(self) -> list[dict[str, Any]]:
        """``model.json`` of every model in the store, with its record count and encode log."""
        out: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return out
        for d in sorted(p for p in self.root.iterdir() if (p / MODEL_FILE).is_file()):
            me = ModelEmbeddings(d, d.name, self.dtype)
            out.append(
                {
                    **read_json(d / MODEL_FILE),
                    "records": len(me),
                    "encodes": me.encode_log(),
                    "duplicates": _duplicates(me),
                    "inputs": me.input_totals(),
                }
            )
        return out

    def clean(self) -> list[Path]:
        """Remove segment folders a killed writer left half-written (hidden ``.*.tmp``). Returns what was removed."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for d in self.root.glob(f"*/{SEGMENTS}/.*"):
            if d.is_dir() and (d.name.endswith(".tmp") or ".old." in d.name) and not _held_by_live_pid(d):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed

    def duplicates(self, identity: Mapping[str, Any]) -> int:
        """Records stored more than once for this model (encoded twice: should be 0)."""
        return _duplicates(self.model(identity))


def _duplicates(me: ModelEmbeddings) -> int:
    seen: set[str] = set()
    dup = 0
    for seg in me._segments.values():
        for k in seg.keys:
            dup += k in seen
            seen.add(k)
    return dup


def _held_by_live_pid(tmp: Path) -> bool:
    """A temp folder younger than a minute may belong to a writer still running: keep it."""
    try:
        return time.time() - tmp.stat().st_mtime < 60
    except OSError:
        return False


__all__ = [
    "EmbeddingStore",
    "ModelEmbeddings",
    "StoreDtype",
    "folder_weights_id",
    "model_key",
    "record_key",
]
