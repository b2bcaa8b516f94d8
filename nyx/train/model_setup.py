"""The model a training run trains: the :class:`~nyx.model.encoder.NyxEncoder` loaded in float32 with the run's input
settings, gradient checkpointing, and LoRA / DoRA on the backbone (a new adapter, or ``init_adapter`` continued)
or full fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nyx.train.config import LoraSettings, TrainConfig

if TYPE_CHECKING:
    from nyx.model.encoder import NyxEncoder


def prepare_for_training(
    encoder: NyxEncoder, lora: LoraSettings, *, gradient_checkpointing: bool, init_adapter: str | None = None
) -> NyxEncoder:
    """Gradient checkpointing (when asked), then LoRA on the backbone (when ``lora.enabled``: ``init_adapter``
    loaded trainable, or a new adapter from ``lora``), and the encoder put in train mode."""
    backbone: Any = encoder.backbone
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora.enabled:
        from peft import LoraConfig, PeftModel, get_peft_model

        if init_adapter:
            backbone = PeftModel.from_pretrained(backbone, init_adapter, is_trainable=True)
        else:
            backbone = get_peft_model(
                backbone,
                LoraConfig(
                    r=lora.rank,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    use_dora=lora.use_dora,
                    target_modules=lora.target_modules,
                    bias="none",
                ),
            )
        encoder.module.backbone = backbone
    encoder.module.train()
    return encoder


def load_encoder(cfg: TrainConfig, device: torch.device) -> NyxEncoder:
    """``cfg.model`` on ``device`` in float32 (``max_length`` / pixel budget from ``cfg`` when set), prepared for
    training as ``cfg`` asks (:func:`prepare_for_training`)."""
    from nyx.model.encoder import NyxEncoder

    overrides: dict[str, Any] = {"show_progress": False}
    for key in ("max_length", "max_pixels", "min_pixels"):
        if getattr(cfg, key) is not None:
            overrides[key] = getattr(cfg, key)
    encoder = NyxEncoder.from_pretrained(cfg.model, device=device, dtype="float32", **overrides)
    return prepare_for_training(
        encoder, cfg.lora, gradient_checkpointing=cfg.gradient_checkpointing, init_adapter=cfg.init_adapter
    )
