"""Evaluation: retrieval metrics (trec_eval semantics) and Matryoshka sweeps."""

from nyx.eval.retrieval import (
    DimEvaluation,
    RetrievalMetrics,
    evaluate_at_dims,
    evaluate_run,
    matryoshka_sweep,
    metric_names,
    truncate_run,
)

__all__ = [
    "DimEvaluation",
    "RetrievalMetrics",
    "evaluate_at_dims",
    "evaluate_run",
    "matryoshka_sweep",
    "metric_names",
    "truncate_run",
]
