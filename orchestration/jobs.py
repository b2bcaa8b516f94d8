"""Jobs: the nightly incremental data job and the weekly retrain job."""

import dagster as dg

#: New shards -> chunks -> QA (partitioned by shard; nyxqa, hard_negatives and feedback follow by automation).
nightly_incremental = dg.define_asset_job(
    "nightly_incremental",
    selection=dg.AssetSelection.assets("raw_documents", "corpus_chunks", "synthetic_qa"),
    description="Process corpus shards (new ones first registered by the shard sensor): raw documents, chunks, QA. "
                "nyxqa, hard_negatives and feedback_preferences refresh through their automation conditions.",
    tags={"nyx/job": "nightly"},
)

#: Stage 1 -> feedback -> Stage 2 -> evaluation -> promotion (all unpartitioned).
weekly_retrain = dg.define_asset_job(
    "weekly_retrain",
    selection=dg.AssetSelection.assets("data_snapshot", "stage1_checkpoint", "feedback_preferences",
                                       "stage2_checkpoint", "eval_report", "champion_model"),
    description="Retrain and evaluate on the current data snapshot; promote the challenger if it passes the gate.",
    tags={"nyx/job": "weekly"},
)

JOBS = [nightly_incremental, weekly_retrain]
