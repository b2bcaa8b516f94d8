"""FAISS inner-product indexes over Matryoshka embeddings, with a manifest that guards compatibility."""

from nyx.index.faiss_index import EmbeddingIndex, SearchResult, normalize_rows, prefix
from nyx.index.manifest import (
    CorpusHasher,
    IndexConfig,
    IndexManifest,
    IndexMismatchError,
    IndexType,
    corpus_hash,
    nyx_version,
)

__all__ = [
    "CorpusHasher",
    "EmbeddingIndex",
    "IndexConfig",
    "IndexManifest",
    "IndexMismatchError",
    "IndexType",
    "SearchResult",
    "corpus_hash",
    "normalize_rows",
    "nyx_version",
    "prefix",
]
