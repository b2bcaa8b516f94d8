"""``synthetic_qa``: question/answer pairs for a corpus-wide stratified sample of the chunks, per shard, with its
blocking check."""

import dagster as dg

from assets.lib.metadata import jsonable
from assets.lib.profile import ProfileConfig, generator_config, profile_for
from assets.lib.shards import SHARD_AUTOMATION, ShardUnavailable, report_partitions, shard_failure, shard_source
from orchestration.partitions import SHARDS
from orchestration.resources import NyxSettings


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    partitions_def=SHARDS,
    deps=["corpus_chunks"],
    code_version="qa-v1",
    automation_condition=SHARD_AUTOMATION,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def synthetic_qa(
    context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig
) -> dg.MaterializeResult:
    """Question/answer pairs for a stratified sample of the chunks, from the profile's generator.

    The budget `qa.sample_size` is a total over the corpus, not per shard: the sample plan
    (`nyx.synth.qa.plan_sample`) is made from the ids and image-count groups of the chunks of *every*
    `corpus_chunks` shard present when this runs (`total_chunks`, `shards_counted` in the metadata), and each
    shard of this run keeps the chunks whose fixed hash key falls under its group's cutoff. Shards sampled with the
    plan of the same corpus together take exactly `sample_size` chunks. A shard materialised before other shards
    arrived used a smaller corpus, so usually higher cutoffs: re-materialising it later changes its selection only
    at the margin (per image-count group the new selection contains, or is contained in, the old one; usually it
    drops chunks, which costs no generator call with a cached generator). Until then the shards together may hold
    somewhat more than the budget: compare `total_chunks` across the partitions' materialisations.

    `openai` (any OpenAI-compatible endpoint; responses cached under `data/cache`, so a re-run pays for no call
    twice), `local` (transformers) or `cloze` (no model: an offline stand-in for a VLM, used by the sample).
    Output that does not parse is counted and dropped.

    Several shards in one run (a backfill): each partition's materialisation carries its own shard's `qa_pairs`,
    `sampled_chunks`, `rejected`, `reject_reasons` and `stats` (the sample plan and generator, the same for
    all, beside them);
    a shard without chunks (rejected at ingestion, or not chunked yet) or whose generation fails does not stop
    the others, and only its partition fails, as for `corpus_chunks`.
    """
    from nyx.data.records import iter_jsonl, read_jsonl, write_jsonl
    from nyx.data.rejects import RejectLog
    from nyx.synth.generators import make_generator
    from nyx.synth.qa import plan_sample, synthesize_qa

    profile = profile_for(settings, config)
    paths = settings.paths
    per_shard: dict[str, dict] = {}
    failed: dict[str, str] = {}
    sources = {}
    for shard in context.partition_keys:
        try:
            sources[shard] = shard_source(context, paths, shard, paths.chunks / f"{shard}.jsonl", "corpus_chunks")
        except ShardUnavailable as e:
            failed[shard] = shard_failure(context, shard, e)
    if not sources:  # no shard to sample: fail naming each, before any plan or generator (a model to load)
        return report_partitions(context, per_shard, failed, {}, totals=())
    chunk_files = sorted(paths.chunks.glob("*.jsonl"))
    plan = plan_sample(
        ((c.id, c.modality) for f in chunk_files for c in iter_jsonl(f)),
        profile.qa.sample_size,
        seed=profile.qa.seed,
        stratify=profile.qa.stratify,
    )
    gen_cfg = generator_config(profile, paths)
    generator = make_generator(gen_cfg)
    try:
        for shard, src in sources.items():
            try:
                rejects = RejectLog(stage="synthetic_qa")
                qa, stats = synthesize_qa(read_jsonl(src), generator, plan=plan, rejects=rejects)
                write_jsonl(qa, paths.synthetic_qa / f"{shard}.jsonl")
                rejects.write(paths.rejects / "synthetic_qa" / f"{shard}.jsonl")
            except Exception as e:  # noqa: BLE001 - one shard's failure is reported by name; the others go on
                failed[shard] = shard_failure(context, shard, e)
                continue
            stats.pop("sample_plan", None)  # the same for every shard: in the shared metadata
            per_shard[shard] = {
                "qa_pairs": len(qa),
                "sampled_chunks": stats["sampled"],
                "rejected": rejects.count,
                "reject_reasons": dg.MetadataValue.json(rejects.reasons()),
                "stats": dg.MetadataValue.json(jsonable(stats)),
            }
            context.log.info(f"{shard}: {len(qa)} QA pairs from {stats['sampled']} sampled chunks")
        generator_info = jsonable(generator.describe())
    finally:
        generator.close()
    shared = {
        "generator": gen_cfg.kind,
        "sample_size": profile.qa.sample_size if profile.qa.sample_size else "all",
        "total_chunks": plan.population,
        "shards_counted": dg.MetadataValue.json([f.stem for f in chunk_files]),
        "sample_plan": dg.MetadataValue.json(jsonable(plan.describe())),
        "generator_info": dg.MetadataValue.json(generator_info),
    }
    return report_partitions(context, per_shard, failed, shared, totals=("qa_pairs", "sampled_chunks", "rejected"))


@dg.asset_check(asset=synthetic_qa, blocking=True, description="every QA pair has a question, an answer and a positive")
def synthetic_qa_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.lib.quality import gx_check
    from nyx.data.records import iter_jsonl

    rows = [
        {
            "id": q.id,
            "question": (q.extra.get("question") or "").strip() or None,
            "answer": (str(q.extra.get("answer") or "")).strip() or None,
            "positive_id": q.extra.get("positive_id"),
        }
        for f in sorted(settings.paths.synthetic_qa.glob("*.jsonl"))
        for q in iter_jsonl(f)
    ]
    df = pd.DataFrame(rows, columns=["id", "question", "answer", "positive_id"])
    return gx_check(
        df,
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="question"),
            gxe.ExpectColumnValuesToNotBeNull(column="answer"),
            gxe.ExpectColumnValuesToNotBeNull(column="positive_id"),
        ],
        "synthetic_qa",
    )
