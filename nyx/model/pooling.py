"""Pooling and normalisation of embeddings (the one place in Nyx where this happens).

* :func:`last_token_pool` — the hidden state of the last real (non-padding) token, what the paper calls the
  <EOS> embedding. ``(arange(L) * mask).argmax(1)`` finds that position for left *and* right padding
  (``hidden[:, -1]`` is wrong with right padding).
* :func:`normalize` — L2 normalisation; similarity is then the inner product.
* :func:`mrl_truncate` — a Matryoshka prefix of the embedding, re-normalised.

``normalize`` and ``mrl_truncate`` accept torch tensors and numpy arrays and return the same kind.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", torch.Tensor, np.ndarray)

_EPS = 1e-12


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden[b, last real position of b]`` for ``hidden`` (B, L, D) and ``attention_mask`` (B, L)."""
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden (B, L, D) and mask (B, L), got {tuple(hidden.shape)} and {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(torch.long)
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("a sequence in the batch has no real token (all-zero attention mask)")
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    last = (positions * mask).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


def normalize(emb: Array, eps: float = _EPS) -> Array:
    """L2-normalise along the last axis (torch: keeps autograd; numpy: float32 unless float64 given)."""
    if isinstance(emb, torch.Tensor):
        return torch.nn.functional.normalize(emb, p=2, dim=-1, eps=eps)
    arr = np.asarray(emb)
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32, copy=False)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return arr / np.maximum(norms, eps)


def mrl_truncate(emb: Array, dim: int | None) -> Array:
    """The first ``dim`` components re-normalised (a Matryoshka prefix); ``None`` or the full size: normalised."""
    size = emb.shape[-1]
    if dim is None or dim == size:
        return normalize(emb)
    if not 0 < dim <= size:
        raise ValueError(f"Matryoshka dimension {dim} outside 1..{size}")
    return normalize(emb[..., :dim])
