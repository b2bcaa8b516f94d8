"""Retrieval-augmented answering with any retriever and reader, with oracle and no-retrieval bounds."""

from nyx.rag.pipeline import (
    NO_RETRIEVAL,
    ORACLE,
    RAGConfig,
    RAGResult,
    gold_contexts,
    read_answers,
    retrieval_contexts,
    run_rag,
)

__all__ = [
    "NO_RETRIEVAL",
    "ORACLE",
    "RAGConfig",
    "RAGResult",
    "gold_contexts",
    "read_answers",
    "retrieval_contexts",
    "run_rag",
]
