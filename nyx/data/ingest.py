"""Raw OBELICS shards -> validated document JSONL, one file per shard, with rejects kept beside.

A shard that cannot be read at all (truncated or corrupt Parquet, I/O error: :class:`~nyx.data.rejects.ShardError`)
is rejected as a whole and the other shards go on: it gets no ``<shard>.jsonl``, its rejects file holds one
shard-level item (``location`` the file name, ``reason`` the reader's error, ``withdrawn`` the files removed), and a
marker ``.<shard>.rejected.json`` beside the documents says why, for the shard's downstream partitions
(:func:`shard_rejection`). A shard rejected this way is read again on every run (never skipped as unchanged).

Files derived from an earlier, good version of a shard that is now rejected are *withdrawn*: its documents file and,
given ``derived_dirs`` (the chunk and synthetic-QA folders), ``<dir>/<shard>.jsonl`` there are removed
(:func:`withdraw_shard_outputs`), so nothing downstream that reads those folders takes a stale or partial file for the
shard. What was removed is listed in the stats (``withdrawn``), in the shard's reject item and in its marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    #: files of an earlier, good version of a rejected shard removed by this ingestion (documents, chunks, QA)
    withdrawn: list[str] = field(default_factory=list)


def _rejection_marker(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f".{name}.rejected.json"


def shard_rejection(out_dir: str | Path, name: str) -> str | None:
    """Why shard ``name`` has no documents in ``out_dir`` when it was rejected whole at ingestion, as a message
    naming the shard, its file, the reader's error and the rejects file; ``None`` when it was not rejected."""
    marker = _rejection_marker(Path(out_dir), name)
    if not marker.is_file():
        return None
    m = read_json(marker)
    return (
        f"shard {name!r} was rejected at ingestion: {m.get('file', name)}: {m.get('error')} "
        f"(kept in {m.get('rejects')}; repair or replace the file in the raw folder and materialise "
        "raw_documents again)"
    )


def withdraw_shard_outputs(name: str, dirs: Iterable[str | Path]) -> list[str]:
    """Remove the files derived from shard ``name`` (``<dir>/<name>.jsonl`` in each of ``dirs``) and return the
    paths removed, so that a shard rejected now leaves nothing of an earlier version for downstream readers."""
    removed = []
    for d in dirs:
        f = Path(d) / f"{name}.jsonl"
        try:
            f.unlink()
        except FileNotFoundError:
            continue
        removed.append(str(f))
    return removed


def shard_name(path: str | Path) -> str:
    """The partition key of a raw shard: its file name without extensions."""
    name = Path(path).name
    return name.split(".")[0]


def ingest_shard(
    shard: Path,
    out_dir: Path,
    rejects_dir: Path,
    image_cfg: ImageConfig | None = None,
    force: bool = False,
    derived_dirs: Sequence[str | Path] = (),
) -> ShardStats:
    """Validate one shard (every image fully decoded) and write ``<out_dir>/<shard>.jsonl``.

    Unchanged shards (same sha256 as last time) are skipped unless ``force``. A shard that cannot be read is
    rejected whole (see the module's docstring): the stats carry the reader's error in ``error`` and the files
    withdrawn (its documents file, ``<dir>/<shard>.jsonl`` of each of ``derived_dirs``) in ``withdrawn``.
    """
    name = shard_name(shard)
    out = out_dir / f"{name}.jsonl"
    stamp_path = out_dir / f".{name}.stamp.json"
    marker = _rejection_marker(out_dir, name)
    try:
        digest = file_sha256(shard)
    except OSError as e:
        return _reject_shard(
            ShardError(shard.name, f"unreadable file ({type(e).__name__}): {e}"),
            shard,
            name,
            out_dir,
            rejects_dir,
            None,
            derived_dirs,
        )
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
        return _reject_shard(e, shard, name, out_dir, rejects_dir, digest, derived_dirs)
    stats.documents = len(docs)
    write_jsonl(docs, out)
    rejects.write(rejects_dir / f"{name}.jsonl")
    marker.unlink(missing_ok=True)
    stats.rejected = rejects.count
    stats.reasons = rejects.reasons()
    write_json({"sha256": digest, "stats": stats.__dict__}, stamp_path)
    return stats


def _reject_shard(
    error: ShardError,
    shard: Path,
    name: str,
    out_dir: Path,
    rejects_dir: Path,
    digest: str | None,
    derived_dirs: Sequence[str | Path] = (),
) -> ShardStats:
    """Reject a whole shard: its documents and derived files withdrawn, one shard-level reject, the marker."""
    marker = _rejection_marker(out_dir, name)
    withdrawn = withdraw_shard_outputs(name, [out_dir, *derived_dirs])
    (out_dir / f".{name}.stamp.json").unlink(missing_ok=True)
    # a shard rejected again keeps the list of what its first rejection withdrew (the rejects file is rewritten)
    earlier = list(read_json(marker).get("withdrawn") or []) if marker.is_file() else []
    all_withdrawn = earlier + [w for w in withdrawn if w not in earlier]
    rejects = RejectLog(stage="raw_documents")
    rejects.add(error.reason, location=shard.name)
    rejects.items[-1]["withdrawn"] = all_withdrawn
    rejects_file = rejects.write(rejects_dir / f"{name}.jsonl")
    write_json(
        {
            "shard": name,
            "file": shard.name,
            "sha256": digest,
            "error": error.reason,
            "rejects": str(rejects_file),
            "withdrawn": all_withdrawn,
        },
        marker,
    )
    # ``rejected`` counts rejected documents: a whole shard is counted apart, by its ``error``
    return ShardStats(shard=name, file=shard.name, error=error.reason, withdrawn=withdrawn)


def ingest_raw(
    raw_dir: Path,
    out_dir: Path,
    rejects_dir: Path,
    image_cfg: ImageConfig | None = None,
    shards: list[str] | None = None,
    derived_dirs: Sequence[str | Path] = (),
) -> list[ShardStats]:
    """Ingest every shard of ``raw_dir`` (or only the named ones); a rejected shard is in the list with ``error``
    set, and does not stop the others. ``derived_dirs``: folders of per-shard files made from the documents
    (``<dir>/<shard>.jsonl``), withdrawn for a rejected shard."""
    found = list_shards(raw_dir)
    if shards is not None:
        wanted = set(shards)
        found = [s for s in found if shard_name(s) in wanted]
    return [
        ingest_shard(Path(s), Path(out_dir), Path(rejects_dir), image_cfg, derived_dirs=derived_dirs) for s in found
    ]
