"""Jobs: the nightly incremental data job and the weekly retrain job."""

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
    selection=dg.AssetSelection.assets("training_sources", "data_snapshot", "stage1_checkpoint", "stage1_index",
                                       "feedback_preferences", "feedback_snapshot", "stage2_checkpoint", "stage2_index",
                                       "eval_report", "champion_model"),
    description="Retrain and evaluate on the current data snapshot; promote the challenger if it passes the gate.",
    tags={"nyx/job": "weekly"},
)

JOBS = [nightly_incremental, weekly_retrain]
