"""The model layer: profiles (tiny, paper), the Qwen2.5-VL processor, pooling, the collator and the encoder.

Heavy modules (torch, transformers) load on first use of an attribute, so ``import nyx.model`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NyxQwenProcessor": "nyx.model.processor",
    "load_processor": "nyx.model.processor",
    "ModelProfile": "nyx.model.backbone",
    "resolve_profile": "nyx.model.backbone",
    "ensure_tiny_model": "nyx.model.tiny",
    "load_backbone": "nyx.model.backbone",
    "load_profile_processor": "nyx.model.backbone",
    "last_token_pool": "nyx.model.pooling",
    "normalize": "nyx.model.pooling",
    "mrl_truncate": "nyx.model.pooling",
    "NyxEncoder": "nyx.model.encoder",
    "EncoderConfig": "nyx.model.config",
    "QueryTemplate": "nyx.model.templates",
    "EmbeddingModel": "nyx.model.modeling",
    "NyxCollator": "nyx.model.collator",
    "read_shards": "nyx.model.encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nyx.model' has no attribute {name!r}")
