"""Report figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend state,
safe in worker threads and headless machines).

* :func:`plot_matryoshka` — a retrieval metric against the embedding dimension, one line per retriever
  (retrievers without dimensions, e.g. BM25, as dashed horizontal lines).
* :func:`plot_comparison` — retrievers side by side at full dimension: nDCG@10, Recall@10 and RAG accuracy,
  with the oracle and no-retrieval accuracies as reference lines.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nyx.utils.io import atomic_write

__all__ = ["plot_comparison", "plot_matryoshka", "save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically."""
    FigureCanvasAgg(fig)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_matryoshka(retrieval: pd.DataFrame, path: str | os.PathLike,
                    metrics: Sequence[str] = ("ndcg@10", "recall@10")) -> Path:
    """One panel per metric: metric vs dimension (log2 axis) per retriever, from the sweep rows
    (columns ``retriever``, ``dim``, and the metrics)."""
    metrics = [m for m in metrics if m in retrieval.columns] or list(metrics)
    fig = Figure(figsize=(5.0 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        if retrieval.empty or metric not in retrieval.columns:
            _no_data(ax, "retrieval rows")
            continue
        dims = retrieval["dim"].dropna()
        for name, rows in retrieval.groupby("retriever", sort=False):
            dense = rows.dropna(subset=["dim"]).sort_values("dim")
            if len(dense):
                ax.plot(dense["dim"].astype(float), dense[metric], marker="o", label=str(name))
            else:  # no dimensions: a flat reference line
                ax.axhline(float(rows[metric].iloc[0]), linestyle="--", linewidth=1, label=f"{name} (sparse)",
                           color="grey")
        if len(dims):
            ticks = sorted({int(d) for d in dims})
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("embedding dimension")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs dimension")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_comparison(full_dim: pd.DataFrame, rag: pd.DataFrame, path: str | os.PathLike,
                    retrieval_metrics: Sequence[str] = ("ndcg@10", "recall@10"),
                    bounds: Sequence[str] = ("oracle", "no_retrieval")) -> Path:
    """Grouped bars per retriever at full dimension (``full_dim``: one row per retriever) plus RAG accuracy
    (``rag``: rows ``run``, ``accuracy``); the ``bounds`` runs of ``rag`` are drawn as horizontal lines."""
    fig = Figure(figsize=(max(6.0, 1.6 * max(len(full_dim), 1) + 3), 4.0))
    ax = fig.subplots()
    names = list(full_dim["retriever"]) if "retriever" in full_dim else []
    acc = dict(zip(rag["run"], rag["accuracy"])) if len(rag) else {}
    series = [m for m in retrieval_metrics if m in full_dim.columns]
    labels = series + (["RAG accuracy"] if acc else [])
    if not names or not labels:
        _no_data(ax, "retrievers")
        return save_figure(fig, path)
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        values = [float(v) for v in full_dim[label]] if label in series else [acc.get(n, math.nan) for n in names]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    for style, bound in zip(("-", ":"), bounds):
        if bound in acc:
            ax.axhline(acc[bound], linestyle=style, color="black", linewidth=1,
                       label=f"{bound.replace('_', ' ')} accuracy ({acc[bound]:.2f})")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title("retrievers at full dimension")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)
