"""``feedback_preferences``: VLM-feedback preference triples for Stage 2."""

import json

import dagster as dg

from assets.lib.profile import ProfileConfig, make_reader, profile_for
from orchestration.resources import NyxSettings


@dg.asset(
    group_name="feedback",
    kinds={"python", "jsonl"},
    deps=["stage1_index", "nyxqa"],
    code_version="feedback-v1",
    automation_condition=dg.AutomationCondition.eager(),
)
def feedback_preferences(
    context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig
) -> dg.MaterializeResult:
    """For each train question, the Stage-1 model retrieves the top-K; a reader answers from each sliding window of
    retrieved documents; the document of the first window reaching the best score becomes the positive, other
    retrieved documents (not answering correctly) the negatives. Queries with no correct window are dropped and
    counted. Reader answers are cached under `data/cache/feedback`, so collection is incremental and resumable:
    re-materialising after new questions arrive only pays for the new ones. Retrieval searches the Stage-1 corpus
    index (`stage1_index`), which must belong to the finished Stage-1 version and the current corpus."""
    from assets.training import finished_stage
    from nyx.data.beir import load_beir
    from nyx.data.rejects import RejectLog
    from nyx.feedback.preferences import collect_feedback
    from nyx.feedback.triples import write_triples
    from nyx.index import IndexMismatchError
    from nyx.index.corpus import open_corpus_index
    from nyx.utils.io import atomic_write

    profile = profile_for(settings, config)
    paths = settings.paths
    train = load_beir(paths.nyxqa / profile.stage2.feedback_split)
    state = finished_stage(settings, "stage1")
    try:  # the Stage-1 corpus index (stage1_index): the corpus is not encoded again here
        retriever = open_corpus_index(
            paths.indexes / "stage1", model_version=state.model_version, corpus=list(train.corpus.values())
        )
    except (IndexMismatchError, FileNotFoundError) as e:
        raise dg.Failure(f"feedback needs the Stage-1 corpus index: {e}") from None
    rejects = RejectLog(stage="feedback_preferences")
    triples, stats = collect_feedback(
        list(train.queries.values()),
        list(train.corpus.values()),
        retriever,
        make_reader(profile, paths),
        profile.feedback,
        cache_dir=paths.feedback_cache,
        qrels=train.qrels,
        rejects=rejects,
    )
    write_triples(triples, paths.feedback / "triples.jsonl")
    base = paths.feedback
    with atomic_write(base / "train_triples.jsonl") as f:  # full records: a `triples` training source
        for t in triples:
            f.write(
                json.dumps(
                    {
                        "query": train.queries[t.query_id].to_json(base),
                        "positive": train.corpus[t.positive_id].to_json(base),
                        "negatives": [train.corpus[n].to_json(base) for n in t.negative_ids],
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    rejects.write(paths.rejects / "feedback_preferences.jsonl")
    s = stats.to_dict()
    return dg.MaterializeResult(
        metadata={
            "queries": len(train.queries),
            "kept": len(triples),
            "dropped_no_correct_window": len(train.queries) - len(triples),
            "kept_share": float(s.get("kept_share", 0.0)),
            "stats": dg.MetadataValue.json(json.loads(json.dumps(s, default=str))),
            "reader": profile.reader.kind,
            "top_k": profile.feedback.top_k,
            "window": profile.feedback.window_size,
        }
    )


@dg.asset_check(
    asset=feedback_preferences,
    blocking=True,
    description="ids known in the feedback split; training file matches triples.jsonl; positive never a "
    "negative in the training file; negatives not gold; positive_rank <= top_k",
)
def feedback_preferences_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    """Checks both written files against data the triples were not computed from, line by line:

    - every query id is a question of the NyxQA split used for feedback (`stage2.feedback_split`), every positive
      and negative id a chunk of that split's corpus, no negative a gold (qrels) document of its query when
      `feedback.exclude_gold_negatives`;
    - the training file `train_triples.jsonl` (what Stage 2 trains on) has the same number of lines as
      `triples.jsonl` and, line by line, the same query, positive and negative ids; in it the positive record's id
      is never one of its negative records' ids;
    - `1 <= positive_rank <= feedback.top_k` and at most `feedback.max_negatives` negatives; one triple per query.
    """
    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.lib.quality import gx_check
    from nyx.data.beir import load_beir
    from nyx.feedback.triples import read_triples

    profile = settings.load_profile()
    paths = settings.paths
    split = profile.stage2.feedback_split
    cfg = profile.feedback
    data = load_beir(paths.nyxqa / split)
    triples = read_triples(paths.feedback / "triples.jsonl")
    from nyx.feedback.triples import read_training_triple_ids

    training = read_training_triple_ids(paths.feedback / "train_triples.jsonl")
    rows = []
    for i in range(max(len(triples), len(training))):
        t = triples[i] if i < len(triples) else None
        rec = training[i] if i < len(training) else None
        qid = t.query_id if t is not None else rec["query"]
        where = f"line {i + 1} ({qid})"
        row = {"query_id": qid, "positive_rank": t.positive_rank if t is not None else None}
        if t is None or rec is None:
            row["files_disagree"] = (
                f"{where}: only in {'train_triples' if t is None else 'triples'}.jsonl "
                f"({len(triples)} triples, {len(training)} training records)"
            )
        else:
            pairs = (
                ("query", t.query_id, rec["query"]),
                ("positive", t.positive_id, rec["positive"]),
                ("negatives", list(t.negative_ids), rec["negatives"]),
            )
            diff = [name for name, a, b in pairs if a != b]
            row["files_disagree"] = (
                f"{where}: train_triples.jsonl has another {', '.join(diff)} than triples.jsonl" if diff else None
            )
        if rec is not None:
            row["positive_is_negative"] = (
                f"{where}: train_triples.jsonl lists the positive {rec['positive']!r} among its negatives"
                if rec["positive"] in rec["negatives"]
                else None
            )
        if t is not None:
            unknown = [d for d in [t.positive_id, *t.negative_ids] if d not in data.corpus]
            gold = set(data.qrels.get(t.query_id, {}))
            gold_neg = [d for d in t.negative_ids if d in gold] if cfg.exclude_gold_negatives else []
            row.update(
                {
                    "unknown_query": None
                    if t.query_id in data.queries
                    else f"{where}: not a question of nyxqa/{split}",
                    "unknown_document": f"{where}: {unknown[0]!r} is not in the nyxqa/{split} corpus"
                    if unknown
                    else None,
                    "gold_negative": f"{where}: negative {gold_neg[0]!r} is relevant in qrels" if gold_neg else None,
                    "rank_out_of_range": None
                    if 1 <= t.positive_rank <= cfg.top_k
                    else f"{where}: positive_rank {t.positive_rank} outside 1..top_k {cfg.top_k}",
                    "too_many_negatives": f"{where}: {len(t.negative_ids)} negatives > max_negatives {cfg.max_negatives}"  # noqa: E501
                    if len(t.negative_ids) > cfg.max_negatives
                    else None,
                }
            )
        rows.append(row)
    problems = [
        "files_disagree",
        "positive_is_negative",
        "unknown_query",
        "unknown_document",
        "gold_negative",
        "rank_out_of_range",
        "too_many_negatives",
    ]
    df = pd.DataFrame(rows, columns=["query_id", "positive_rank", *problems])
    return gx_check(
        df,
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeUnique(column="query_id"),
            *(
                gxe.ExpectColumnValuesToBeNull(column=c) for c in problems
            ),  # examples: "line <n> (<query id>): <reason>"
        ],
        "feedback",
        extra_metadata={
            "split": split,
            "triples": len(triples),
            "training_records": len(training),
            "top_k": cfg.top_k,
            **{f"{c}_lines": int(df[c].notna().sum()) for c in problems},
        },
    )


@dg.asset_check(asset=feedback_preferences, blocking=False, description="share of questions kept (warn under 20%)")
def feedback_kept_share(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.data.records import iter_jsonl
    from nyx.feedback.triples import read_triples

    kept = len(read_triples(settings.paths.feedback / "triples.jsonl"))
    total = sum(1 for _ in iter_jsonl(settings.paths.nyxqa / "train" / "queries.jsonl"))
    share = kept / total if total else 0.0
    return dg.AssetCheckResult(
        passed=share >= 0.2,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"kept": kept, "train_queries": total, "kept_share": share},
    )
