"""mmE5 (a Llama-3.2-11B-Vision embedder, ``MllamaForConditionalGeneration``) as a dense retriever: the paper's
hard-negative miner.

Usage as published with mmE5 (``haon-chen/mmE5``: ``demo.py`` and ``src/model.py``, the model card's example):

* the embedding is the **last hidden layer** at the **last real token** (``attention_mask.sum(1) - 1`` with right
  padding; :func:`nyx.model.pooling.last_token_pool` finds the same position), **L2-normalised**; similarity is the
  inner product;
* images come first in the prompt as ``<|image|>`` tokens, followed by ``<|begin_of_text|>`` and the instruction
  (``MllamaProcessor`` inserts ``<|begin_of_text|>`` where the prompt lacks it);
* queries carry an MMEB task instruction; mmE5 was trained on MMEB's training set, whose WebQA task (text question
  -> Wikipedia image + passage) is the nearest to NyxQA: ``"Find a Wikipedia image-passage pair that answers this
  question: <question>"``; a query with images uses the demo's ``"Represent the given image with the following
  question: <question>"``;
* documents: text-only chunks are embedded as plain text (as the demo's text targets), chunks with images as
  ``<|image|>... <|begin_of_text|> Represent the given image with related text information: <text>`` (WebQA's
  target instruction).

``model`` is a hub id (default :data:`MME5_MODEL_ID`), a local folder in the hub layout, or ``"tiny"`` (the offline
random-weight Llama-3.2-Vision of :mod:`nyx.model.tiny_mllama`, for tests and the ``rehearsal`` profile). The mmE5
repository's demo loads the processor of ``meta-llama/Llama-3.2-11B-Vision``; give ``processor`` when the model folder
has none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nyx.data.records import Record
from nyx.retrieval.base import register_retriever
from nyx.retrieval.dense import DenseConfig, DenseRetriever

MME5_MODEL_ID = "intfloat/mmE5-mllama-11b-instruct"
#: The processor the mmE5 demo pairs with the model (the base model's tokenizer and image processor).
MME5_PROCESSOR_ID = "meta-llama/Llama-3.2-11B-Vision"
IMAGE_TOKEN = "<|image|>"
BOS_TOKEN = "<|begin_of_text|>"
#: MMEB WebQA's query instruction (text question -> image + passage), the task nearest to NyxQA.
QUERY_INSTRUCTION = "Find a Wikipedia image-passage pair that answers this question:"
#: The mmE5 demo's instruction for a query with an image.
IMAGE_QUERY_INSTRUCTION = "Represent the given image with the following question:"
#: MMEB WebQA's target instruction for an image with its text.
IMAGE_DOC_INSTRUCTION = "Represent the given image with related text information:"


def query_prompt(record: Record) -> str:
    """The mmE5 prompt of a query record (images are passed separately, in order)."""
    text = record.text.strip()
    n = len(record.images)
    if n == 0:
        return f"{QUERY_INSTRUCTION} {text}"
    return f"{IMAGE_TOKEN * n}{BOS_TOKEN} {IMAGE_QUERY_INSTRUCTION} {text}".rstrip()


def document_prompt(record: Record) -> str:
    """The mmE5 prompt of a document record: plain text, or its images first and the image instruction."""
    text = record.text.strip()
    n = len(record.images)
    if n == 0:
        return text
    return f"{IMAGE_TOKEN * n}{BOS_TOKEN} {IMAGE_DOC_INSTRUCTION} {text}".rstrip()


class MmE5Encoder:
    """mmE5 (or any ``MllamaForConditionalGeneration`` embedder) in the :class:`~nyx.retrieval.dense.Encoder`
    interface."""

    def __init__(
        self,
        model: str | os.PathLike = MME5_MODEL_ID,
        processor: str | os.PathLike | None = None,
        device: Any = None,
        dtype: str = "auto",
        max_length: int = 2048,
        revision: str | None = None,
    ):
        import torch
        from transformers import AutoProcessor, MllamaForConditionalGeneration

        from nyx.model.backbone import resolve_device, resolve_dtype

        self.requested = os.fspath(model)
        self.model_revision: str | None
        if self.requested == "tiny":
            from nyx.model.tiny_mllama import TINY_MLLAMA_NAME, ensure_tiny_mllama, tiny_mllama_spec_hash

            path = str(ensure_tiny_mllama())
            self.model_id, self.model_revision = TINY_MLLAMA_NAME, f"build-{tiny_mllama_spec_hash()}"
        else:
            path = os.path.abspath(self.requested) if os.path.isdir(self.requested) else self.requested
            self.model_id, self.model_revision = path, revision
        self.path = path
        self.processor_name = os.fspath(processor) if processor else path
        self.max_length = int(max_length)
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": "sdpa"}
        if revision and not os.path.isdir(path):
            kwargs["revision"] = revision
        self.module = MllamaForConditionalGeneration.from_pretrained(path, **kwargs).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(self.processor_name)
        self.processor.tokenizer.padding_side = "right"
        self.dim = int(self.module.config.text_config.hidden_size)
        self._torch = torch

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id if self.requested != "tiny" else self.path,
            "revision": self.model_revision,
            "processor": self.processor_name,
            "max_length": self.max_length,
            "pooling": "last",
            "query_instruction": QUERY_INSTRUCTION,
            "image_query_instruction": IMAGE_QUERY_INSTRUCTION,
            "image_doc_instruction": IMAGE_DOC_INSTRUCTION,
        }

    def _images(self, record: Record) -> list:
        from nyx.data.images import ImageConfig, load_image

        return [load_image(ref, ImageConfig(resize=False), record_id=record.id) for ref in record.images]

    def _forward(self, prompts: list[str], images: list[list] | None) -> np.ndarray:
        from nyx.model.pooling import last_token_pool, normalize

        torch = self._torch
        batch = self.processor(
            text=prompts, images=images, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.module.dtype)
        with torch.inference_mode():
            out = self.module(**batch, output_hidden_states=True, use_cache=False)
        pooled = normalize(last_token_pool(out.hidden_states[-1], batch["attention_mask"]).float())
        return pooled.cpu().numpy().astype(np.float32)

    def _encode(self, records: Sequence[Record], batch_size: int, is_query: bool) -> np.ndarray:
        prompt = query_prompt if is_query else document_prompt
        out = np.zeros((len(records), self.dim), np.float32)
        # text-only and image records go in separate forward passes (MllamaProcessor wants images for every sample
        # of a batch that has any)
        text_idx = [i for i, r in enumerate(records) if not r.images]
        image_idx = [i for i, r in enumerate(records) if r.images]
        for idx, with_images in ((text_idx, False), (image_idx, True)):
            for start in range(0, len(idx), batch_size):
                part = idx[start : start + batch_size]
                recs = [records[i] for i in part]
                images = [self._images(r) for r in recs] if with_images else None
                out[part] = self._forward([prompt(r) for r in recs], images)
        return out

    def encode_queries(self, records: Sequence[Record], batch_size: int = 8) -> np.ndarray:
        return self._encode(records, batch_size, is_query=True)

    def encode_documents(self, records: Sequence[Record], batch_size: int = 8) -> np.ndarray:
        return self._encode(records, batch_size, is_query=False)


@register_retriever
class MmE5Retriever(DenseRetriever):
    """mmE5 + a flat inner-product FAISS index (text, images, interleaved)."""

    name = "mme5"

    def __init__(
        self,
        model: str | os.PathLike = MME5_MODEL_ID,
        processor: str | os.PathLike | None = None,
        config: DenseConfig | None = None,
        encoder: MmE5Encoder | None = None,
        device: str | None = None,
        dtype: str = "auto",
        max_length: int = 2048,
        revision: str | None = None,
    ):
        super().__init__(config or DenseConfig(batch_size=8), encoder)
        self.model = os.fspath(model)
        if self.model != "tiny" and os.path.isdir(self.model):
            self.model = os.path.abspath(self.model)
        self.processor = os.fspath(processor) if processor else None
        self.device, self.dtype, self.max_length, self.revision = device, dtype, int(max_length), revision

    def _build_encoder(self) -> MmE5Encoder:
        return MmE5Encoder(
            self.model,
            processor=self.processor,
            device=self.device,
            dtype=self.dtype,
            max_length=self.max_length,
            revision=self.revision,
        )

    def model_identity(self, encoder) -> tuple[str, str | None]:
        """The model id and revision; a local folder's revision is its weights fingerprint (so an index never meets
        queries from other weights in the same folder)."""
        from nyx.index.store import folder_weights_id

        model_id, revision = super().model_identity(encoder)
        if revision is None and Path(model_id).is_dir():
            revision = folder_weights_id(model_id)
        return model_id, revision

    def encoder_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "processor": self.processor,
            "device": self.device,
            "dtype": self.dtype,
            "max_length": self.max_length,
            "revision": self.revision,
        }

    @classmethod
    def _from_saved_config(cls, config: dict[str, Any]) -> MmE5Retriever:
        return cls(
            model=config.get("model", MME5_MODEL_ID),
            processor=config.get("processor"),
            device=config.get("device"),
            dtype=config.get("dtype", "auto"),
            max_length=config.get("max_length", 2048),
            revision=config.get("revision"),
        )


__all__ = ["MME5_MODEL_ID", "MME5_PROCESSOR_ID", "MmE5Encoder", "MmE5Retriever", "document_prompt", "query_prompt"]
