"""Materialise the whole graph in dependency order: used by ``make run`` and the end-to-end test."""

from __future__ import annotations

from typing import Any

import dagster as dg

from nyx.paths import DataPaths
from orchestration.partitions import sync_shard_partitions
from orchestration.stale_runs import PoolWatcher, run_tags


def prepare_sample(paths: DataPaths, profile_name: str | None = None) -> None:
    """Write the bundled synthetic sample (at the size the active profile's ``sample`` settings ask for) into
    ``paths.raw`` unless shards are already there. A profile without ``sample`` settings (``paper``) reads the
    user's corpus: with no shards in ``paths.raw`` that is a clear error."""
    import os

    from nyx.data.obelics import list_shards
    from nyx.data.sample import generate_sample
    from nyx.profiles import load_profile

    if paths.raw.is_dir() and list_shards(paths.raw):
        return
    name = profile_name or os.environ.get("NYX_PROFILE", "sample")
    sample = load_profile(name).sample
    if sample is None:
        raise FileNotFoundError(f"profile {name!r} reads your corpus from {paths.raw} (OBELICS shards), and there "
                                "are none: put shards there, or run the bundled sample with NYX_PROFILE=sample "
                                "or rehearsal")
    generate_sample(paths.raw, n_docs=sample.n_docs, seed=sample.seed)


def materialize_graph(defs: dg.Definitions, instance: dg.DagsterInstance,
                      run_config: dict[str, Any] | None = None,
                      resources: dict[str, Any] | None = None) -> list[dg.ExecuteInProcessResult]:
    """Materialise every asset of ``defs``: unpartitioned roots, each shard partition, then the rest.

    Raises if any run fails (a failing blocking check stops downstream assets and fails the run).
    """
    from orchestration.resources import NyxSettings

    graph = defs.resolve_asset_graph()
    all_assets = [*(defs.assets or []), *(defs.asset_checks or [])]
    res = dict(defs.resources or {})
    res.update(resources or {})
    settings: NyxSettings = res.get("settings") or NyxSettings()
    keys = list(graph.get_all_asset_keys())
    partitioned = {k for k in keys if graph.get(k).partitions_def is not None}
    # unpartitioned assets that feed partitioned ones (such as raw_documents) run first
    first = {k for k in keys if k not in partitioned and k in _ancestors(graph, partitioned)}
    rest = [k for k in keys if k not in partitioned and k not in first]

    # INFO on the console (Dagster's in-process default is DEBUG: every engine event); the UI keeps everything
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    results = []

    def run(selection: set[dg.AssetKey] | list[dg.AssetKey], partition_key: str | None = None):
        if not selection:
            return
        with PoolWatcher(instance):  # a step waiting for a pool slot says who holds it, every 30 s
            r = dg.materialize(all_assets, selection=list(selection), instance=instance, resources=res,
                               partition_key=partition_key, run_config=run_config,
                               tags={"nyx/profile": settings.profile, **run_tags()})
        results.append(r)

    run(first)
    if partitioned:
        for key in sync_shard_partitions(instance, settings.paths):
            run(partitioned, partition_key=key)
    run(rest)
    return results


def _ancestors(graph, keys: set[dg.AssetKey]) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    stack = list(keys)
    while stack:
        for p in graph.get(stack.pop()).parent_keys:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen
