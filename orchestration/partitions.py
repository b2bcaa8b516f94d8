"""Corpus shards as dynamic partitions: a new shard dropped into ``data/raw`` becomes a new partition."""

from __future__ import annotations

import dagster as dg

from nyx.paths import DataPaths

SHARDS = dg.DynamicPartitionsDefinition(name="shards")


def shard_keys(paths: DataPaths) -> list[str]:
    from nyx.data.ingest import shard_name
    from nyx.data.obelics import list_shards

    return sorted({shard_name(s) for s in list_shards(paths.raw)}) if paths.raw.is_dir() else []


def sync_shard_partitions(instance: dg.DagsterInstance, paths: DataPaths) -> list[str]:
    """Register every shard in ``paths.raw`` as a partition; return all shard keys on disk."""
    keys = shard_keys(paths)
    known = set(instance.get_dynamic_partitions(SHARDS.name))
    new = [k for k in keys if k not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS.name, new)
    return keys
