"""``eval_report``: baselines, the untrained backbone, Stage 1 and Stage 2 side by side on the evaluation split.

Reported only: the models were already chosen on dev (:mod:`nyx.train.stage`); the test metrics recorded on the model
versions (``eval.test.*`` tags) never enter the promotion gate."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from assets.lib.metadata import data_snapshot_md5, md_image, readable, readable_metadata, table_metadata
from assets.lib.profile import ProfileConfig, embedding_store, make_reader, profile_for
from nyx.tracking import metric_key
from nyx.train.stage import load_stage
from orchestration.resources import DvcResource, MlflowResource, NyxSettings

READER_NOTE = (
    "RAG answers come from the profile's reader; in the sample profile that is the offline MiniLM option "
    "reader, a text-only stand-in for a VLM generator (it ignores images)."
)


@dg.asset(
    group_name="evaluation",
    kinds={"python", "mlflow", "markdown"},
    deps=["stage1_index", "stage2_index", "nyxqa"],
    code_version="eval-v1",
)
def eval_report(
    context: dg.AssetExecutionContext,
    settings: NyxSettings,
    mlflow: MlflowResource,
    dvc: DvcResource,
    config: ProfileConfig,
) -> dg.MaterializeResult:
    """Retrieval metrics at every Matryoshka dimension, RAG answer metrics (with oracle and no-retrieval bounds),
    a breakdown by the positive's modality (text, one image, several images) and search latency, for BM25, MiniLM,
    the untrained backbone, Stage 1 and Stage 2; a Markdown report with a Matryoshka curve and a comparison plot,
    logged to MLflow. The split's metrics are recorded on the Stage-1/Stage-2 model versions for reporting (the
    promotion gate decides on dev)."""
    import mlflow as mlflow_lib

    from nyx.data.beir import load_beir
    from nyx.eval.report import evaluate_retrievers, write_report
    from nyx.index import IndexMismatchError
    from nyx.index.corpus import open_corpus_index
    from nyx.registry import record_metrics
    from nyx.retrieval import DenseRetriever

    profile = profile_for(settings, config)
    paths = settings.paths
    ds = load_beir(paths.nyxqa / profile.eval.split)
    corpus = list(ds.corpus.values())
    store = embedding_store(settings, profile)
    retrievers, versions, encodes = {}, {}, {}
    for name in profile.eval.baselines:
        retrievers[name] = baseline_retriever(name, profile)
        if isinstance(retrievers[name], DenseRetriever):  # embeddings shared with dev evaluation via the store
            retrievers[name].index(corpus, store=store, source=f"eval-{name}", progress=context.log.info)
            encodes[name] = retrievers[name].last_encode.to_dict()
    for stage in ("stage1", "stage2"):
        state = load_stage(paths, stage)
        if state is not None and state.finished:
            try:  # the stage's corpus index (stage{1,2}_index): no corpus encode here
                retrievers[stage] = open_corpus_index(
                    paths.indexes / stage, model_version=state.model_version, corpus=corpus
                )
            except (IndexMismatchError, FileNotFoundError) as e:
                raise dg.Failure(f"eval_report needs the {stage} corpus index: {e}") from None
            versions[stage] = state.model_version
    context.log.info(f"corpus embeddings of the baselines: {encodes}")
    dims = (
        {n: profile.eval.dims for n in retrievers if n in ("untrained", "stage1", "stage2")}
        if profile.eval.dims
        else None
    )
    reader = make_reader(profile, paths)
    report = evaluate_retrievers(
        retrievers,
        list(ds.queries.values()),
        ds.qrels,
        corpus,
        dims_by_name=dims,
        reader=reader,
        top_n=profile.eval.top_n,
        cache_dir=paths.cache / "rag",
        notes=[READER_NOTE],
        meta={
            "split": profile.eval.split,
            "profile": settings.profile,
            "queries": len(ds.queries),
            "corpus": len(ds.corpus),
            **{f"{k}_model_version": v for k, v in versions.items()},
        },
    )
    files = write_report(report, paths.reports / "eval")
    summary = report.summary()
    extra = extra_set_reports(context, settings, profile, store, dims, reader, versions)
    client = mlflow.client()
    with mlflow.start_run(
        run_name=f"eval-{context.run_id[:8]}",
        tags={
            "dagster.run_id": context.run_id,
            "dagster.asset_key": "eval_report",
            "nyx.stage": "evaluation",
            "nyx.code_version": "eval-v1",
            "nyx.profile": settings.profile,
            "dvc.data_md5": data_snapshot_md5(dvc) or "unversioned",
            **{f"nyx.{k}_model_version": v for k, v in versions.items()},
        },
    ) as run:
        for name, row in summary.items():
            mlflow_lib.log_metrics(
                {
                    f"{name}.{metric_key(k)}": float(v)
                    for k, v in row.items()
                    if isinstance(v, (int, float)) and v is not None
                }
            )
        for f in files.values():
            mlflow_lib.log_artifact(str(f), artifact_path="report")
        for set_name, (set_report, set_files) in extra.items():  # each extra set's metrics prefixed by its name
            for name, row in set_report.summary().items():
                mlflow_lib.log_metrics(
                    {
                        f"{set_name}.{name}.{metric_key(k)}": float(v)
                        for k, v in row.items()
                        if isinstance(v, (int, float)) and v is not None
                    }
                )
            for f in set_files.values():
                mlflow_lib.log_artifact(str(f), artifact_path=f"report/sets/{set_name}")
        run_id = run.info.run_id
    mlflow.link_runs(context, run_id)
    for stage, version in versions.items():
        record_metrics(
            client,
            profile.promotion.registered_model,
            version,
            {k: v for k, v in summary.get(stage, {}).items() if isinstance(v, (int, float)) and k != "dim"},
            split=profile.eval.split,
        )
    return dg.MaterializeResult(
        metadata={
            **report_metadata(report, files),
            **(
                {"extra_sets": dg.MetadataValue.json(readable({n: r.summary() for n, (r, _) in extra.items()}))}
                if extra
                else {}
            ),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id)),
            **{f"{k}_model_version": v for k, v in versions.items()},
        }
    )


def baseline_retriever(name: str, profile):
    """A fresh, empty baseline retriever: ``untrained`` (the profile's backbone) or a named one (bm25, minilm)."""
    from nyx.retrieval import NyxRetriever, create_retriever

    return (
        NyxRetriever(model=profile.model, encoder_overrides=profile.encoder_overrides())
        if name == "untrained"
        else create_retriever(name)
    )


def extra_set_reports(
    context: dg.AssetExecutionContext, settings: NyxSettings, profile, store, dims, reader, versions: Mapping[str, str]
) -> dict[str, tuple[Any, dict[str, Path]]]:
    """Each of the profile's extra evaluation sets (``eval.extra_sets``) evaluated with the same retrievers as NyxQA,
    built on the set's own corpus (stage models as their trained folders load them, encodes shared through the
    embedding store); written under ``reports/eval/sets/<name>``. ``{name: (report, files)}``."""
    from functools import partial

    from nyx.eval.extra_sets import evaluate_extra_set
    from nyx.eval.report import write_report

    if not profile.eval.extra_sets:
        return {}
    from assets.indexing import stage_retriever

    factories = {name: partial(baseline_retriever, name, profile) for name in profile.eval.baselines}
    for stage in versions:  # the finished stages NyxQA was evaluated with
        factories[stage] = lambda stage=stage: stage_retriever(settings, profile, stage)[1]
    out: dict[str, tuple[Any, dict[str, Path]]] = {}
    for spec in profile.eval.extra_sets:
        context.log.info(f"extra evaluation set {spec.name}: {spec.path} (split {spec.split})")
        try:
            set_report = evaluate_extra_set(
                spec,
                settings.paths.root,
                factories,
                store=store,
                dims_by_name=dims,
                reader=reader,
                top_n=profile.eval.top_n,
                cache_dir=settings.paths.cache / "rag",
                notes=[READER_NOTE],
                meta={"profile": settings.profile},
                progress=context.log.info,
            )
        except (FileNotFoundError, ValueError) as e:
            raise dg.Failure(f"eval_report: {e}") from None
        out[spec.name] = (set_report, write_report(set_report, settings.paths.reports / "eval" / "sets" / spec.name))
    return out


def report_metadata(report, files: Mapping[str, Path]) -> dict[str, Any]:
    """``eval_report``'s metadata from the report and the files :func:`nyx.eval.report.write_report` wrote: the
    Markdown report and both plots with their PNGs inlined (the Dagster UI renders ``data:`` images, not file
    paths), the headline numbers per retriever, and the full-dimension table (BM25 has no dimension: an empty
    cell, never NaN). Every number is rounded for reading and valid JSON."""
    from nyx.eval.report import inline_markdown

    markdown, _ = inline_markdown(report, files)
    rows = report.full_dim().to_dict("records")
    for r in rows:  # dims are integers; BM25's is missing
        d = readable(r.get("dim"))
        r["dim"] = int(d) if isinstance(d, (int, float)) else None
    return readable_metadata(
        {
            "report": dg.MetadataValue.md(markdown),
            "summary": dg.MetadataValue.json(readable(report.summary())),
            "retrievers": table_metadata(rows),
            "matryoshka_plot": md_image(files["matryoshka_plot"], "retrieval metrics vs embedding dimension"),
            "comparison_plot": md_image(files["comparison_plot"], "retrievers at full dimension"),
            "report_dir": dg.MetadataValue.path(str(Path(files["markdown"]).parent)),
        }
    )


@dg.asset_check(
    asset=eval_report,
    blocking=False,
    description="report complete; Stage 1 beats the untrained backbone (warn otherwise)",
)
def eval_report_stage1_beats_untrained(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.eval.report import load_report

    report = load_report(settings.paths.reports / "eval" / "report.json")
    s = report.summary()
    s1, base = s.get("stage1", {}).get("ndcg@10"), s.get("untrained", {}).get("ndcg@10")
    passed = s1 is not None and base is not None and s1 > base
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=readable_metadata({"stage1_ndcg@10": s1, "untrained_ndcg@10": base, "retrievers": list(s)}),
    )
