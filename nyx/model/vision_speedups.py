"""Vision-tower speed-ups for ``Qwen2_5_VLModel``: same weights, same maths, fewer and faster kernels.

* :func:`speed_up_vision_tower` swaps (in place, by ``__class__``) the patch embedding for one matrix product and the
  vision attention for one SDPA call per distinct window length; :class:`~nyx.model.modeling.EmbeddingModel` applies
  it to every backbone it wraps;
* :func:`compile_backbone` ``torch.compile``\\ s the regular, hot parts of the model in place
  (``EncoderConfig.compile``);
* :func:`cpu_supports_bf16` tells whether bf16 autocast pays off on this CPU (``EncoderConfig.autocast``).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionPatchEmbed,
    Qwen2_5_VLVisionAttention,
    apply_rotary_pos_emb_vision,
)


class _MatmulPatchEmbed(Qwen2_5_VisionPatchEmbed):
    """The patch embedding as one matrix product.

    The original ``Conv3d`` has kernel == stride == the whole flattened patch, so it is exactly
    ``patches @ W.view(out, -1).T``; oneDNN's 3-D convolution is 5-7x slower than that matmul on CPU
    (measured: 6720 patches, 96 ms vs 14 ms on one core). Weights, state-dict keys and outputs (to float
    rounding, ~4e-6) are unchanged.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        return torch.nn.functional.linear(
            hidden_states.to(dtype=weight.dtype).reshape(-1, weight[0].numel()), weight.reshape(weight.shape[0], -1)
        )


class _GroupedVisionAttention(Qwen2_5_VLVisionAttention):
    """Vision attention over ``cu_seqlens`` chunks with one SDPA call per distinct chunk length.

    Without flash-attention, transformers runs one SDPA call per chunk (per window in the windowed layers,
    per image in the full-attention ones) in a Python loop. Chunks of equal length (most windows of a
    batch) are independent problems of the same shape, so they are stacked and solved in one call: the
    same maths, fewer calls. Flash-attention configurations keep the parent's varlen path.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        max_seqlen: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.config._attn_implementation != "sdpa":
            return super().forward(
                hidden_states, cu_seqlens, position_embeddings=position_embeddings, max_seqlen=max_seqlen, **kwargs
            )
        seq_length = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = cast("tuple[torch.Tensor, torch.Tensor]", position_embeddings)  # given on the sdpa path
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)  # (S, heads, head_dim)
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        starts = cu_seqlens[:-1].tolist()
        out = torch.empty_like(q)
        dropout = self.attention_dropout if self.training else 0.0
        by_length: dict[int, list[int]] = {}
        for start, n in zip(starts, lengths):
            if n > 0:
                by_length.setdefault(n, []).append(start)
        for n, group in by_length.items():
            # (chunks, n) token indices -> (chunks, heads, n, head_dim)
            idx = (
                torch.tensor(group, device=q.device).unsqueeze(1) + torch.arange(n, device=q.device).unsqueeze(0)
            ).reshape(-1)
            qs, ks, vs = (
                t.index_select(0, idx).reshape(len(group), n, self.num_heads, -1).transpose(1, 2) for t in (q, k, v)
            )
            o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout, scale=self.scaling)
            out.index_copy_(0, idx, o.transpose(1, 2).reshape(len(group) * n, self.num_heads, -1))
        return self.proj(out.reshape(seq_length, -1))


def speed_up_vision_tower(vl_model: torch.nn.Module) -> None:
    """Swap the vision tower's patch embedding and attention for the faster equivalents above, in place.

    Only modules of exactly the stock transformers classes are swapped (a ``Qwen2_5_VLModel`` from another
    version or a custom subclass is left alone); parameters and state-dict keys do not change.
    """
    visual = getattr(vl_model, "visual", None)
    if visual is None:
        return
    if type(getattr(visual, "patch_embed", None)) is Qwen2_5_VisionPatchEmbed:
        visual.patch_embed.__class__ = _MatmulPatchEmbed
    for block in getattr(visual, "blocks", []):
        if type(getattr(block, "attn", None)) is Qwen2_5_VLVisionAttention:
            block.attn.__class__ = _GroupedVisionAttention


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates
    them and bf16 autocast is slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def compile_backbone(vl_model: torch.nn.Module, dynamic: bool = True) -> list[str]:
    """``torch.compile`` the regular, hot parts of a ``Qwen2_5_VLModel`` in place (``nn.Module.compile``:
    parameters and state-dict keys are unchanged): every language-model decoder layer, and the vision tower's
    block MLPs, norms and patch merger. The data-dependent glue (mRoPE positions, vision windows, the grouped
    vision attention's per-length loop) stays eager. ``dynamic=True``: one graph for every batch shape.
    Returns the names of the compiled modules."""
    names: list[str] = []
    targets: list[tuple[str, torch.nn.Module]] = []
    lm = getattr(vl_model, "language_model", None)
    for i, layer in enumerate(getattr(lm, "layers", [])):
        targets.append((f"language_model.layers.{i}", layer))
    visual: Any = getattr(vl_model, "visual", None)
    for i, block in enumerate(getattr(visual, "blocks", [])):
        for part in ("norm1", "norm2", "mlp"):
            if getattr(block, part, None) is not None:
                targets.append((f"visual.blocks.{i}.{part}", getattr(block, part)))
    if getattr(visual, "merger", None) is not None:
        targets.append(("visual.merger", visual.merger))
    for name, module in targets:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile(dynamic=dynamic)
        names.append(name)
    return names


__all__ = ["compile_backbone", "cpu_supports_bf16", "speed_up_vision_tower"]
