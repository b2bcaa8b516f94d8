"""``eval_report``: baselines, the untrained backbone, Stage 1 and Stage 2 side by side on the evaluation split.

Reported only: the models were already chosen on dev (:mod:`nyx.train.stage`); the test metrics recorded on the model
versions (``eval.test.*`` tags) never enter the promotion gate."""

import json

import dagster as dg

from assets.common import ProfileConfig, embedding_store, profile_for
from assets.feedback import make_reader
from nyx.train.stage import load_stage
from orchestration.resources import MlflowResource, NyxSettings

READER_NOTE = ("RAG answers come from the profile's reader; in the sample profile that is the offline MiniLM option "
               "reader, a text-only stand-in for a VLM generator (it ignores images).")


@dg.asset(
    group_name="evaluation",
    kinds={"python", "mlflow", "markdown"},
    deps=["stage1_index", "stage2_index", "nyxqa"],
    code_version="eval-v1",
)
def eval_report(context: dg.AssetExecutionContext, settings: NyxSettings, mlflow: MlflowResource,
                config: ProfileConfig) -> dg.MaterializeResult:
    """Retrieval metrics at every Matryoshka dimension, RAG answer metrics (with oracle and no-retrieval bounds),
    a breakdown by the positive's modality (text, one image, several images) and search latency, for BM25, MiniLM,
    the untrained backbone, Stage 1 and Stage 2; a Markdown report with a Matryoshka curve and a comparison plot,
    logged to MLflow. The split's metrics are recorded on the Stage-1/Stage-2 model versions for reporting (the
    promotion gate decides on dev)."""
    import mlflow as mlflow_lib

    from nyx.data.beir import load_beir
    from nyx.eval.report import evaluate_retrievers, write_report
    from nyx.registry import record_metrics
    from nyx.index import IndexMismatchError
    from nyx.index.corpus import open_corpus_index
    from nyx.retrieval import DenseRetriever, NyxRetriever, create_retriever

    profile = profile_for(settings, config)
    paths = settings.paths
    ds = load_beir(paths.nyxqa / profile.eval.split)
    corpus = list(ds.corpus.values())
    store = embedding_store(settings, profile)
    retrievers, versions, encodes = {}, {}, {}
    for name in profile.eval.baselines:
        retrievers[name] = (NyxRetriever(model=profile.model, encoder_overrides=profile.encoder_overrides())
                            if name == "untrained" else create_retriever(name))
        if isinstance(retrievers[name], DenseRetriever):  # embeddings shared with dev evaluation via the store
            retrievers[name].index(corpus, store=store, source=f"eval-{name}", progress=context.log.info)
            encodes[name] = retrievers[name].last_encode.to_dict()
    for stage in ("stage1", "stage2"):
        state = load_stage(paths, stage)
        if state is not None and state.finished:
            try:  # the stage's corpus index (stage{1,2}_index): no corpus encode here
                retrievers[stage] = open_corpus_index(paths.indexes / stage, model_version=state.model_version,
                                                      corpus=corpus)
            except (IndexMismatchError, FileNotFoundError) as e:
                raise dg.Failure(f"eval_report needs the {stage} corpus index: {e}") from None
            versions[stage] = state.model_version
    context.log.info(f"corpus embeddings of the baselines: {encodes}")
    dims = {n: profile.eval.dims for n in retrievers if n in ("untrained", "stage1", "stage2")} if profile.eval.dims else None
    report = evaluate_retrievers(retrievers, list(ds.queries.values()), ds.qrels, corpus, dims_by_name=dims,
                                 reader=make_reader(profile, paths), top_n=profile.eval.top_n,
                                 cache_dir=paths.cache / "rag", notes=[READER_NOTE],
                                 meta={"split": profile.eval.split, "profile": settings.profile,
                                       "queries": len(ds.queries), "corpus": len(ds.corpus),
                                       **{f"{k}_model_version": v for k, v in versions.items()}})
    files = write_report(report, paths.reports / "eval")
    summary = report.summary()
    client = mlflow.client()
    with mlflow.start_run(run_name=f"eval-{context.run_id[:8]}", tags={
            "dagster.run_id": context.run_id, "dagster.asset_key": "eval_report", "nyx.stage": "evaluation",
            "nyx.code_version": "eval-v1", **{f"nyx.{k}_model_version": v for k, v in versions.items()}}) as run:
        for name, row in summary.items():
            mlflow_lib.log_metrics({f"{name}.{k.replace('@', '_at_')}": float(v) for k, v in row.items()
                                    if isinstance(v, (int, float)) and v is not None})
        for f in files.values():
            mlflow_lib.log_artifact(str(f), artifact_path="report")
        run_id = run.info.run_id
    for stage, version in versions.items():
        record_metrics(client, profile.promotion.registered_model, version,
                       {k: v for k, v in summary.get(stage, {}).items() if isinstance(v, (int, float)) and k != "dim"},
                       split=profile.eval.split)
    table = report.full_dim()
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(files["markdown"].read_text()),
        "summary": dg.MetadataValue.json(json.loads(json.dumps(summary, default=str))),
        "retrievers": dg.MetadataValue.table(
            records=[dg.TableRecord({k: (float(v) if isinstance(v, (int, float)) else str(v))
                                     for k, v in r.items()}) for r in table.to_dict("records")]) if len(table) else 0,
        "matryoshka_plot": dg.MetadataValue.path(str(files["matryoshka_plot"])),
        "comparison_plot": dg.MetadataValue.path(str(files["comparison_plot"])),
        "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id)),
        **{f"{k}_model_version": v for k, v in versions.items()},
    })


@dg.asset_check(asset=eval_report, blocking=False,
                description="report complete; Stage 1 beats the untrained backbone (warn otherwise)")
def eval_report_stage1_beats_untrained(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.eval.report import load_report

    report = load_report(settings.paths.reports / "eval" / "report.json")
    s = report.summary()
    s1, base = s.get("stage1", {}).get("ndcg@10"), s.get("untrained", {}).get("ndcg@10")
    passed = s1 is not None and base is not None and s1 > base
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"stage1_ndcg@10": s1 or 0.0, "untrained_ndcg@10": base or 0.0,
                                         "retrievers": list(s)})
