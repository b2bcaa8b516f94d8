"""``nyx evaluate`` and ``nyx report``: score index folders on judged queries (retrieval metrics per Matryoshka
dimension; the full report with RAG answer metrics and plots)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from nyx.cli.common import (
    EXIT_USAGE,
    check_search_dims,
    echo_err,
    fail,
    open_retriever,
    parse_dims,
    print_json,
    rejects_path_for,
    report_rejects,
    user_errors,
)
from nyx.data.records import iter_jsonl
from nyx.data.rejects import RejectLog


def evaluate_cmd(
    index_dir: Annotated[Path, typer.Argument(help="A folder written by `nyx index`.", show_default=False)],
    queries: Annotated[Path, typer.Option(help="Queries JSONL.", show_default=False)],
    qrels: Annotated[Path, typer.Option(help="BEIR qrels TSV (query-id, corpus-id, score).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Metrics JSON to write.", show_default=False)],
    dims: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated Matryoshka dims, e.g. 2048,1024,512,256 [default: the index's dim and its "
            "Matryoshka dims]."
        ),
    ] = None,
    run_out: Annotated[
        Path | None,
        typer.Option(
            help="Write the TREC run here (with several dims, the first dim's run; the others get a "
            ".d<dim> suffix before the extension)."
        ),
    ] = None,
    depth: Annotated[int, typer.Option(min=1, help="Documents retrieved per query.")] = 100,
) -> None:
    """Score an index on judged queries: Recall@1/5/10/20, nDCG@10, MRR@10 per Matryoshka dimension.

    Only queries with judgements in QRELS are searched; judged queries missing from QUERIES score 0. Rejected
    queries and qrels lines are written beside OUT (<out>.rejects.jsonl).
    """
    from rich.console import Console
    from rich.table import Table

    from nyx.data.beir import read_qrels, write_trec_run
    from nyx.eval.retrieval import evaluate_at_dims, metric_names
    from nyx.utils.io import write_json

    dim_list = parse_dims(dims)
    for p, what in ((queries, "queries file"), (qrels, "qrels file")):
        if not p.is_file():
            raise fail(f"{what} not found: {p}")
    r = open_retriever(index_dir)
    check_search_dims(r, dim_list or [])
    rejects = RejectLog(stage="evaluate")
    with user_errors():
        judgements = read_qrels(qrels, rejects)
        all_queries = list(iter_jsonl(queries, rejects))
    judged = [q for q in all_queries if q.id in judgements]
    if not judged:
        report_rejects(rejects, rejects_path_for(out))
        raise fail(f"none of the {len(all_queries)} queries in {queries} has judgements in {qrels}")
    with user_errors():
        evals = evaluate_at_dims(r, judged, judgements, dims=dim_list, k=depth, rejects=rejects)
    rejects_file = report_rejects(rejects, rejects_path_for(out))

    run_files: dict[str, str] = {}
    if run_out is not None:
        for i, e in enumerate(evals):
            target = run_out if i == 0 else run_out.with_name(f"{run_out.stem}.d{e.dim}{run_out.suffix}")
            write_trec_run(e.run, target, tag=f"nyx-{r.name}" + (f"-{e.dim}" if e.dim else ""))
            run_files[str(e.dim)] = str(target)

    result = {
        "index": str(index_dir),
        "retriever": r.describe(),
        "queries": str(queries),
        "qrels": str(qrels),
        "n_queries_read": len(all_queries),
        "n_queries_judged": len(judged),
        "n_queries_without_judgements": len(all_queries) - len(judged),
        "rejected": rejects.count,
        "rejects_file": str(rejects_file) if rejects_file else None,
        "runs": run_files,
        "rows": [e.row() for e in evals],
        "per_query": {str(e.dim): e.metrics.per_query for e in evals},
    }
    write_json(result, out)

    table = Table(title=f"{r.name} on {len(judged)} judged queries")
    names = metric_names()
    for col in ["dim", *names, "search ms/q"]:
        table.add_column(col, justify="right")
    for row in result["rows"]:
        table.add_row(str(row["dim"] or "-"), *(f"{row[n]:.4f}" for n in names), f"{row['search_ms_per_query']:.3f}")
    Console(file=sys.stdout, width=120).print(table)
    echo_err(f"wrote {out}")


def report_cmd(
    indexes: Annotated[
        list[str],
        typer.Argument(
            help="Index folders written by `nyx index`, each optionally named: NAME=DIR (default name: the folder's).",
            show_default=False,
        ),
    ],
    queries: Annotated[
        Path, typer.Option(help="Queries JSONL (NyxQA queries carry choices and answers).", show_default=False)
    ],
    qrels: Annotated[Path, typer.Option(help="BEIR qrels TSV.", show_default=False)],
    corpus: Annotated[
        Path, typer.Option(help="Corpus JSONL the indexes were built from (the reader reads it).", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.md, report.json and the plots.", show_default=False)
    ],
    reader: Annotated[
        str, typer.Option(help="'minilm' (offline stand-in reader) or 'none' (retrieval only).")
    ] = "minilm",
    top_n: Annotated[int, typer.Option(min=1, help="Documents the reader sees.")] = 1,
) -> None:
    """Render the evaluation report (the `eval_report` asset's) for any indexes and judged queries: retrieval at
    every Matryoshka dimension, RAG answer metrics with oracle/no-retrieval bounds, a modality breakdown, plots."""
    from nyx.data.beir import read_qrels
    from nyx.eval.report import evaluate_retrievers, write_report

    for p, what in ((queries, "queries file"), (qrels, "qrels file"), (corpus, "corpus file")):
        if not p.is_file():
            raise fail(f"{what} not found: {p}")
    if reader not in ("minilm", "none"):
        raise fail(f"unknown reader {reader!r}: use 'minilm' or 'none'", code=EXIT_USAGE)
    retrievers = {}
    for spec in indexes:
        name, _, folder = spec.rpartition("=")
        folder_path = Path(folder)
        retrievers[name or folder_path.name] = open_retriever(folder_path)
    rejects = RejectLog(stage="report")
    with user_errors():
        docs = {r.id: r for r in iter_jsonl(corpus, rejects)}
        qs = list(iter_jsonl(queries, rejects))
        judged = read_qrels(qrels, rejects)
    if not qs or not docs:
        raise fail("no usable queries or documents (see the rejects file)")
    rd = None
    if reader == "minilm":
        from nyx.feedback.readers import MiniLMOptionReader

        rd = MiniLMOptionReader()
    with user_errors():
        report = evaluate_retrievers(
            retrievers,
            qs,
            judged,
            docs,
            reader=rd,
            top_n=top_n,
            meta={"queries_file": str(queries), "corpus_file": str(corpus)},
        )
        files = write_report(report, out)
    if rejects.count:
        rejects.write(out / "rejects.jsonl")
        echo_err(f"{rejects.count} rejected records written to {out / 'rejects.jsonl'}")
    print_json({k: str(v) for k, v in files.items()})
