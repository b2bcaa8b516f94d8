"""FAISS inner-product indexes over Matryoshka embeddings, with a manifest that guards compatibility."""

from nyx.index.build import index_bytes, recall_at_k
from nyx.index.faiss_index import EmbeddingIndex, SearchResult
from nyx.index.manifest import (
    CorpusHasher,
    IndexConfig,
    IndexManifest,
    IndexMismatchError,
    IndexType,
    StoreDtype,
    corpus_hash,
    nyx_version,
)
from nyx.index.vectors import normalize_rows, prefix

__all__ = [
    "CorpusHasher",
    "EmbeddingIndex",
    "IndexConfig",
    "IndexManifest",
    "IndexMismatchError",
    "IndexType",
    "SearchResult",
    "StoreDtype",
    "corpus_hash",
    "index_bytes",
    "normalize_rows",
    "nyx_version",
    "prefix",
    "recall_at_k",
]
