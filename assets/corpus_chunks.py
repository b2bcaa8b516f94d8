"""``corpus_chunks``: each shard's documents cut into chunks within the token budget, with its blocking check."""

import dagster as dg

from assets.lib.metadata import jsonable
from assets.lib.profile import ProfileConfig, backbone_path, profile_for
from assets.lib.shards import SHARD_AUTOMATION, report_partitions, shard_failure, shard_source
from orchestration.partitions import SHARDS
from orchestration.resources import NyxSettings


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    partitions_def=SHARDS,
    deps=["raw_documents"],
    code_version="chunks-v1",
    automation_condition=SHARD_AUTOMATION,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def corpus_chunks(
    context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig
) -> dg.MaterializeResult:
    """Documents of one shard cut into chunks of at most `chunking.max_tokens` tokens (an image counts as one).

    Images stay with the chunk in which they stand; chunks with too many images, or with an image that does not
    decode, are dropped and kept in `data/rejects/corpus_chunks`. Ids are `<document id>#c<ordinal>`.

    One run may handle several shards (a backfill under `BackfillPolicy.single_run`): each shard is chunked on its
    own and each partition's materialisation carries only its own shard's `chunks`, `documents`, `rejected`,
    `reject_reasons` and `stats`; the run's totals are in the step log. A shard that cannot be chunked (rejected
    at ingestion, documents missing, an error while chunking) does not stop the others. When one does, the good
    shards are reported as one `AssetMaterialization` per partition and the step then fails with a `Failure`
    naming every failed shard and why (`failed_shards` in its metadata, an error line per shard in the log): in
    Dagster the good partitions show as materialised and only the bad ones as failed (Dagster counts a partition
    failed when a failed run planned it and did not materialise it). This was chosen over returning one result for
    the whole run, which marks every partition of the run failed or every one materialised; the price is that the
    steps after this one in that run (`synthetic_qa`) do not run, and run for the good shards on the next
    materialisation (eager automation does that).
    """
    from nyx.data.records import read_jsonl, write_jsonl
    from nyx.data.rejects import RejectLog
    from nyx.synth.chunking import chunk_documents, load_token_counter

    profile = profile_for(settings, config)
    paths = settings.paths
    counter = load_token_counter(profile.chunking.tokenizer or backbone_path(profile))
    per_shard: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for shard in context.partition_keys:
        try:
            src = shard_source(context, paths, shard, paths.documents / f"{shard}.jsonl", "raw_documents")
            rejects = RejectLog(stage="corpus_chunks")
            chunks, stats = chunk_documents(read_jsonl(src), profile.chunking, counter, rejects)
            write_jsonl(chunks, paths.chunks / f"{shard}.jsonl")
            rejects.write(paths.rejects / "corpus_chunks" / f"{shard}.jsonl")
        except Exception as e:  # noqa: BLE001 - one shard's failure is reported by name; the others go on
            failed[shard] = shard_failure(context, shard, e)
            continue
        per_shard[shard] = {
            "chunks": len(chunks),
            "documents": stats.get("documents", 0),
            "rejected": rejects.count,
            "reject_reasons": dg.MetadataValue.json(rejects.reasons()),
            "stats": dg.MetadataValue.json(jsonable(stats)),
        }
        context.log.info(f"{shard}: {len(chunks)} chunks, {stats}")
    return report_partitions(
        context,
        per_shard,
        failed,
        shared={"max_tokens": profile.chunking.max_tokens},
        totals=("chunks", "documents", "rejected"),
    )


@dg.asset_check(
    asset=corpus_chunks,
    blocking=True,
    description="unique ids; every line a readable chunk with text or an image; recounted tokens "
    "within budget and equal to the stored count; images resolve",
)
def corpus_chunks_valid(context: dg.AssetCheckExecutionContext, settings: NyxSettings) -> dg.AssetCheckResult:
    """Recounts every chunk with the chunker's own counter (the profile's `chunking.tokenizer`, else the
    backbone's): the text tokens of each stored text part, plus one per image, as `chunk_documents` counts them.
    A chunk fails when the recount exceeds `chunking.max_tokens` or differs from the `n_tokens` the chunker
    stored (the stored count is the chunker's own claim, so it is checked, not trusted). Every chunk is recounted,
    not a sample (`recounted` in the metadata): at about 0.2 ms per text part with a fast tokenizer, the paper's
    46,741 chunks take some 20 s of CPU."""
    import great_expectations.expectations as gxe

    from assets.lib.quality import gx_check
    from nyx.synth.chunking import load_token_counter

    profile = settings.load_profile()
    budget = profile.chunking.max_tokens
    counter = load_token_counter(profile.chunking.tokenizer or backbone_path(profile))
    df = _chunk_frame(settings.paths.chunks.glob("*.jsonl"), counter, budget)
    problems = ["over_budget", "count_mismatch", "images_unresolved", "unreadable"]
    return gx_check(
        df,
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            *(gxe.ExpectColumnValuesToBeNull(column=c) for c in problems),  # examples: "<chunk id>: <reason>"
        ],
        "corpus_chunks",
        extra_metadata={
            "token_budget": budget,
            "token_counter": counter.name,
            "recounted": int(df["recounted_tokens"].notna().sum()),
            "max_tokens_recounted": int(df["recounted_tokens"].max()) if df["recounted_tokens"].notna().any() else 0,
            "mean_tokens": float(df["recounted_tokens"].mean()) if df["recounted_tokens"].notna().any() else 0.0,
            **{f"{c}_chunks": int(df[c].notna().sum()) for c in problems},
        },
    )


def _chunk_frame(files, counter, budget: int):
    """One row per chunk: its id, stored and recounted token counts, and for each problem either None or
    ``"<chunk id>: <reason>"`` (so a failed expectation names the chunks and why). A line that is no readable
    record (bad JSON, no text and no image, ...) is a row with the ``unreadable`` problem."""
    import pandas as pd

    from nyx.data.records import image_resolves, iter_jsonl
    from nyx.data.rejects import RejectLog

    rows = []
    for f in sorted(files):
        rejects = RejectLog(stage="corpus_chunks_valid")
        for r in iter_jsonl(f, rejects):
            stored = r.extra.get("n_tokens")
            recount = sum(counter.count(p.text or "") for p in r.content if p.type == "text") + r.n_images
            missing = [i for i in r.images if not image_resolves(i)]
            rows.append(
                {
                    "id": r.id,
                    "stored_tokens": stored,
                    "recounted_tokens": recount,
                    "over_budget": f"{r.id}: {recount} tokens (text + 1 per image) > max_tokens {budget}"
                    if recount > budget
                    else None,
                    "count_mismatch": None
                    if type(stored) is int and stored == recount
                    else f"{r.id}: stored n_tokens {stored!r} != recounted {recount}",
                    "images_unresolved": f"{r.id}: image not found: {missing[0]}" if missing else None,
                }
            )
        for e in rejects.items:
            who = e["record_id"] or e["location"]
            rows.append({"id": who, "unreadable": f"{who} ({e['location']}): {e['reason']}"})
    return pd.DataFrame(
        rows,
        columns=[
            "id",
            "stored_tokens",
            "recounted_tokens",
            "over_budget",
            "count_mismatch",
            "images_unresolved",
            "unreadable",
        ],
    )
