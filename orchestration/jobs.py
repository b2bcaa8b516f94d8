"""Jobs: the nightly incremental data job, the weekly retrain job, and the two whole-graph jobs ``make run`` runs."""

import warnings

import dagster as dg

#: New shards -> chunks -> QA (partitioned by shard; nyxqa, hard_negatives and feedback follow by automation).
nightly_incremental = dg.define_asset_job(
    "nightly_incremental",
    selection=dg.AssetSelection.assets("raw_images", "raw_documents", "corpus_chunks", "synthetic_qa"),
    description="Process corpus shards (new ones first registered by the shard sensor): remote images fetched, raw "
    "documents, chunks, QA. "
    "nyxqa, hard_negatives and feedback_preferences refresh through their automation conditions.",
    tags={"nyx/job": "nightly"},
)

#: snapshot -> Stage 1 -> feedback -> feedback snapshot -> Stage 2 -> evaluation -> promotion (all unpartitioned).
weekly_retrain = dg.define_asset_job(
    "weekly_retrain",
    # the per-shard embedding assets are partitioned: they follow by automation (or a backfill); the index assets
    # encode whatever the embedding store lacks, so this job also runs on its own
    selection=dg.AssetSelection.assets(
        "training_sources",
        "data_snapshot",
        "stage1_checkpoint",
        "stage1_index",
        "feedback_preferences",
        "feedback_snapshot",
        "stage2_checkpoint",
        "stage2_index",
        "eval_report",
        "champion_model",
    ),
    description="Retrain and evaluate on the current data snapshot; promote the challenger if it passes the gate.",
    tags={"nyx/job": "weekly"},
)

#: ``make run`` (:func:`orchestration.pipeline.materialize_graph`) materialises the graph through these two named
#: jobs, one layer of the graph per run, so that its runs show in the UI's timeline, job and partitions pages:
#: every unpartitioned asset, and every shard-partitioned asset (one run per shard).
FULL_GRAPH = "full_graph"
FULL_GRAPH_BY_SHARD = "full_graph_by_shard"
# Its assets have different backfill policies (chunks and QA: one run for many shards; embeddings: one run per
# shard), so Dagster warns and uses one run per shard for the job, which is what `make run` does anyway.
warnings.filterwarnings(
    "ignore", message=f"Asset job {FULL_GRAPH_BY_SHARD} materializes assets with varying BackfillPolicies"
)


def graph_jobs(defs: dg.Definitions) -> list:
    """The two whole-graph jobs over the assets of ``defs``: unpartitioned ones, shard-partitioned ones."""
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    partitioned = [k for a in assets if a.partitions_def is not None for k in a.keys]
    unpartitioned = [k for a in assets if a.partitions_def is None for k in a.keys]
    return [
        dg.define_asset_job(
            FULL_GRAPH,
            selection=dg.AssetSelection.assets(*unpartitioned),
            description="Every unpartitioned asset (with its checks). `make run` materialises the "
            "graph through this job and full_graph_by_shard, one layer per run.",
            tags={"nyx/job": "make-run"},
        ),
        dg.define_asset_job(
            FULL_GRAPH_BY_SHARD,
            selection=dg.AssetSelection.assets(*partitioned),
            description="Every shard-partitioned asset, one run per shard (chunks, QA, per-shard "
            "embeddings). `make run` runs it for each shard's layer.",
            tags={"nyx/job": "make-run"},
        ),
    ]


JOBS = [nightly_incremental, weekly_retrain]
