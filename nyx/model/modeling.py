"""The torch module a trainer wraps (DDP / DeepSpeed): backbone + last-token pooling + L2 normalisation.

Positions (Qwen's 3-D mRoPE) are computed from the attention mask, so left and right padding give the same
embedding, and a record gives the same embedding alone or in any batch. The vision tower is swapped for its faster
equivalent (:mod:`nyx.model.vision_speedups`) when the module is built.
"""

from __future__ import annotations

from typing import Any

import torch

from nyx.model.pooling import last_token_pool, normalize
from nyx.model.vision_speedups import speed_up_vision_tower


class EmbeddingModel(torch.nn.Module):
    """Backbone + last-token pooling + L2 normalisation: ``forward(**inputs) -> (B, hidden)`` float32.

    ``backbone`` is a ``Qwen2_5_VLForConditionalGeneration`` or a peft model wrapping one (LoRA layers are
    injected in place, so the inner ``Qwen2_5_VLModel`` runs them). The language-model head is never run.
    """

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone
        self.train(backbone.training)  # a new Module starts in training mode; follow the backbone's instead
        speed_up_vision_tower(self.vl_model())

    def vl_model(self) -> Any:
        """The ``Qwen2_5_VLModel`` inside the backbone (under peft's wrapper, if any)."""
        m: Any = self.backbone
        if hasattr(m, "get_base_model"):  # peft
            m = m.get_base_model()
        return m.model  # Qwen2_5_VLModel

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        model = self.vl_model()
        if mm_token_type_ids is None:
            mm_token_type_ids = (input_ids == model.config.image_token_id).to(torch.int32)
        # Positions from the mask: padding (either side) never shifts a sequence's positions.
        position_ids, _ = model.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            attention_mask=attention_mask,
        )
        # With right padding (or none) a causal mask alone is exact for every real token: token i only sees
        # j <= i, all real. Dropping the padding mask lets SDPA run its causal kernel instead of building and
        # applying a (B, 1, L, L) mask; padded positions' outputs change but are never pooled.
        lm_mask = None if _is_right_padded(attention_mask) else attention_mask
        out = model(
            input_ids=input_ids,
            attention_mask=lm_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            use_cache=False,
        )
        pooled = last_token_pool(out.last_hidden_state, attention_mask)
        return normalize(pooled.float())


def _is_right_padded(attention_mask: torch.Tensor) -> bool:
    """True when every row of the mask is ones followed by zeros (right padding, or no padding at all)."""
    mask = attention_mask.to(torch.bool)
    # Right padding <=> the mask never goes 0 -> 1 along a row.
    return not bool((~mask[:, :-1] & mask[:, 1:]).any())


__all__ = ["EmbeddingModel"]
