"""NyxQA construction: ``corpus_chunks`` -> ``synthetic_qa`` -> ``nyxqa`` -> ``hard_negatives``, with blocking checks."""

import dagster as dg

from assets.common import ProfileConfig, backbone_path, generator_config, profile_for
from orchestration.partitions import SHARDS
from orchestration.resources import NyxSettings

SHARD_AUTOMATION = dg.AutomationCondition.eager()


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    partitions_def=SHARDS,
    deps=["raw_documents"],
    code_version="chunks-v1",
    automation_condition=SHARD_AUTOMATION,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def corpus_chunks(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
    """Documents of one shard cut into chunks of at most ``chunking.max_tokens`` tokens (an image counts as one).

    Images stay with the chunk in which they stand; chunks with too many images, or with an image that does not
    decode, are dropped and kept in ``data/rejects/corpus_chunks``. Ids are ``<document id>#c<ordinal>``.
    """
    from nyx.data.records import read_jsonl, write_jsonl
    from nyx.data.rejects import RejectLog
    from nyx.synth.chunking import chunk_documents, load_token_counter

    profile = profile_for(settings, config)
    paths = settings.paths
    counter = load_token_counter(profile.chunking.tokenizer or backbone_path(profile))
    totals: dict = {"chunks": 0, "documents": 0, "rejected": 0}
    for shard in context.partition_keys:
        src = paths.documents / f"{shard}.jsonl"
        if not src.exists():
            raise dg.Failure(f"shard {shard!r}: {src} is missing; materialise raw_documents first")
        rejects = RejectLog(stage="corpus_chunks")
        chunks, stats = chunk_documents(read_jsonl(src), profile.chunking, counter, rejects)
        write_jsonl(chunks, paths.chunks / f"{shard}.jsonl")
        rejects.write(paths.rejects / "corpus_chunks" / f"{shard}.jsonl")
        totals["chunks"] += len(chunks)
        totals["documents"] += stats.get("documents", 0)
        totals["rejected"] += rejects.count
        context.log.info(f"{shard}: {stats}")
    return dg.MaterializeResult(metadata={**totals, "max_tokens": profile.chunking.max_tokens,
                                          "reject_reasons": dg.MetadataValue.json(rejects.reasons()),
                                          "stats": dg.MetadataValue.json(_jsonable(stats))})


@dg.asset_check(asset=corpus_chunks, blocking=True,
                description="unique ids; text or an image in every chunk; token counts within budget; images resolve")
def corpus_chunks_valid(context: dg.AssetCheckExecutionContext, settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe

    from assets.quality import gx_check

    budget = settings.load_profile().chunking.max_tokens
    df = _chunk_frame(settings.paths.chunks.glob("*.jsonl"))
    return gx_check(df, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="non_empty", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, max_value=budget),
        gxe.ExpectColumnValuesToBeInSet(column="images_resolve", value_set=[True]),
    ], "corpus_chunks", extra_metadata={"token_budget": budget,
                                        "mean_tokens": float(df["n_tokens"].mean()) if len(df) else 0.0})


def _chunk_frame(files):
    import os

    import pandas as pd

    from nyx.data.records import iter_jsonl

    rows = []
    for f in sorted(files):
        for r in iter_jsonl(f):
            rows.append({"id": r.id, "n_tokens": int(r.extra.get("n_tokens", 0)), "n_images": r.n_images,
                         "non_empty": bool(r.text.strip()) or r.n_images > 0,
                         "images_resolve": all(i.startswith("data:") or os.path.isfile(i) for i in r.images)})
    return pd.DataFrame(rows, columns=["id", "n_tokens", "n_images", "non_empty", "images_resolve"])


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    partitions_def=SHARDS,
    deps=[corpus_chunks],
    code_version="qa-v1",
    automation_condition=SHARD_AUTOMATION,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def synthetic_qa(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
    """Question/answer pairs for a stratified sample of the chunks, from the profile's generator.

    The budget ``qa.sample_size`` is a total over the corpus, not per shard: the sample plan
    (``nyx.synth.qa.plan_sample``) is made from the ids and image-count groups of the chunks of *every*
    ``corpus_chunks`` shard present when this runs (``total_chunks``, ``shards_counted`` in the metadata), and each
    shard of this run keeps the chunks whose fixed hash key falls under its group's cutoff. Shards sampled with the
    plan of the same corpus together take exactly ``sample_size`` chunks. A shard materialised before other shards
    arrived used a smaller corpus and so a higher cutoff: re-materialising it later only drops chunks at the margin
    (its earlier selection contains the new one), which costs no generator call with a cached generator.

    ``openai`` (any OpenAI-compatible endpoint; responses cached under ``data/cache``, so a re-run pays for no call
    twice), ``local`` (transformers) or ``cloze`` (no model: an offline stand-in for a VLM, used by the sample).
    Output that does not parse is counted and dropped.
    """
    from nyx.data.records import iter_jsonl, read_jsonl, write_jsonl
    from nyx.data.rejects import RejectLog
    from nyx.synth.generators import make_generator
    from nyx.synth.qa import plan_sample, synthesize_qa

    profile = profile_for(settings, config)
    paths = settings.paths
    for shard in context.partition_keys:
        if not (paths.chunks / f"{shard}.jsonl").exists():
            raise dg.Failure(f"shard {shard!r}: {paths.chunks / f'{shard}.jsonl'} is missing; materialise corpus_chunks first")
    chunk_files = sorted(paths.chunks.glob("*.jsonl"))
    plan = plan_sample(((c.id, c.modality) for f in chunk_files for c in iter_jsonl(f)),
                       profile.qa.sample_size, seed=profile.qa.seed, stratify=profile.qa.stratify)
    gen_cfg = generator_config(profile, paths)
    generator = make_generator(gen_cfg)
    n_qa, n_sampled, all_stats = 0, 0, {}
    try:
        for shard in context.partition_keys:
            chunks = read_jsonl(paths.chunks / f"{shard}.jsonl")
            rejects = RejectLog(stage="synthetic_qa")
            qa, stats = synthesize_qa(chunks, generator, plan=plan, rejects=rejects)
            write_jsonl(qa, paths.synthetic_qa / f"{shard}.jsonl")
            rejects.write(paths.rejects / "synthetic_qa" / f"{shard}.jsonl")
            n_qa += len(qa)
            n_sampled += stats["sampled"]
            stats.pop("sample_plan", None)  # the same for every shard: reported once below
            all_stats[shard] = _jsonable(stats)
    finally:
        generator.close()
    return dg.MaterializeResult(metadata={"qa_pairs": n_qa, "generator": gen_cfg.kind,
                                          "sample_size": profile.qa.sample_size if profile.qa.sample_size else "all",
                                          "total_chunks": plan.population, "sampled_chunks": n_sampled,
                                          "shards_counted": dg.MetadataValue.json([f.stem for f in chunk_files]),
                                          "sample_plan": dg.MetadataValue.json(_jsonable(plan.describe())),
                                          "generator_info": dg.MetadataValue.json(_jsonable(generator.describe())),
                                          "stats": dg.MetadataValue.json(all_stats)})


@dg.asset_check(asset=synthetic_qa, blocking=True, description="every QA pair has a question, an answer and a positive")
def synthetic_qa_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.quality import gx_check
    from nyx.data.records import iter_jsonl

    rows = [{"id": q.id, "question": (q.extra.get("question") or "").strip() or None,
             "answer": (str(q.extra.get("answer") or "")).strip() or None, "positive_id": q.extra.get("positive_id")}
            for f in sorted(settings.paths.synthetic_qa.glob("*.jsonl")) for q in iter_jsonl(f)]
    df = pd.DataFrame(rows, columns=["id", "question", "answer", "positive_id"])
    return gx_check(df, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="question"),
        gxe.ExpectColumnValuesToNotBeNull(column="answer"),
        gxe.ExpectColumnValuesToNotBeNull(column="positive_id"),
    ], "synthetic_qa")


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    deps=[synthetic_qa, corpus_chunks],
    code_version="nyxqa-v1",
    automation_condition=dg.AutomationCondition.eager(),
)
def nyxqa(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
    """The NyxQA benchmark: filtered questions with 4 shuffled options, split by the positive's image count into
    train/dev/test, exported as BEIR folders (``data/nyxqa/<split>/{corpus,queries}.jsonl, qrels.tsv``)."""
    from nyx.data.records import iter_jsonl, write_jsonl
    from nyx.data.rejects import RejectLog
    from nyx.synth.generators import make_generator
    from nyx.synth.nyxqa import build_nyxqa, export_beir

    profile = profile_for(settings, config)
    paths = settings.paths
    chunks = [c for f in sorted(paths.chunks.glob("*.jsonl")) for c in iter_jsonl(f)]
    qa = [q for f in sorted(paths.synthetic_qa.glob("*.jsonl")) for q in iter_jsonl(f)]
    if not qa:
        raise dg.Failure("no synthetic QA pairs: materialise synthetic_qa first")
    rejects = RejectLog(stage="nyxqa")
    generator = make_generator(generator_config(profile, paths))
    try:
        ds, stats = build_nyxqa(qa, chunks, generator, profile.nyxqa, rejects)
    finally:
        generator.close()
    export_beir(ds, paths.nyxqa)
    write_jsonl(ds.queries, paths.nyxqa / "queries_all.jsonl")
    rejects.write(paths.rejects / "nyxqa.jsonl")
    sizes = {s: len(ds.split(s)) for s in ("train", "dev", "test")}
    return dg.MaterializeResult(metadata={
        "corpus_chunks": len(chunks), "questions": len(ds.queries), **{f"{k}_questions": v for k, v in sizes.items()},
        "filtered": rejects.count, "filter_reasons": dg.MetadataValue.json(rejects.reasons()), "stats": dg.MetadataValue.json(_jsonable(stats)),
        "beir_dir": dg.MetadataValue.path(str(paths.nyxqa)),
    })


@dg.asset_check(asset=nyxqa, blocking=True,
                description="positives exist; 4 distinct options with exactly one correct; no train/test leakage")
def nyxqa_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.quality import gx_check
    from nyx.data.records import iter_jsonl

    paths = settings.paths
    corpus_ids = {c.id for f in sorted(paths.chunks.glob("*.jsonl")) for c in iter_jsonl(f)}
    queries = list(iter_jsonl(paths.nyxqa / "queries_all.jsonl"))
    rows = []
    for q in queries:
        choices = q.extra.get("choices") or []
        answer = q.extra.get("answer")
        idx = q.extra.get("correct_index")
        rows.append({
            "id": q.id, "split": q.extra.get("split"),
            "positive_exists": q.extra.get("positive_id") in corpus_ids,
            "n_choices": len(choices), "distinct_choices": len({str(c).strip().lower() for c in choices}),
            "n_correct": sum(1 for c in choices if str(c).strip().lower() == str(answer).strip().lower()),
            "index_points_to_answer": isinstance(idx, int) and 0 <= idx < len(choices) and choices[idx] == answer,
            "question_key": " ".join(str(q.extra.get("question", "")).lower().split()),
            "positive_id": q.extra.get("positive_id"),
        })
    df = pd.DataFrame(rows)
    train = df[df.split == "train"] if len(df) else df
    held = df[df.split.isin(["dev", "test"])] if len(df) else df
    leaked_pos = set(train.get("positive_id", [])) & set(held.get("positive_id", []))
    leaked_q = set(train.get("question_key", [])) & set(held.get("question_key", []))
    df["leak_free"] = [not (r.split != "train" and (r.positive_id in leaked_pos or r.question_key in leaked_q))
                       for r in df.itertuples()] if len(df) else []
    return gx_check(df, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="positive_exists", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="n_choices", value_set=[4]),
        gxe.ExpectColumnValuesToBeInSet(column="distinct_choices", value_set=[4]),
        gxe.ExpectColumnValuesToBeInSet(column="n_correct", value_set=[1]),
        gxe.ExpectColumnValuesToBeInSet(column="index_points_to_answer", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="leak_free", value_set=[True]),
    ], "nyxqa", extra_metadata={"leaked_positives": len(leaked_pos), "leaked_questions": len(leaked_q)})


@dg.asset(
    group_name="data",
    kinds={"python", "faiss", "jsonl"},
    deps=[nyxqa],
    code_version="negatives-v1",
    automation_condition=dg.AutomationCondition.eager(),
)
def hard_negatives(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
    """Hard negatives for every train question: ranks ``skip+1..k`` of the miner (default MiniLM), minus the positive
    and its near-duplicates, ``n`` kept per question (paper: ranks 11-20, 5 kept)."""
    import json

    from nyx.data.beir import load_beir
    from nyx.retrieval import create_retriever, load_retriever
    from nyx.synth.mining import mine_hard_negatives
    from nyx.utils.io import atomic_write

    profile = profile_for(settings, config)
    paths = settings.paths
    train = load_beir(paths.nyxqa / "train")
    spec = profile.miner.retriever
    retriever = create_retriever(spec) if spec in ("minilm", "bm25") else load_retriever(spec)
    records, stats = mine_hard_negatives(list(train.queries.values()), list(train.corpus.values()), retriever,
                                         cfg=profile.miner.mining,
                                         index=spec in ("minilm", "bm25"))
    out = paths.hard_negatives / "train.jsonl"
    with atomic_write(out) as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return dg.MaterializeResult(metadata={"queries": len(records), "miner": spec,
                                          "with_negatives": sum(1 for r in records if r["negative_ids"]),
                                          "stats": dg.MetadataValue.json(_jsonable(stats)),
                                          "path": dg.MetadataValue.path(str(out))})


@dg.asset_check(asset=hard_negatives, blocking=True, description="negatives never equal the positive; n per query")
def hard_negatives_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import json

    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.quality import gx_check

    lines = (settings.paths.hard_negatives / "train.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines if x.strip()]
    df = pd.DataFrame([{"query_id": r["query_id"], "n_negatives": len(r["negative_ids"]),
                        "positive_not_negative": r["positive_id"] not in r["negative_ids"],
                        "distinct": len(set(r["negative_ids"])) == len(r["negative_ids"])} for r in recs],
                      columns=["query_id", "n_negatives", "positive_not_negative", "distinct"])
    return gx_check(df, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="query_id"),
        gxe.ExpectColumnValuesToBeInSet(column="positive_not_negative", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="distinct", value_set=[True]),
        # most train questions must get at least one negative (a few may not, on tiny corpora)
        gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(column="query_id", min_value=1.0),
        gxe.ExpectColumnMeanToBeBetween(column="n_negatives", min_value=1.0),
    ], "hard_negatives", extra_metadata={"mean_negatives": float(df["n_negatives"].mean()) if len(df) else 0.0})


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj, default=str))
