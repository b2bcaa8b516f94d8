"""``nyxqa``: the NyxQA benchmark built from the synthetic QA pairs and exported as BEIR folders, with its blocking
check."""

import dagster as dg

from assets.lib.metadata import jsonable
from assets.lib.profile import ProfileConfig, generator_config, profile_for
from orchestration.resources import NyxSettings


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
            "stats": dg.MetadataValue.json(jsonable(stats)),
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

    from assets.lib.quality import gx_check
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
