"""``feedback_preferences``: VLM-feedback preference triples for Stage 2."""

import json

import dagster as dg

from assets.common import ProfileConfig, generator_config, profile_for
from orchestration.resources import NyxSettings


def make_reader(profile, paths):
    """The profile's reader: the offline MiniLM option reader (a stand-in for a VLM) or the generator."""
    from nyx.feedback.readers import MiniLMOptionReader, as_reader

    reader = profile.reader
    if reader.kind == "minilm":
        return MiniLMOptionReader()
    from nyx.synth.generators import make_generator

    if reader.kind == "generator":
        return as_reader(make_generator(generator_config(profile, paths)))
    openai = reader.openai
    if not openai.cache_dir:
        openai = openai.model_copy(update={"cache_dir": str(paths.cache / "reader")})
    cfg = profile.generator.model_copy(update={"kind": "openai", "openai": openai})
    return as_reader(make_generator(cfg))


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    deps=["stage1_checkpoint", "nyxqa"],
    code_version="feedback-v1",
    automation_condition=dg.AutomationCondition.eager(),
)
def feedback_preferences(context: dg.AssetExecutionContext, settings: NyxSettings,
                         config: ProfileConfig) -> dg.MaterializeResult:
    """For each train question, the Stage-1 model retrieves the top-K; a reader answers from each sliding window of
    retrieved documents; the document of the first window reaching the best score becomes the positive, other
    retrieved documents (not answering correctly) the negatives. Queries with no correct window are dropped and
    counted. Reader answers are cached under ``data/cache/feedback``, so collection is incremental and resumable:
    re-materialising after new questions arrive only pays for the new ones."""
    from nyx.data.beir import load_beir
    from nyx.data.rejects import RejectLog
    from nyx.feedback.preferences import collect_feedback, write_triples
    from nyx.retrieval import NyxRetriever
    from nyx.utils.io import atomic_write
    from assets.training import finished_stage
    from nyx.train.stage import model_spec

    profile = profile_for(settings, config)
    paths = settings.paths
    train = load_beir(paths.nyxqa / profile.stage2.feedback_split)
    retriever = NyxRetriever(model=model_spec(finished_stage(settings, "stage1")))
    rejects = RejectLog(stage="feedback_preferences")
    triples, stats = collect_feedback(list(train.queries.values()), list(train.corpus.values()), retriever,
                                      make_reader(profile, paths), profile.feedback,
                                      cache_dir=paths.cache / "feedback", qrels=train.qrels, rejects=rejects)
    write_triples(triples, paths.feedback / "triples.jsonl")
    base = paths.feedback
    with atomic_write(base / "train_triples.jsonl") as f:  # full records: a `triples` training source
        for t in triples:
            f.write(json.dumps({
                "query": train.queries[t.query_id].to_json(base),
                "positive": train.corpus[t.positive_id].to_json(base),
                "negatives": [train.corpus[n].to_json(base) for n in t.negative_ids],
            }, ensure_ascii=False) + "\n")
    rejects.write(paths.rejects / "feedback_preferences.jsonl")
    s = stats.to_dict()
    return dg.MaterializeResult(metadata={
        "queries": len(train.queries), "kept": len(triples), "dropped_no_correct_window": len(train.queries) - len(triples),
        "kept_share": float(s.get("kept_share", 0.0)),
        "stats": dg.MetadataValue.json(json.loads(json.dumps(s, default=str))),
        "reader": profile.reader.kind, "top_k": profile.feedback.top_k, "window": profile.feedback.window_size,
    })


@dg.asset_check(asset=feedback_preferences, blocking=True, description="schema: positives never negatives; ids known")
def feedback_preferences_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe
    import pandas as pd

    from assets.quality import gx_check
    from nyx.feedback.preferences import read_triples

    triples = read_triples(settings.paths.feedback / "triples.jsonl")
    df = pd.DataFrame([{"query_id": t.query_id, "positive_rank": t.positive_rank,
                        "positive_not_negative": t.positive_id not in t.negative_ids} for t in triples],
                      columns=["query_id", "positive_rank", "positive_not_negative"])
    return gx_check(df, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="query_id"),
        gxe.ExpectColumnValuesToBeInSet(column="positive_not_negative", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="positive_rank", min_value=1),
    ], "feedback")


@dg.asset_check(asset=feedback_preferences, blocking=False, description="share of questions kept (warn under 20%)")
def feedback_kept_share(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.data.records import iter_jsonl
    from nyx.feedback.preferences import read_triples

    kept = len(read_triples(settings.paths.feedback / "triples.jsonl"))
    total = sum(1 for _ in iter_jsonl(settings.paths.nyxqa / "train" / "queries.jsonl"))
    share = kept / total if total else 0.0
    return dg.AssetCheckResult(passed=share >= 0.2, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"kept": kept, "train_queries": total, "kept_share": share})
