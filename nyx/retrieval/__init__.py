"""Retrievers: one interface (:class:`Retriever`), a registry by name, and the implementations
``bm25`` (lexical baseline), ``minilm`` (text dense baseline), ``mme5`` (mmE5, the paper's Llama-3.2-Vision miner)
and ``nyx`` (the mixed-modal model)."""

from nyx.retrieval.base import (
    RETRIEVER_MANIFEST,
    Retriever,
    RetrieverManifest,
    Run,
    available_retrievers,
    load_retriever,
    read_retriever_manifest,
    register_retriever,
    retriever_class,
)
from nyx.retrieval.bm25 import BM25Config, BM25Retriever
from nyx.retrieval.dense import DenseConfig, DenseRetriever, Encoder
from nyx.retrieval.minilm import MiniLMEncoder, MiniLMRetriever
from nyx.retrieval.mme5 import MmE5Encoder, MmE5Retriever
from nyx.retrieval.nyx_retriever import NyxRetriever


def create_retriever(name: str, **kwargs) -> Retriever:
    """A new, empty retriever of the registered class ``name`` (keyword arguments go to its constructor)."""
    return retriever_class(name)(**kwargs)


__all__ = [
    "BM25Config",
    "BM25Retriever",
    "DenseConfig",
    "DenseRetriever",
    "Encoder",
    "MiniLMEncoder",
    "MiniLMRetriever",
    "MmE5Encoder",
    "MmE5Retriever",
    "NyxRetriever",
    "RETRIEVER_MANIFEST",
    "Retriever",
    "RetrieverManifest",
    "Run",
    "available_retrievers",
    "create_retriever",
    "load_retriever",
    "read_retriever_manifest",
    "register_retriever",
    "retriever_class",
]
