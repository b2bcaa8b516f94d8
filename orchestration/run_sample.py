"""``make run``: the whole asset graph on the bundled sample with the tiny offline models.

Steps: prepare an offline Dagster instance under ``.dagster_home`` (so the runs appear in ``make ui``), write the
synthetic sample corpus into ``data/raw`` if it is not there, register its shards as partitions, then materialise
every asset in dependency order (unpartitioned upstream, each shard's partitions, everything downstream) with all
checks. Ends with what was produced and how to look at it.
"""

from __future__ import annotations

import sys
import time

from orchestration.instance_setup import ensure_instance


def main(argv: list[str] | None = None) -> int:
    from nyx.paths import DataPaths
    from nyx.utils.runlock import PipelineBusy, pipeline_lock

    paths = DataPaths.at()
    try:
        with pipeline_lock(paths.work, what="make run"):  # a second `make run` refuses before touching anything
            return _run(paths)
    except PipelineBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


def _run(paths) -> int:
    ensure_instance()
    import dagster as dg

    from orchestration.definitions import defs as lazy_defs
    from orchestration.pipeline import PartitionsFailed, materialize_graph, prepare_sample
    from orchestration.stale_runs import clean_stale_runs

    t0 = time.time()
    prepare_sample(paths)
    instance = dg.DagsterInstance.get()
    for cleaned in clean_stale_runs(instance):  # runs of killed processes would hold their pool slots for ever
        print(f"cleaned: {cleaned.line()}")
    defs = lazy_defs()
    failed = None
    try:
        results = materialize_graph(defs, instance)
    except PartitionsFailed as e:
        failed, results = e, e.results
    elapsed = time.time() - t0
    print("\n" + "=" * 78)
    import os

    profile = os.environ.get("NYX_PROFILE", "sample")
    ok = sum(r.success for r in results)
    print(f"Nyx pipeline, profile {profile!r}: {ok} of {len(results)} runs succeeded in {elapsed / 60:.1f} min")
    for line in summarize(results):
        print("  " + line)
    print("\nLook at it:")
    print(
        "  make ui    -> Dagster UI http://127.0.0.1:3000 (runs, lineage, checks) and MLflow UI http://127.0.0.1:5000"
    )
    print(f"  data:      {paths.root}  (DVC-tracked: `dvc status data.dvc`)")
    print(f"  reports:   {paths.reports}")
    if failed is not None:
        print(f"\nerror: {failed}", file=sys.stderr)
        return 1
    return 0


def summarize(results) -> list[str]:
    lines = []
    for res in results:
        for ev in res.get_asset_materialization_events():
            mat = ev.event_specific_data.materialization
            key = mat.asset_key.to_user_string()
            part = f"[{mat.partition}]" if mat.partition else ""
            shown = []
            for k, v in list(mat.metadata.items())[:4]:
                val = getattr(v, "value", v)
                if isinstance(val, (int, float, str)) and len(str(val)) < 40:
                    shown.append(f"{k}={val}")
            lines.append(f"{key}{part}: " + ", ".join(shown))
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
