"""Raw OBELICS shards -> validated document JSONL, one file per shard, with rejects kept beside.

A shard that cannot be read at all (truncated or corrupt Parquet, I/O error: :class:`~nyx.data.rejects.ShardError`)
is rejected as a whole and the other shards go on: it gets no ``<shard>.jsonl`` (one left from an earlier, good
version of the file is removed, so nothing downstream takes a stale or partial file for the shard), its rejects file
holds one shard-level item (``location`` the file name, ``reason`` the reader's error), and a marker
``.<shard>.rejected.json`` beside the documents says why, for the shard's downstream partitions
(:func:`shard_rejection`). A shard rejected this way is read again on every run (never skipped as unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nyx.data.images import ImageConfig
from nyx.data.obelics import iter_obelics, list_shards
from nyx.data.records import write_jsonl
from nyx.data.rejects import RejectLog, ShardError
from nyx.utils.io import file_sha256, read_json, write_json


@dataclass
class ShardStats:
    shard: str
    documents: int = 0
    images: int = 0
    text_only: int = 0
    multi_image: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped_unchanged: bool = False
    file: str | None = None  #: the raw file's name
    error: str | None = None  #: the reader's error when the whole shard was rejected (then no documents)


def _rejection_marker(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f".{name}.rejected.json"


def shard_rejection(out_dir: str | Path, name: str) -> str | None:
    """Why shard ``name`` has no documents in ``out_dir`` when it was rejected whole at ingestion, as a message
    naming the shard, its file, the reader's error and the rejects file; ``None`` when it was not rejected."""
    marker = _rejection_marker(Path(out_dir), name)
    if not marker.is_file():
        return None
    m = read_json(marker)
    return (f"shard {name!r} was rejected at ingestion: {m.get('file', name)}: {m.get('error')} "
            f"(kept in {m.get('rejects')}; repair or replace the file in the raw folder and materialise "
            "raw_documents again)")


def shard_name(path: str | Path) -> str:
    """The partition key of a raw shard: its file name without extensions."""
    name = Path(path).name
    return name.split(".")[0]


def ingest_shard(shard: Path, out_dir: Path, rejects_dir: Path, image_cfg: ImageConfig | None = None,
                 force: bool = False) -> ShardStats:
    """Validate one shard (every image fully decoded) and write ``<out_dir>/<shard>.jsonl``.

    Unchanged shards (same sha256 as last time) are skipped unless ``force``. A shard that cannot be read is
    rejected whole (see the module's docstring): the stats carry the reader's error in ``error``.
    """
    name = shard_name(shard)
    out = out_dir / f"{name}.jsonl"
    stamp_path = out_dir / f".{name}.stamp.json"
    marker = _rejection_marker(out_dir, name)
    try:
        digest = file_sha256(shard)
    except OSError as e:
        return _reject_shard(ShardError(shard.name, f"unreadable file ({type(e).__name__}): {e}"), shard, name,
                             out_dir, rejects_dir, None)
    if not force and out.exists() and stamp_path.exists() and not marker.exists():
        stamp = read_json(stamp_path)
        if stamp.get("sha256") == digest:
            st = ShardStats(**stamp["stats"])
            st.skipped_unchanged, st.file = True, shard.name
            return st
    rejects = RejectLog(stage="raw_documents")
    stats = ShardStats(shard=name, file=shard.name)
    docs = []
    try:  # all or nothing: a shard unreadable past its first rows keeps none of them
        for doc in iter_obelics(shard, rejects, verify_images=True, image_cfg=image_cfg or ImageConfig()):
            docs.append(doc)
            n = doc.n_images
            stats.images += n
            stats.text_only += n == 0
            stats.multi_image += n >= 2
    except ShardError as e:
        return _reject_shard(e, shard, name, out_dir, rejects_dir, digest)
    stats.documents = len(docs)
    write_jsonl(docs, out)
    rejects.write(rejects_dir / f"{name}.jsonl")
    marker.unlink(missing_ok=True)
    stats.rejected = rejects.count
    stats.reasons = rejects.reasons()
    write_json({"sha256": digest, "stats": stats.__dict__}, stamp_path)
    return stats


def _reject_shard(error: ShardError, shard: Path, name: str, out_dir: Path, rejects_dir: Path,
                  digest: str | None) -> ShardStats:
    """Reject a whole shard: no documents file (an old one removed), one shard-level reject, the marker."""
    rejects = RejectLog(stage="raw_documents")
    rejects.add(error.reason, location=shard.name)
    rejects_file = rejects.write(rejects_dir / f"{name}.jsonl")
    (out_dir / f"{name}.jsonl").unlink(missing_ok=True)
    (out_dir / f".{name}.stamp.json").unlink(missing_ok=True)
    write_json({"shard": name, "file": shard.name, "sha256": digest, "error": error.reason,
                "rejects": str(rejects_file)}, _rejection_marker(out_dir, name))
    # ``rejected`` counts rejected documents: a whole shard is counted apart, by its ``error``
    return ShardStats(shard=name, file=shard.name, error=error.reason)


def ingest_raw(raw_dir: Path, out_dir: Path, rejects_dir: Path, image_cfg: ImageConfig | None = None,
               shards: list[str] | None = None) -> list[ShardStats]:
    """Ingest every shard of ``raw_dir`` (or only the named ones); a rejected shard is in the list with ``error``
    set, and does not stop the others."""
    found = list_shards(raw_dir)
    if shards is not None:
        wanted = set(shards)
        found = [s for s in found if shard_name(s) in wanted]
    return [ingest_shard(Path(s), Path(out_dir), Path(rejects_dir), image_cfg) for s in found]
