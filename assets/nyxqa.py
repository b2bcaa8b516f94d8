"""NyxQA construction: ``corpus_chunks`` -> ``synthetic_qa`` -> ``nyxqa`` -> ``hard_negatives``, with blocking
checks."""

import dagster as dg

from assets.common import ProfileConfig, backbone_path, generator_config, profile_for
from orchestration.partitions import SHARDS
from orchestration.resources import MlflowResource, NyxSettings

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
            src = _shard_source(context, paths, shard, paths.documents / f"{shard}.jsonl", "raw_documents")
            rejects = RejectLog(stage="corpus_chunks")
            chunks, stats = chunk_documents(read_jsonl(src), profile.chunking, counter, rejects)
            write_jsonl(chunks, paths.chunks / f"{shard}.jsonl")
            rejects.write(paths.rejects / "corpus_chunks" / f"{shard}.jsonl")
        except Exception as e:  # noqa: BLE001 - one shard's failure is reported by name; the others go on
            failed[shard] = _shard_failure(context, shard, e)
            continue
        per_shard[shard] = {
            "chunks": len(chunks),
            "documents": stats.get("documents", 0),
            "rejected": rejects.count,
            "reject_reasons": dg.MetadataValue.json(rejects.reasons()),
            "stats": dg.MetadataValue.json(_jsonable(stats)),
        }
        context.log.info(f"{shard}: {len(chunks)} chunks, {stats}")
    return _report_partitions(
        context,
        per_shard,
        failed,
        shared={"max_tokens": profile.chunking.max_tokens},
        totals=("chunks", "documents", "rejected"),
    )


class _ShardUnavailable(Exception):
    """A shard's input is not there (rejected at ingestion, or not made yet): the message says why."""


def _shard_source(context: dg.AssetExecutionContext, paths, shard: str, src, upstream: str):
    """``src``, the shard's input file, or :class:`_ShardUnavailable` saying why it is not there. A shard rejected
    at ingestion also has anything left of an earlier version of it withdrawn (``raw_documents`` normally has done
    so already), so that nothing downstream reads it."""
    from nyx.data.ingest import shard_rejection, withdraw_shard_outputs

    if (rejection := shard_rejection(paths.documents, shard)) is not None:
        for f in withdraw_shard_outputs(shard, [paths.chunks, paths.synthetic_qa]):
            context.log.warning(f"shard {shard}: withdrew {f}, made from an earlier version of the shard")
        raise _ShardUnavailable(rejection)  # a truncated/corrupt raw file: this partition fails, not the others
    if not src.exists():
        raise _ShardUnavailable(f"shard {shard!r}: {src} is missing; materialise {upstream} first")
    return src


def _shard_failure(context: dg.AssetExecutionContext, shard: str, e: Exception) -> str:
    """Log why ``shard`` failed (with the traceback for an unexpected error) and return the reason."""
    import traceback

    if isinstance(e, (_ShardUnavailable, dg.Failure)):
        reason = str(e.description if isinstance(e, dg.Failure) else e)
        context.log.error(f"shard {shard} failed: {reason}")
    else:
        reason = f"shard {shard!r}: {type(e).__name__}: {e}"
        context.log.error(f"shard {shard} failed: {reason}\n{traceback.format_exc()}")
    return reason


def _report_partitions(
    context: dg.AssetExecutionContext,
    per_shard: dict[str, dict],
    failed: dict[str, str],
    shared: dict,
    totals: tuple[str, ...],
) -> dg.MaterializeResult:
    """Each partition of the run gets its own shard's metadata (``per_shard``) plus ``shared``; the totals over
    the run's shards go to the step log. All shards good: one ``MaterializeResult`` with partition-scoped metadata
    (the steps after this one run). Any shard in ``failed``: the good ones are logged as materialisations of their
    own partitions, then a ``Failure`` names each failed shard and why, so that only those partitions fail."""
    if len(context.partition_keys) > 1:
        context.log.info(
            f"{len(per_shard)} of {len(context.partition_keys)} shards done; totals: "
            + ", ".join(f"{k}={sum(m.get(k, 0) for m in per_shard.values())}" for k in totals)
        )
    if not failed:
        for shard, meta in per_shard.items():
            context.add_asset_metadata(meta, partition_key=shard)
        return dg.MaterializeResult(metadata=shared)
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key)
    for shard, meta in per_shard.items():
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=shard,
                metadata={**shared, **meta},
                tags={"dagster/code_version": code_version} if code_version else None,
            )
        )
    raise dg.Failure(
        description=(
            f"{len(failed)} of {len(context.partition_keys)} shards failed: "
            + "; ".join(failed.values())
            + (f" (materialised: {', '.join(per_shard)})" if per_shard else "")
        ),
        metadata={
            "failed_shards": dg.MetadataValue.json(failed),
            "materialized_shards": dg.MetadataValue.json(list(per_shard)),
        },
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

    from assets.quality import gx_check
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
    import os

    import pandas as pd

    from nyx.data.records import iter_jsonl
    from nyx.data.rejects import RejectLog

    rows = []
    for f in sorted(files):
        rejects = RejectLog(stage="corpus_chunks_valid")
        for r in iter_jsonl(f, rejects):
            stored = r.extra.get("n_tokens")
            recount = sum(counter.count(p.text or "") for p in r.content if p.type == "text") + r.n_images
            missing = [i for i in r.images if not (i.startswith("data:") or os.path.isfile(i))]
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
            sources[shard] = _shard_source(context, paths, shard, paths.chunks / f"{shard}.jsonl", "corpus_chunks")
        except _ShardUnavailable as e:
            failed[shard] = _shard_failure(context, shard, e)
    if not sources:  # no shard to sample: fail naming each, before any plan or generator (a model to load)
        return _report_partitions(context, per_shard, failed, {}, totals=())
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
                failed[shard] = _shard_failure(context, shard, e)
                continue
            stats.pop("sample_plan", None)  # the same for every shard: in the shared metadata
            per_shard[shard] = {
                "qa_pairs": len(qa),
                "sampled_chunks": stats["sampled"],
                "rejected": rejects.count,
                "reject_reasons": dg.MetadataValue.json(rejects.reasons()),
                "stats": dg.MetadataValue.json(_jsonable(stats)),
            }
            context.log.info(f"{shard}: {len(qa)} QA pairs from {stats['sampled']} sampled chunks")
        generator_info = _jsonable(generator.describe())
    finally:
        generator.close()
    shared = {
        "generator": gen_cfg.kind,
        "sample_size": profile.qa.sample_size if profile.qa.sample_size else "all",
        "total_chunks": plan.population,
        "shards_counted": dg.MetadataValue.json([f.stem for f in chunk_files]),
        "sample_plan": dg.MetadataValue.json(_jsonable(plan.describe())),
        "generator_info": dg.MetadataValue.json(generator_info),
    }
    return _report_partitions(context, per_shard, failed, shared, totals=("qa_pairs", "sampled_chunks", "rejected"))


@dg.asset_check(asset=synthetic_qa, blocking=True, description="every QA pair has a question, an answer and a positive")
def synthetic_qa_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.quality import gx_check
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


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    deps=["synthetic_qa", "corpus_chunks"],
    code_version="nyxqa-v1",
    automation_condition=dg.AutomationCondition.eager(),
)
def nyxqa(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
    """The NyxQA benchmark: filtered questions with 4 shuffled options, split by the positive's image count into
    train/dev/test, exported as BEIR folders (`data/nyxqa/<split>/{corpus,queries}.jsonl, qrels.tsv`)."""
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
    return dg.MaterializeResult(
        metadata={
            "corpus_chunks": len(chunks),
            "questions": len(ds.queries),
            **{f"{k}_questions": v for k, v in sizes.items()},
            "filtered": rejects.count,
            "filter_reasons": dg.MetadataValue.json(rejects.reasons()),
            "stats": dg.MetadataValue.json(_jsonable(stats)),
            "beir_dir": dg.MetadataValue.path(str(paths.nyxqa)),
        }
    )


@dg.asset_check(
    asset=nyxqa,
    blocking=True,
    description="positives exist; 4 distinct options with exactly one correct; no train/test leakage",
)
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
        rows.append(
            {
                "id": q.id,
                "split": q.extra.get("split"),
                "positive_exists": q.extra.get("positive_id") in corpus_ids,
                "n_choices": len(choices),
                "distinct_choices": len({str(c).strip().lower() for c in choices}),
                "n_correct": sum(1 for c in choices if str(c).strip().lower() == str(answer).strip().lower()),
                "index_points_to_answer": isinstance(idx, int) and 0 <= idx < len(choices) and choices[idx] == answer,
                "question_key": " ".join(str(q.extra.get("question", "")).lower().split()),
                "positive_id": q.extra.get("positive_id"),
            }
        )
    df = pd.DataFrame(rows)
    train = df[df.split == "train"] if len(df) else df
    held = df[df.split.isin(["dev", "test"])] if len(df) else df
    leaked_pos = set(train.get("positive_id", [])) & set(held.get("positive_id", []))
    leaked_q = set(train.get("question_key", [])) & set(held.get("question_key", []))
    df["leak_free"] = (
        [
            not (r.split != "train" and (r.positive_id in leaked_pos or r.question_key in leaked_q))
            for r in df.itertuples()
        ]
        if len(df)
        else []
    )
    return gx_check(
        df,
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToBeInSet(column="positive_exists", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="n_choices", value_set=[4]),
            gxe.ExpectColumnValuesToBeInSet(column="distinct_choices", value_set=[4]),
            gxe.ExpectColumnValuesToBeInSet(column="n_correct", value_set=[1]),
            gxe.ExpectColumnValuesToBeInSet(column="index_points_to_answer", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="leak_free", value_set=[True]),
        ],
        "nyxqa",
        extra_metadata={"leaked_positives": len(leaked_pos), "leaked_questions": len(leaked_q)},
    )


@dg.asset(
    group_name="data",
    kinds={"python", "faiss", "jsonl"},
    deps=["nyxqa"],
    code_version="negatives-v2",
    automation_condition=dg.AutomationCondition.eager(),
)
def hard_negatives(
    context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Hard negatives for every train question: ranks `skip+1..k` of the profile's miner, minus the positive and its
    near-duplicates, `n` kept per question (paper: ranks 11-20 of mmE5, 5 kept).

    The miner (`miner.retriever` / `miner.model`: MiniLM, BM25, mmE5, a Nyx model or retriever folder, or a
    registered version such as `models:/nyx-retriever@champion`) indexes the train corpus and searches it with the
    train questions. Its identity (kind, model id, revision, weights of local folders, registered version) is in
    the metadata (`miner`, `miner_identity`) and, with the mining settings and the NyxQA train files, in the data
    version: a different miner is a different `hard_negatives`, and what reads it (Stage 1) re-runs."""
    import json

    from nyx.data.beir import load_beir
    from nyx.synth.mining import mine_hard_negatives, resolve_miner
    from nyx.utils.io import atomic_write

    profile = profile_for(settings, config)
    paths = settings.paths
    train = load_beir(paths.nyxqa / "train")
    ms = profile.miner
    device = None if profile.device == "auto" else profile.device
    try:
        miner = resolve_miner(
            ms.retriever,
            ms.model,
            device=device,
            batch_size=ms.batch_size,
            tracking_uri=mlflow.tracking_uri,
            download_dir=paths.work / "miners",
            log=context.log.info,
        )
    except (ValueError, OSError) as e:
        raise dg.Failure(f"cannot load the miner {ms.retriever!r} (model {ms.model!r}): {e}") from e
    records, stats = mine_hard_negatives(
        list(train.queries.values()), list(train.corpus.values()), miner, cfg=ms.mining, index=True
    )
    out = paths.hard_negatives / "train.jsonl"
    with atomic_write(out) as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    version = _negatives_data_version(miner.identity, ms.mining, paths.nyxqa / "train", out)
    context.log.info(f"mined {stats['negatives']} negatives for {len(records)} questions with {miner.label}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "queries": len(records),
            "miner": miner.label,
            "miner_identity": dg.MetadataValue.json(_jsonable(miner.identity)),
            "miner_fingerprint": miner.fingerprint(),
            "data_version": version,
            "with_negatives": sum(1 for r in records if r["negative_ids"]),
            "stats": dg.MetadataValue.json(_jsonable(stats)),
            "path": dg.MetadataValue.path(str(out)),
        },
    )


def _negatives_data_version(identity: dict, mining, train_dir, out) -> str:
    """`hard_negatives`' data version: a hash of the miner's identity, the mining settings, the NyxQA train files
    it mined from and the file it wrote (a new miner changes it even where it happens to mine the same negatives)."""
    import dataclasses
    import hashlib
    import json
    from pathlib import Path

    from nyx.utils.io import file_sha256

    train_files = {p.name: file_sha256(p) for p in sorted(Path(train_dir).iterdir()) if p.is_file()}
    payload = {
        "miner": identity,
        "mining": dataclasses.asdict(mining),
        "train": train_files,
        "negatives": file_sha256(out),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


#: Share of train questions that must get at least one mined negative. The miner keeps ranks ``skip+1..k`` (paper:
#: 11-20) minus the positive and its near-duplicates, so a question ends up with none only when its ranking is that
#: short or those ranks are all duplicates of its positive: on any corpus larger than ``k`` chunks that is rare,
#: and a share under one half means the miner (or the index it searched) is broken, not that the corpus is small.
MIN_SHARE_WITH_NEGATIVES = 0.5


@dg.asset_check(
    asset=hard_negatives,
    blocking=True,
    description=f">= {MIN_SHARE_WITH_NEGATIVES:.0%} of train questions have a negative; negatives "
    "are known train-corpus chunks, never the positive or a qrels document, distinct, "
    "at most miner.mining.n",
)
def hard_negatives_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    """Checks the mined file against the NyxQA train split it was mined for (`nyxqa/train`): one record per train
    question at most, its `positive_id` the question's own, every negative a chunk of the train corpus that is not
    the positive nor any document relevant to the question in `qrels.tsv`, no negative twice, at most
    `miner.mining.n` of them (the profile as the `settings` resource sees it), and at least
    `MIN_SHARE_WITH_NEGATIVES` of the train questions with one negative or more."""
    import json

    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.quality import gx_check
    from nyx.data.beir import load_beir

    paths = settings.paths
    n_max = settings.load_profile().miner.mining.n
    train = load_beir(paths.nyxqa / "train")
    src = paths.hard_negatives / "train.jsonl"
    recs = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    seen: dict[str, int] = {}
    rows = []
    for r in recs:
        qid, negs = r.get("query_id"), list(r.get("negative_ids") or [])
        seen[qid] = seen.get(qid, 0) + 1
        q = train.queries.get(qid)
        relevant = set(train.qrels.get(qid, {})) | ({q.extra.get("positive_id")} if q is not None else set())
        unknown = [n for n in negs if n not in train.corpus]
        bad_rel = [n for n in negs if n in relevant or n == r.get("positive_id")]
        dups = sorted({n for n in negs if negs.count(n) > 1})
        rows.append(
            {
                "query_id": qid,
                "has_negative": float(bool(negs)) if q is not None and seen[qid] == 1 else None,
                "unknown_query": None if q is not None else f"{qid}: not a question of nyxqa/train",
                "duplicate_record": None if seen[qid] == 1 else f"{qid}: record {seen[qid]} for this question",
                "positive_mismatch": None
                if q is None or r.get("positive_id") == q.extra.get("positive_id")
                else f"{qid}: positive_id {r.get('positive_id')!r} != the question's {q.extra.get('positive_id')!r}",
                "negative_not_in_corpus": f"{qid}: negative {unknown[0]!r} is not in the train corpus"
                if unknown
                else None,
                "negative_is_relevant": f"{qid}: negative {bad_rel[0]!r} is the positive or relevant in qrels"
                if bad_rel
                else None,
                "duplicate_negative": f"{qid}: negative {dups[0]!r} listed twice" if dups else None,
                "too_many_negatives": f"{qid}: {len(negs)} negatives > miner.mining.n {n_max}"
                if len(negs) > n_max
                else None,
            }
        )
    missing = [qid for qid in train.queries if qid not in seen]  # train questions the miner wrote nothing for
    rows.extend({"query_id": qid, "has_negative": 0.0} for qid in missing)
    problems = [
        "unknown_query",
        "duplicate_record",
        "positive_mismatch",
        "negative_not_in_corpus",
        "negative_is_relevant",
        "duplicate_negative",
        "too_many_negatives",
    ]
    df = pd.DataFrame(rows, columns=["query_id", "has_negative", *problems])
    share = float(df["has_negative"].mean()) if df["has_negative"].notna().any() else 0.0
    return gx_check(
        df,
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            # one value per train question (null on records of unknown questions and on repeated records)
            gxe.ExpectColumnMeanToBeBetween(column="has_negative", min_value=MIN_SHARE_WITH_NEGATIVES),
            *(gxe.ExpectColumnValuesToBeNull(column=c) for c in problems),  # examples: "<query id>: <reason>"
        ],
        "hard_negatives",
        extra_metadata={
            "train_questions": len(train.queries),
            "records": len(recs),
            "questions_without_record": len(missing),
            "share_with_negatives": share,
            "min_share_with_negatives": MIN_SHARE_WITH_NEGATIVES,
            "max_negatives": n_max,
            "mean_negatives": float(sum(len(r.get("negative_ids") or []) for r in recs) / len(recs)) if recs else 0.0,
            **{f"{c}_records": int(df[c].notna().sum()) for c in problems},
        },
    )


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj, default=str))
