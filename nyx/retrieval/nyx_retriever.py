"""The Nyx retriever: :class:`~nyx.model.encoder.NyxEncoder` (mixed-modal, Matryoshka) + the FAISS index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nyx.retrieval.base import register_retriever
from nyx.retrieval.dense import DenseConfig, DenseRetriever, Encoder
from nyx.utils.io import file_sha256


@register_retriever
class NyxRetriever(DenseRetriever):
    """Embeds interleaved text and images with Nyx; searchable at any of the model's Matryoshka dims.

    ``model`` is anything ``NyxEncoder.from_pretrained`` takes: ``"tiny"``, ``"paper"``, a local model folder or a
    hub id; ``adapter_path`` an optional LoRA adapter folder; ``mlflow_model_version`` the registry version the
    model was downloaded from (recorded in the index manifest).
    """

    name = "nyx"

    def __init__(
        self,
        model: str | os.PathLike = "tiny",
        adapter_path: str | os.PathLike | None = None,
        config: DenseConfig | None = None,
        encoder: Encoder | None = None,
        device: str | None = None,
        mlflow_model_version: str | None = None,
        encoder_overrides: dict[str, Any] | None = None,
    ):
        super().__init__(config, encoder)
        self._mlflow_model_version = mlflow_model_version
        #: EncoderConfig fields set by the pipeline (the profile's pixel budget), saved with the retriever
        self.encoder_overrides = dict(encoder_overrides or {})
        self.model = os.fspath(model)
        if self.model != "tiny" and os.path.isdir(self.model):
            self.model = os.path.abspath(self.model)
        self.adapter_path = os.path.abspath(os.fspath(adapter_path)) if adapter_path else None
        self.device = device

    def _build_encoder(self) -> Encoder:
        from nyx.model.encoder import NyxEncoder

        return NyxEncoder.from_pretrained(
            self.model,
            adapter_path=self.adapter_path,
            device=self.device,
            show_progress=False,
            **self.encoder_overrides,
        )

    def model_identity(self, encoder: Encoder) -> tuple[str, str | None]:
        """The backbone's id and revision; with an adapter, its folder joins the id and a hash of its
        weights the revision, so an index never meets queries from a different fine-tune."""
        model_id, revision = super().model_identity(encoder)
        adapter = self.adapter_path or getattr(encoder, "adapter_path", None)
        if adapter:
            adapter = os.path.abspath(adapter)
            model_id = f"{model_id}+adapter:{adapter}"
            weights = sorted(Path(adapter).glob("adapter_model.*"))
            digest = file_sha256(weights[0])[:16] if weights else "unknown"
            revision = f"{revision or 'base'}+adapter:{digest}"
        return model_id, revision

    def mlflow_model_version(self) -> str | None:
        return self._mlflow_model_version

    def mrl_dims(self) -> list[int]:
        enc = self.encoder
        dims = getattr(getattr(enc, "profile", None), "mrl_dims", None)
        return [int(d) for d in dims] if dims else [enc.dim]

    def encoder_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "adapter_path": self.adapter_path,
            "device": self.device,
            "mlflow_model_version": self._mlflow_model_version,
            "encoder_overrides": self.encoder_overrides,
        }

    @classmethod
    def _from_saved_config(cls, config: dict[str, Any]) -> NyxRetriever:
        return cls(
            model=config.get("model", "tiny"),
            adapter_path=config.get("adapter_path"),
            device=config.get("device"),
            mlflow_model_version=config.get("mlflow_model_version"),
            encoder_overrides=config.get("encoder_overrides"),
        )
