"""Report figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend state,
safe in worker threads and headless machines).

* :func:`plot_matryoshka` — a retrieval metric against the embedding dimension, one line per retriever
  (retrievers without dimensions, e.g. BM25, as dashed horizontal lines).
* :func:`plot_comparison` — retrievers side by side at full dimension: nDCG@10, Recall@10 and RAG accuracy,
  with the oracle and no-retrieval accuracies as reference lines.
* :func:`loss_figure` / :func:`plot_loss` — a training run's loss against the optimizer step.

:func:`png_data_url` turns a figure or a PNG file into a ``data:image/png;base64,...`` URL small enough to inline in
Markdown (Dagster metadata renders such images; a relative file path would show as a broken image there).
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nyx.utils.io import atomic_write

__all__ = [
    "MAX_INLINE_BYTES",
    "figure_png",
    "loss_figure",
    "plot_comparison",
    "plot_loss",
    "plot_matryoshka",
    "png_data_url",
    "save_figure",
]

#: the largest PNG :func:`png_data_url` inlines (bytes before base64, which adds a third): bigger ones are downscaled
MAX_INLINE_BYTES = 300_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically."""
    FigureCanvasAgg(fig)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (in memory)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _shrink_png(data: bytes, max_bytes: int) -> bytes:
    """Downscale a PNG (Lanczos) until it is at most ``max_bytes`` long."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    scale = 1.0
    while len(data) > max_bytes:
        scale *= max(0.3, min(0.9, math.sqrt(max_bytes / len(data)) * 0.95))
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        buf = io.BytesIO()
        img.resize(size, Image.Resampling.LANCZOS).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
        if size == (1, 1):
            break
    return data


def png_data_url(source: Figure | bytes | str | os.PathLike, max_bytes: int = MAX_INLINE_BYTES, dpi: int = 100) -> str:
    """A ``data:image/png;base64,...`` URL of a figure (rendered at ``dpi``), PNG bytes or a PNG file, downscaled
    until the PNG is at most ``max_bytes`` long (a figure is rendered again at a lower dpi first)."""
    if isinstance(source, Figure):
        data = figure_png(source, dpi=dpi)
        while len(data) > max_bytes and dpi > 40:
            dpi = max(40, int(dpi * max(0.5, math.sqrt(max_bytes / len(data)) * 0.95)))
            data = figure_png(source, dpi=dpi)
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        data = Path(source).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("png_data_url: not a PNG image")
    if len(data) > max_bytes:
        data = _shrink_png(data, max_bytes)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_matryoshka(
    retrieval: pd.DataFrame, path: str | os.PathLike, metrics: Sequence[str] = ("ndcg@10", "recall@10")
) -> Path:
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
                ax.axhline(
                    float(rows[metric].iloc[0]), linestyle="--", linewidth=1, label=f"{name} (sparse)", color="grey"
                )
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


def plot_comparison(
    full_dim: pd.DataFrame,
    rag: pd.DataFrame,
    path: str | os.PathLike,
    retrieval_metrics: Sequence[str] = ("ndcg@10", "recall@10"),
    bounds: Sequence[str] = ("oracle", "no_retrieval"),
) -> Path:
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
            ax.axhline(
                acc[bound],
                linestyle=style,
                color="black",
                linewidth=1,
                label=f"{bound.replace('_', ' ')} accuracy ({acc[bound]:.2f})",
            )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title("retrievers at full dimension")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)


def loss_figure(
    points: Sequence[tuple[float, float] | tuple[float, float, float]], title: str = "training loss"
) -> Figure:
    """Loss against the optimizer step from ``(step, loss[, epoch])`` points (an MLflow metric history); steps are
    sorted, non-finite losses left out (and counted in the title); a dotted moving average when there are many."""
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    pts = sorted((float(p[0]), float(p[1])) for p in points)
    finite = [(s, v) for s, v in pts if math.isfinite(v)]
    bad = len(pts) - len(finite)
    if not finite:
        _no_data(ax, "finite loss values" if pts else "logged loss")
        ax.set_title(title)
        return fig
    steps, losses = [s for s, _ in finite], [v for _, v in finite]
    ax.plot(steps, losses, marker="o" if len(finite) <= 60 else None, markersize=3, linewidth=1.2, label="loss")
    window = max(1, len(finite) // 10)
    if window > 1:
        cum = [0.0]
        for v in losses:
            cum.append(cum[-1] + v)
        smooth = [
            (cum[i + 1] - cum[max(0, i - window + 1)]) / (i + 1 - max(0, i - window + 1)) for i in range(len(losses))
        ]
        ax.plot(steps, smooth, linestyle=":", color="black", linewidth=1.2, label=f"mean of {window} steps")
        ax.legend(fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    note = f"{len(finite)} steps, last {losses[-1]:.4g}" + (f", {bad} non-finite left out" if bad else "")
    ax.set_title(f"{title} ({note})", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def plot_loss(
    points: Sequence[tuple[float, float] | tuple[float, float, float]],
    path: str | os.PathLike,
    title: str = "training loss",
) -> Path:
    """:func:`loss_figure` written as PNG."""
    return save_figure(loss_figure(points, title), path)
