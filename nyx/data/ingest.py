"""Raw OBELICS shards -> validated document JSONL, one file per shard, with rejects kept beside."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nyx.data.images import ImageConfig
from nyx.data.obelics import iter_obelics, list_shards
from nyx.data.records import write_jsonl
from nyx.data.rejects import RejectLog
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


def shard_name(path: str | Path) -> str:
    """The partition key of a raw shard: its file name without extensions."""
    name = Path(path).name
    return name.split(".")[0]


def ingest_shard(shard: Path, out_dir: Path, rejects_dir: Path, image_cfg: ImageConfig | None = None,
                 force: bool = False) -> ShardStats:
    """Validate one shard (every image fully decoded) and write ``<out_dir>/<shard>.jsonl``.

    Unchanged shards (same sha256 as last time) are skipped unless ``force``.
    """
    name = shard_name(shard)
    out = out_dir / f"{name}.jsonl"
    stamp_path = out_dir / f".{name}.stamp.json"
    digest = file_sha256(shard)
    if not force and out.exists() and stamp_path.exists():
        stamp = read_json(stamp_path)
        if stamp.get("sha256") == digest:
            st = ShardStats(**stamp["stats"])
            st.skipped_unchanged = True
            return st
    rejects = RejectLog(stage="raw_documents")
    stats = ShardStats(shard=name)
    docs = []
    for doc in iter_obelics(shard, rejects, verify_images=True, image_cfg=image_cfg or ImageConfig()):
        docs.append(doc)
        n = doc.n_images
        stats.images += n
        stats.text_only += n == 0
        stats.multi_image += n >= 2
    stats.documents = len(docs)
    write_jsonl(docs, out)
    rejects.write(rejects_dir / f"{name}.jsonl")
    stats.rejected = rejects.count
    stats.reasons = rejects.reasons()
    write_json({"sha256": digest, "stats": stats.__dict__}, stamp_path)
    return stats


def ingest_raw(raw_dir: Path, out_dir: Path, rejects_dir: Path, image_cfg: ImageConfig | None = None,
               shards: list[str] | None = None) -> list[ShardStats]:
    """Ingest every shard of ``raw_dir`` (or only the named ones)."""
    found = list_shards(raw_dir)
    if shards is not None:
        wanted = set(shards)
        found = [s for s in found if shard_name(s) in wanted]
    return [ingest_shard(Path(s), Path(out_dir), Path(rejects_dir), image_cfg) for s in found]
