"""Reading a corpus's embeddings from the :class:`~nyx.index.store.EmbeddingStore` and encoding only what it lacks.

:func:`lookup_or_encode` returns the embeddings of a list of records in order: the stored ones are read, the others
encoded (and written to the store as one segment); :func:`encode_counted` times one encode and counts what the encoder
did to its inputs; :class:`EncodeStats` adds up what each pass cost (records reused, encoded, rejected).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nyx.data.records import Record
from nyx.index.store import ModelEmbeddings, record_key


@dataclass
class EncodeStats:
    """What one pass over a corpus cost: records found in the store, records encoded, records rejected."""

    reused: int = 0
    encoded: int = 0
    rejected: int = 0
    segments: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: what the encoder did to the inputs it encoded (``NyxEncoder.input_stats``: images shrunk or dropped to fit
    #: the context, texts truncated), summed over the encoded records
    inputs: dict[str, int] = field(default_factory=dict)

    def __iadd__(self, other: EncodeStats) -> EncodeStats:
        self.reused += other.reused
        self.encoded += other.encoded
        self.rejected += other.rejected
        self.segments += other.segments
        self.seconds += other.seconds
        for k, v in other.inputs.items():
            self.inputs[k] = self.inputs.get(k, 0) + v
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "reused": self.reused,
            "encoded": self.encoded,
            "rejected": self.rejected,
            "segments_written": len(self.segments),
            "encode_seconds": round(self.seconds, 3),
            **{f"inputs_{k}": v for k, v in sorted(self.inputs.items())},
        }


def encode_counted(
    records: list[Record],
    encode: Callable[[list[Record]], tuple[list[str], np.ndarray]],
    input_stats: Callable[[], Mapping[str, int]] | None = None,
) -> tuple[list[str], np.ndarray, EncodeStats]:
    """``encode(records)`` timed, with what it did to the inputs (the change of ``input_stats()``) and how many
    records it left out (rejected)."""
    before = dict(input_stats()) if input_stats is not None else {}
    t0 = time.perf_counter()
    ids, emb = encode(records)
    stats = EncodeStats(encoded=len(ids), rejected=len(records) - len(ids), seconds=time.perf_counter() - t0)
    if input_stats is not None:
        stats.inputs = {k: v - before.get(k, 0) for k, v in input_stats().items()}
    return ids, emb, stats


def lookup_or_encode(
    store_model: ModelEmbeddings,
    records: Sequence[Record],
    encode: Callable[[list[Record]], tuple[list[str], np.ndarray]],
    *,
    source: str,
    read: bool = True,
    input_stats: Callable[[], Mapping[str, int]] | None = None,
) -> tuple[list[str], np.ndarray, EncodeStats]:
    """``(ids, embeddings)`` of ``records`` in order, leaving out rejected ones: stored embeddings are read,
    the others encoded with ``encode(records) -> (ids, embeddings)`` (which leaves out the records it rejects)
    and written as one segment named after ``source``. With ``read=False`` only the store is filled (the
    returned ids and embeddings are empty). ``input_stats`` (e.g. ``NyxEncoder.input_stats``) is read before and
    after encoding: the difference (images shrunk or dropped, texts cut) is kept with the segment."""
    keys = [record_key(r) for r in records]
    missing = [(r, k) for r, k in zip(records, keys) if k not in store_model]
    new: dict[str, np.ndarray] = {}
    if missing:
        ids, emb, stats = encode_counted([r for r, _ in missing], encode, input_stats)
        key_of = {r.id: k for r, k in missing}
        if ids:
            stats.segments.append(
                store_model.put(ids, [key_of[i] for i in ids], np.asarray(emb), source, stats.seconds, stats.inputs)
            )
        new = {key_of[i]: np.asarray(e, dtype=np.float32) for i, e in zip(ids, emb)}
    else:
        stats = EncodeStats()
    stats.reused = len(records) - len(missing)
    if not read:
        return [], np.zeros((0, 0), np.float32), stats
    missing_keys = {k for _, k in missing}
    kept = [(r.id, k) for r, k in zip(records, keys) if k in new or k not in missing_keys]
    if not kept:
        return [], np.zeros((0, 0), np.float32), stats
    stored = {k for _, k in kept if k not in new}
    found = dict(zip(stored, store_model.get(list(stored)))) if stored else {}
    emb = np.stack([new[k] if k in new else found[k] for _, k in kept])
    return [i for i, _ in kept], emb, stats


__all__ = ["EncodeStats", "encode_counted", "lookup_or_encode"]
