"""Materialise the whole graph in dependency order: used by ``make run`` and the end-to-end test."""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg

from nyx.paths import DataPaths
from orchestration.partitions import sync_shard_partitions
from orchestration.stale_runs import PoolWatcher, run_tags

log = logging.getLogger(__name__)


def prepare_sample(paths: DataPaths, profile_name: str | None = None) -> None:
    """Write the bundled synthetic sample (at the size the active profile's ``sample`` settings ask for) into
    ``paths.raw`` unless shards are already there. A profile without ``sample`` settings (``paper``) reads the
    user's corpus: with no shards in ``paths.raw`` that is a clear error. A sample-sized profile whose Stage 1
    declares the bundled external-source fixtures (``rehearsal``) gets them written under ``<data>/external``
    (:mod:`nyx.data.sample.training_sources`) when they are missing."""
    import os

    from nyx.data.obelics import list_shards
    from nyx.data.sample import generate_sample
    from nyx.data.sample.training_sources import ensure_sample_sources
    from nyx.settings import load_profile

    name = profile_name or os.environ.get("NYX_PROFILE", "sample")
    profile = load_profile(name)
    ensure_sample_sources(paths, profile)
    if paths.raw.is_dir() and list_shards(paths.raw):
        return
    sample = profile.sample
    if sample is None:
        raise FileNotFoundError(
            f"profile {name!r} reads your corpus from {paths.raw} (OBELICS shards), and there "
            "are none: put shards there, or run the bundled sample with NYX_PROFILE=sample "
            "or rehearsal"
        )
    generate_sample(paths.raw, n_docs=sample.n_docs, seed=sample.seed)


def materialize_graph(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Materialise every asset of ``defs`` in dependency order, in layers: every unpartitioned asset whose parents
    are done runs in one run; then every shard-partitioned asset whose parents are done runs once per shard
    partition; and so on (raw_documents, then chunks and QA per shard, then NyxQA to Stage 1, then Stage 1's
    embeddings per shard, then its index, ...). Each run is a run of a named job (``full_graph`` for unpartitioned
    layers, ``full_graph_by_shard`` for a shard's layer, :func:`orchestration.jobs.graph_jobs`) with the layer as its
    asset selection, so it shows in the Dagster UI's timeline, job and partitions pages.

    An unpartitioned run that fails raises at once (a failing blocking check stops downstream assets and fails the
    run). A shard partition that fails (a bad shard) does not stop the others: its later partitions are skipped,
    everything else goes on, and :class:`PartitionsFailed` is raised at the end, naming the shards and runs.
    """
    from orchestration.definitions import resources as environment_resources
    from orchestration.jobs import FULL_GRAPH, FULL_GRAPH_BY_SHARD, graph_jobs
    from orchestration.resources import NyxSettings

    res = dict(defs.resources or {})
    res.update(resources or {})
    settings: NyxSettings = res.get("settings") or environment_resources()["settings"]
    # the named whole-graph jobs, bound to these resources: the runs show in the UI under their job names
    bound = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=graph_jobs(defs), resources=res)
    jobs = {False: bound.resolve_job_def(FULL_GRAPH), True: bound.resolve_job_def(FULL_GRAPH_BY_SHARD)}
    graph = bound.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())

    # INFO on the console (Dagster's in-process default is DEBUG: every engine event); the UI keeps everything
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    results = []

    def run(selection: set[dg.AssetKey] | list[dg.AssetKey], partition_key: str | None = None) -> bool:
        with PoolWatcher(instance):  # a step waiting for a pool slot says who holds it, every 30 s
            r = jobs[partition_key is not None].execute_in_process(
                run_config=run_config,
                instance=instance,
                partition_key=partition_key,
                asset_selection=sorted(selection),
                raise_on_error=partition_key is None,
                tags={"nyx/profile": settings.profile, "nyx/launched_by": "make run", **run_tags()},
            )
        results.append(r)
        return r.success

    shards: list[str] | None = None
    failed: dict[str, str] = {}  # shard -> the run that failed it
    for partitioned, layer in graph_layers(graph, keys):
        if not partitioned:
            run(layer)
            continue
        if shards is None:  # registered once, after the unpartitioned roots (raw_documents) ran
            shards = sync_shard_partitions(instance, settings.paths)
        for key in shards:
            if key in failed:  # its earlier partition failed: its files are missing or withdrawn
                continue
            if not run(layer, partition_key=key):
                failed[key] = results[-1].run_id
                log.error(
                    "shard %s failed (run %s); the other shards go on, and the run ends with an error", key, failed[key]
                )
    if failed:
        raise PartitionsFailed(failed, results)
    return results


class PartitionsFailed(RuntimeError):
    """Some shard partitions failed; every other shard and everything downstream was materialised."""

    def __init__(self, failed: dict[str, str], results: list[dg.ExecuteInProcessResult]):
        self.failed, self.results = failed, results
        super().__init__(
            f"{len(failed)} shard partition(s) failed: "
            + ", ".join(f"{k} (run {r})" for k, r in sorted(failed.items()))
            + ". The other shards and the downstream assets were materialised without them; see each "
            "run's step log in the Dagster UI, fix the shard and materialise its partitions again."
        )


def graph_layers(graph, keys: list[dg.AssetKey]) -> list[tuple[bool, set[dg.AssetKey]]]:
    """``keys`` in dependency order as alternating layers ``(partitioned, assets)``: each layer is every asset of
    one kind (partitioned or not) whose parents within ``keys`` are in earlier layers or, for its own kind, in the
    same layer. Unpartitioned layers come first when both kinds are ready."""
    todo = set(keys)
    done: set[dg.AssetKey] = set()
    layers: list[tuple[bool, set[dg.AssetKey]]] = []
    kind, empty = False, 0
    while todo:
        layer: set[dg.AssetKey] = set()
        grew = True
        while grew:  # close the layer over same-kind descendants whose other parents are done
            grew = False
            for k in todo - layer:
                node = graph.get(k)
                if (node.partitions_def is not None) == kind and all(
                    p in done or p in layer or p not in todo for p in node.parent_keys
                ):
                    layer.add(k)
                    grew = True
        if layer:
            layers.append((kind, layer))
            done |= layer
            todo -= layer
            empty = 0
        elif (empty := empty + 1) == 2:  # neither kind can go on: a cycle
            raise RuntimeError(f"cannot order assets {sorted(a.to_user_string() for a in todo)}")
        kind = not kind
    return layers
