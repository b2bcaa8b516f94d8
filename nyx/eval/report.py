"""The evaluation report: retrieval at every Matryoshka dimension, RAG answers, and a breakdown by modality.

:func:`evaluate_retrievers` runs everything for a set of named retrievers and returns an :class:`EvalReport`;
:func:`write_report` renders it as Markdown + JSON + two PNG figures. Tables (pandas DataFrames):

* ``retrieval`` — one row per (retriever, dim): ``recall@1/5/10/20``, ``ndcg@10``, ``mrr@10``,
  ``latency_ms_per_query`` (query encoding + search; ``search_ms_per_query`` and ``encode_ms_per_query``
  separately), ``n_queries``. ``dim`` is empty for retrievers without embeddings (BM25).
* ``rag`` — one row per run: each retriever's top-n answers, then the ``oracle`` (gold document) and
  ``no_retrieval`` (empty context) bounds: ``accuracy``, ``em``, ``f1``, ``n``.
* ``by_modality`` — per retriever (at full dimension) and modality group (``text`` / ``image1`` /
  ``image2+``): ``n``, ``recall@1``, ``recall@10``, ``ndcg@10``, ``mrr@10`` and RAG ``accuracy``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nyx.data.records import Record
from nyx.eval.answers import MODALITIES, UNKNOWN_MODALITY, query_modality
from nyx.utils.io import atomic_write, write_json

__all__ = [
    "EvalReport",
    "PLOTS",
    "REPORT_FILES",
    "evaluate_retrievers",
    "inline_markdown",
    "load_report",
    "write_report",
]

RETRIEVAL_COLUMNS = [
    "retriever",
    "dim",
    "recall@1",
    "recall@5",
    "recall@10",
    "recall@20",
    "ndcg@10",
    "mrr@10",
    "latency_ms_per_query",
    "search_ms_per_query",
    "encode_ms_per_query",
    "n_queries",
]
RAG_COLUMNS = ["run", "accuracy", "em", "f1", "n"]
MODALITY_COLUMNS = ["retriever", "modality", "n", "recall@1", "recall@10", "ndcg@10", "mrr@10", "accuracy"]
REPORT_FILES = {
    "markdown": "report.md",
    "json": "report.json",
    "matryoshka_plot": "matryoshka.png",
    "comparison_plot": "retrievers.png",
}
PLOTS = ("matryoshka_plot", "comparison_plot")


def _frame(rows: Sequence[Mapping[str, Any]] | pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows or []))
    for c in columns:
        if c not in df.columns:
            df[c] = pd.NA
    return df[columns + [c for c in df.columns if c not in columns]]


@dataclass
class EvalReport:
    """The three tables, free-text notes (what the reader is, caveats) and metadata."""

    retrieval: pd.DataFrame
    rag: pd.DataFrame
    by_modality: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.retrieval = _frame(self.retrieval, RETRIEVAL_COLUMNS)
        self.rag = _frame(self.rag, RAG_COLUMNS)
        self.by_modality = _frame(self.by_modality, MODALITY_COLUMNS)

    # -- views ---------------------------------------------------------------------------------------------
    def full_dim(self) -> pd.DataFrame:
        """One row per retriever: its largest dimension (or its only row when it has none)."""
        if self.retrieval.empty:
            return self.retrieval.copy()
        df = self.retrieval.assign(_d=self.retrieval["dim"].astype("Float64").fillna(float("inf")))
        idx = df.groupby("retriever", sort=False)["_d"].idxmax()
        return self.retrieval.loc[list(idx)].reset_index(drop=True)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Headline numbers per retriever (full-dimension retrieval + RAG accuracy), e.g. for MLflow or a gate."""
        acc = {r["run"]: r for r in self.rag.to_dict("records")}
        out: dict[str, dict[str, Any]] = {}
        for row in self.full_dim().to_dict("records"):
            name = row["retriever"]
            out[name] = {
                k: _plain(row[k]) for k in ("dim", "recall@1", "recall@10", "ndcg@10", "mrr@10", "latency_ms_per_query")
            }
            if name in acc:
                out[name].update(accuracy=_plain(acc[name]["accuracy"]), f1=_plain(acc[name]["f1"]))
        for bound in ("oracle", "no_retrieval"):
            if bound in acc:
                out[bound] = {"accuracy": _plain(acc[bound]["accuracy"]), "f1": _plain(acc[bound]["f1"])}
        return out

    # -- serialisation -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (tables as lists of records; missing values as null)."""
        return {
            "retrieval": _records(self.retrieval),
            "rag": _records(self.rag),
            "by_modality": _records(self.by_modality),
            "notes": list(self.notes),
            "meta": self.meta,
            "summary": self.summary(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EvalReport:
        return cls(
            retrieval=pd.DataFrame(obj.get("retrieval", [])),
            rag=pd.DataFrame(obj.get("rag", [])),
            by_modality=pd.DataFrame(obj.get("by_modality", [])),
            notes=list(obj.get("notes", [])),
            meta=dict(obj.get("meta", {})),
        )

    def to_markdown(self, plots: Mapping[str, str] | None = None) -> str:
        """The report as Markdown; ``plots`` maps ``matryoshka_plot`` / ``comparison_plot`` to the image to embed:
        a file name relative to the Markdown file (``report.md``), or a ``data:`` URL (:func:`inline_markdown`)."""
        plots = plots or {}
        lines = ["# Nyx evaluation report", ""]
        for k, v in self.meta.items():
            if isinstance(v, (str, int, float, bool)) or v is None:
                lines.append(f"- **{k}**: {v}")
        lines += ["", "## Retrieval at full dimension", "", _md(self.full_dim()), ""]
        if "comparison_plot" in plots:
            lines += [f"![retrievers at full dimension]({plots['comparison_plot']})", ""]
        lines += [
            "## Matryoshka sweep",
            "",
            "Every retriever at every evaluated embedding dimension "
            "(latency: query encoding + search, milliseconds per query on the evaluation machine).",
            "",
            _md(self.retrieval),
            "",
        ]
        if "matryoshka_plot" in plots:
            lines += [f"![metric vs dimension]({plots['matryoshka_plot']})", ""]
        lines += [
            "## RAG answers",
            "",
            "Accuracy: the answer names the correct option (multiple choice) or "
            "matches the gold answer exactly (open QA), after SQuAD normalisation. `oracle` reads the "
            "gold document, `no_retrieval` no document.",
            "",
            _md(self.rag),
            "",
        ]
        lines += [
            "## By modality group",
            "",
            "Query groups by the image count of the positive document "
            "(`text`: none, `image1`: one, `image2+`: two or more); retrieval at full dimension.",
            "",
            _md(self.by_modality),
            "",
        ]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):
        return v.item()
    return v


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def _md(df: pd.DataFrame) -> str:
    """A Markdown table; columns with no value at all are left out, missing cells show as a dash."""
    if df.empty:
        return "_(no rows)_"
    shown = df.loc[:, df.notna().any()].astype(object)
    shown = shown.where(shown.notna(), None)
    keep_text = []
    if "dim" in shown:  # integers, and a dash for retrievers without dimensions
        shown["dim"] = ["–" if d is None else str(int(d)) for d in shown["dim"]]
        keep_text.append(list(shown.columns).index("dim"))
    return shown.to_markdown(index=False, floatfmt=".4f", missingval="–", disable_numparse=keep_text or False)


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.md``, ``report.json``, ``matryoshka.png`` and ``retrievers.png`` into ``out_dir``;
    returns their paths by kind (keys of :data:`REPORT_FILES`)."""
    from nyx.eval.plots import plot_comparison, plot_matryoshka

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in REPORT_FILES.items()}
    plot_matryoshka(report.retrieval, paths["matryoshka_plot"])
    plot_comparison(report.full_dim(), report.rag, paths["comparison_plot"])
    md = report.to_markdown({k: REPORT_FILES[k] for k in PLOTS})
    with atomic_write(paths["markdown"], "w") as f:
        f.write(md)
    write_json(report.to_json(), paths["json"])
    return paths


def inline_markdown(
    report: EvalReport, files: Mapping[str, str | os.PathLike], max_bytes: int | None = None
) -> tuple[str, dict[str, str]]:
    """The report as self-contained Markdown: the plots written by :func:`write_report` (``files``) inlined as
    ``data:image/png;base64,...`` URLs (each PNG downscaled to at most ``max_bytes``), for viewers that cannot
    follow a relative path (Dagster metadata). Returns the Markdown and the data URL of each plot."""
    from nyx.eval.plots import MAX_INLINE_BYTES, png_data_url

    urls = {k: png_data_url(files[k], max_bytes=max_bytes or MAX_INLINE_BYTES) for k in PLOTS if k in files}
    return report.to_markdown(urls), urls


# ------------------------------------------------------------------------------------------------------------
# Running the evaluation
# ------------------------------------------------------------------------------------------------------------


def _modality_rows(
    name: str,
    per_query: Mapping[str, Mapping[str, float]],
    queries: Sequence[Record],
    rag_by_modality: Mapping[str, Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    groups: dict[str, list[Mapping[str, float]]] = defaultdict(list)
    for q in queries:
        if q.id in per_query:
            groups[query_modality(q)].append(per_query[q.id])
    order = [m for m in (*MODALITIES, UNKNOWN_MODALITY) if m in groups or (rag_by_modality or {}).get(m)]
    rows = []
    for m in order:
        g = groups.get(m, [])
        row: dict[str, Any] = {"retriever": name, "modality": m, "n": len(g)}
        for metric in ("recall@1", "recall@10", "ndcg@10", "mrr@10"):
            row[metric] = sum(r.get(metric, 0.0) for r in g) / len(g) if g else None
        if rag_by_modality and m in rag_by_modality:
            row["accuracy"] = rag_by_modality[m]["accuracy"]
            row["n"] = row["n"] or rag_by_modality[m]["n"]
        rows.append(row)
    return rows


def evaluate_retrievers(
    retrievers: Mapping[str, Any],
    queries: Sequence[Record],
    qrels: Mapping[str, Mapping[str, int]],
    corpus: Sequence[Record] | Mapping[str, Record],
    dims_by_name: Mapping[str, Sequence[int | None] | None] | None = None,
    reader: Any = None,
    top_n: int = 1,
    cache_dir: str | os.PathLike | None = None,
    notes: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Evaluate named retrievers: a Matryoshka sweep each (``dims_by_name[name]``; default its own dims, or
    the single full search for sparse retrievers), RAG with ``reader`` from the top-``top_n`` documents at the
    largest dimension, the oracle and no-retrieval bounds, and the per-modality breakdown.

    A retriever holding no documents is indexed with ``corpus`` first. Without a reader, RAG is skipped.
    """
    from nyx.eval.retrieval import evaluate_at_dims
    from nyx.rag.pipeline import NO_RETRIEVAL, ORACLE, RAGConfig, run_rag

    queries = list(queries)
    docs = dict(corpus) if isinstance(corpus, Mapping) else {r.id: r for r in corpus}
    dims_by_name = dims_by_name or {}
    if reader is not None:
        from nyx.feedback.readers import CachedReader, as_reader

        reader = as_reader(reader)
        if cache_dir is not None and not isinstance(reader, CachedReader):
            reader = CachedReader(reader, cache_dir)
    retrieval_rows: list[dict[str, Any]] = []
    rag_rows: list[dict[str, Any]] = []
    modality_rows: list[dict[str, Any]] = []
    for name, retriever in retrievers.items():
        if name in (ORACLE, NO_RETRIEVAL):
            raise ValueError(f"retriever name {name!r} is reserved for a RAG bound")
        if retriever.num_docs == 0:
            retriever.index(list(docs.values()))
        evals = evaluate_at_dims(retriever, queries, qrels, dims_by_name.get(name))
        for e in evals:
            row = {"retriever": name, **e.row()}
            row["latency_ms_per_query"] = e.search_ms_per_query + (e.encode_ms_per_query or 0.0)
            retrieval_rows.append(row)
        full = max(evals, key=lambda e: float("inf") if e.dim is None else e.dim)
        rag_by_modality = None
        if reader is not None:
            res = run_rag(
                queries,
                docs,
                reader,
                qrels=qrels,
                run=full.run,
                name=name,
                cfg=RAGConfig(top_n=top_n, dim=full.dim, oracle=False, no_retrieval=False),
            )[name]
            rag_rows.append(res.row())
            rag_by_modality = res.metrics["by_modality"]
        modality_rows += _modality_rows(name, full.metrics.per_query, queries, rag_by_modality)
    all_notes = list(notes)
    reader_desc = None
    if reader is not None:
        bounds = run_rag(queries, docs, reader, qrels=qrels, cfg=RAGConfig(top_n=top_n))
        for bound in (ORACLE, NO_RETRIEVAL):
            rag_rows.append(bounds[bound].row())
            modality_rows += _modality_rows(bound, {}, queries, bounds[bound].metrics["by_modality"])
        reader_desc = reader.describe()
        if reader_desc.get("note"):
            all_notes.append(f"Reader: {reader_desc['note']}.")
        all_notes.append(f"RAG reads the top-{top_n} retrieved document(s) at each retriever's largest dimension.")
    else:
        all_notes.append("No reader was given: RAG answer metrics are not computed.")
    all_notes.append(
        "Latency is wall-clock time on the evaluation machine, averaged over the queries; "
        "compare numbers only within one report."
    )
    report_meta = {
        "n_queries": len(queries),
        "n_documents": len(docs),
        "top_n": top_n,
        "retrievers": ", ".join(retrievers),
        **(meta or {}),
    }
    if reader_desc is not None:
        report_meta["reader"] = reader_desc.get("reader_id")
    return EvalReport(
        retrieval=pd.DataFrame(retrieval_rows),
        rag=pd.DataFrame(rag_rows),
        by_modality=pd.DataFrame(modality_rows),
        notes=all_notes,
        meta=report_meta,
    )


def load_report(path: str | os.PathLike) -> EvalReport:
    """Re-open a ``report.json`` written by :func:`write_report`."""
    with open(path, encoding="utf-8") as f:
        return EvalReport.from_json(json.load(f))
