"""``hard_negatives``: hard negatives mined for every NyxQA train question, with the data version naming the miner,
and its blocking check."""

import dagster as dg

from assets.lib.metadata import jsonable
from assets.lib.profile import ProfileConfig, profile_for
from orchestration.resources import MlflowResource, NyxSettings


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
            "miner_identity": dg.MetadataValue.json(jsonable(miner.identity)),
            "miner_fingerprint": miner.fingerprint(),
            "data_version": version,
            "with_negatives": sum(1 for r in records if r["negative_ids"]),
            "stats": dg.MetadataValue.json(jsonable(stats)),
            "path": dg.MetadataValue.path(str(out)),
        },
    )


def _negatives_data_version(identity: dict, mining, train_dir, out) -> str:
    """`hard_negatives`' data version: a hash of the miner's identity, the mining settings, the NyxQA train files
    it mined from and the file it wrote (a new miner changes it even where it happens to mine the same negatives)."""
    import hashlib
    import json
    from pathlib import Path

    from nyx.utils.io import file_sha256

    train_files = {p.name: file_sha256(p) for p in sorted(Path(train_dir).iterdir()) if p.is_file()}
    payload = {
        "miner": identity,
        "mining": mining.model_dump(),
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

    from assets.lib.quality import gx_check
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
