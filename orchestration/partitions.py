"""Corpus shards as dynamic partitions: a new shard dropped into ``data/raw`` becomes a new partition."""

from __future__ import annotations

import dagster as dg

from nyx.paths import DataPaths

SHARDS = dg.DynamicPartitionsDefinition(name="shards")


def shard_keys(paths: DataPaths) -> list[str]:
    from nyx.data.ingest import shard_name
    from nyx.data.obelics import list_shards

    keys = {shard_name(s) for s in list_shards(paths.raw)} if paths.raw.is_dir() else set()
    manifest = paths.raw / "manifest.txt"  # optional: shards listed by name (one per line) before they are copied
    if manifest.is_file():
        listed = [ln.strip() for ln in manifest.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        keys |= {
            shard_name(x)
            for x in listed
            if (paths.raw / x).exists() or (paths.raw / f"{shard_name(x)}.parquet").exists()
        }
    return sorted(keys)


def sync_shard_partitions(instance: dg.DagsterInstance, paths: DataPaths) -> list[str]:
    """Register every shard in ``paths.raw`` as a partition; return all shard keys on disk."""
    keys = shard_keys(paths)
    known = set(instance.get_dynamic_partitions(SHARDS.name))
    new = [k for k in keys if k not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS.name, new)
    return keys
