"""InfoNCE with in-batch, cross-device and hard negatives, at several Matryoshka prefix sizes.

For query *i* of the global batch (all processes together) the logits are::

    [ q_i · p_j / tau  for every positive j of the global batch ]  +  [ q_i · n_ik / tau  for its own K hard negatives ]

and the target is ``j = i``. Hard negatives of other queries are never scored against query *i*. An in-batch
positive ``p_j`` that is not a negative of query *i* (the same document as ``p_i``, or another document judged
relevant to query *i*) is left out of its softmax when the caller passes that ``[N, N]`` ``false_negatives``
mask (the trainer builds it with :func:`nyx.train.dataset.in_batch_false_negatives`).

Matryoshka representation learning (MRL): the same loss is computed on the first ``d`` dimensions of every
embedding (re-normalised) for each configured ``d``, and the weighted sum is the training objective (paper:
dims {2048, 1024, 512, 256}, weights {1, 1, 0.2, 0.2}).

Distributed training: :func:`gather_with_grad` all-gathers the embeddings of every process; the local shard
keeps its autograd graph, the others are constants. Each process then computes the *global* loss (same value
on every rank, equal to the one-process loss on the concatenated batch), whose gradient with respect to the
local embeddings is exact. Summing those local contributions over the ranks gives the full gradient; since
DDP and DeepSpeed *average* gradients, the backward pass must use ``loss * world_size()`` (done by
:mod:`nyx.train.gradcache`, the one place that calls backward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from nyx.train.config import DEFAULT_TEMPERATURE


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every process along dim 0, in rank order; the local shard keeps its gradient.

    Shards may differ in size (a short last batch): sizes are exchanged first and the shards padded for
    ``all_gather``. Without an initialised process group, returns ``t`` unchanged.
    """
    if world_size() == 1:
        return t
    rank, world = dist.get_rank(), dist.get_world_size()
    t = t.contiguous()
    n_local = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes_t = [torch.zeros_like(n_local) for _ in range(world)]
    dist.all_gather(sizes_t, n_local)
    sizes = [int(s.item()) for s in sizes_t]
    n_max = max(sizes)
    padded = t.detach()
    if t.shape[0] < n_max:
        padded = torch.cat([padded, padded.new_zeros((n_max - t.shape[0], *t.shape[1:]))])
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    shards = [s[:n] for s, n in zip(shards, sizes)]
    shards[rank] = t  # keep the autograd graph of the local embeddings
    return torch.cat(shards, dim=0)


def validate_mrl(dims: Sequence[int], weights: Sequence[float], hidden_size: int | None = None) -> None:
    """Raise ``ValueError`` with a clear message when Matryoshka dims/weights are unusable."""
    if not dims:
        raise ValueError("mrl dims must list at least one embedding size")
    if len(weights) != len(dims):
        raise ValueError(
            f"mrl weights ({len(weights)}: {list(weights)}) must match mrl dims ({len(dims)}: {list(dims)})"
        )
    if len(set(dims)) != len(dims):
        raise ValueError(f"mrl dims must be distinct, got {list(dims)}")
    for d in dims:
        if not isinstance(d, int) or d <= 0:
            raise ValueError(f"mrl dim {d!r} must be a positive integer")
        if hidden_size is not None and d > hidden_size:
            raise ValueError(
                f"mrl dim {d} exceeds the encoder's hidden size {hidden_size} (dims {list(dims)}); "
                f"use dims <= {hidden_size}, e.g. a profile's mrl_dims"
            )
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"mrl weights must be >= 0 with at least one > 0, got {list(weights)}")


def _prefix(x: Tensor, dim: int) -> Tensor:
    """The first ``dim`` features, L2-re-normalised (an MRL sub-embedding)."""
    from nyx.model.pooling import mrl_truncate

    return mrl_truncate(x, dim)


def info_nce(
    q: Tensor,
    p: Tensor,
    negatives: Tensor | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    false_negatives: Tensor | None = None,
) -> Tensor:
    """Mean InfoNCE of ``q[i]`` against all of ``p`` (target ``p[i]``) plus its own ``negatives[i]``.

    Args:
        q: ``[N, D]`` query embeddings (normalised).
        p: ``[N, D]`` positive document embeddings; ``p[i]`` belongs to ``q[i]``, the rest are in-batch negatives.
        negatives: ``[N, K, D]`` hard negatives of each query (``K`` may be 0), or None.
        temperature: softmax temperature ``tau``.
        false_negatives: ``[N, N]`` bool, True where ``p[j]`` must not count as a negative of ``q[i]``
            (the diagonal is ignored: the target is always scored).
    """
    if q.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"queries {tuple(q.shape)} and positives {tuple(p.shape)} must both be [N, D]")
    logits = q @ p.T
    if false_negatives is not None:
        n = q.shape[0]
        if tuple(false_negatives.shape) != (n, n):
            raise ValueError(f"false_negatives {tuple(false_negatives.shape)} must be [N, N] with N={n}")
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(false_negatives.to(logits.device, torch.bool) & off_diagonal, float("-inf"))
    if negatives is not None and negatives.shape[1] > 0:
        if negatives.ndim != 3 or negatives.shape[0] != q.shape[0] or negatives.shape[2] != q.shape[1]:
            raise ValueError(f"negatives {tuple(negatives.shape)} must be [N={q.shape[0]}, K, D={q.shape[1]}]")
        hard = torch.einsum("nd,nkd->nk", q, negatives)
        logits = torch.cat([logits, hard], dim=1)
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits.to(loss_dtype(logits.dtype)) / temperature, target)


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The softmax runs in at least float32 (bf16/fp16 embeddings are upcast; float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class MatryoshkaLossOutput:
    """The weighted total and the unweighted loss at each prefix size (all scalars with autograd)."""

    total: Tensor
    per_dim: dict[int, Tensor]

    def as_metrics(self) -> dict[str, float]:
        """Plain floats for logging: ``loss`` and ``loss_dim_{d}``."""
        out = {"loss": float(self.total.detach())}
        out.update({f"loss_dim_{d}": float(v.detach()) for d, v in self.per_dim.items()})
        return out


def matryoshka_info_nce(
    q: Tensor,
    p: Tensor,
    negatives: Tensor | None = None,
    *,
    dims: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: bool = True,
    false_negatives: Tensor | None = None,
) -> MatryoshkaLossOutput:
    """Weighted sum over prefix sizes of :func:`info_nce` on the global batch.

    Args:
        q, p: ``[n, D]`` local query / positive embeddings; negatives: ``[n, K, D]`` or None.
        dims: prefix sizes (None: only the full size ``D``); validated against ``D``.
        weights: one weight per dim (None: all 1).
        gather: all-gather across processes when torch.distributed is initialised.
        false_negatives: ``[N, N]`` mask over the *global* batch (every process passes the same one).
    """
    hidden = q.shape[-1]
    dims = list(dims) if dims is not None else [hidden]
    weights = list(weights) if weights is not None else [1.0] * len(dims)
    validate_mrl(dims, weights, hidden)
    if gather:
        q, p = gather_with_grad(q), gather_with_grad(p)
        if negatives is not None:
            negatives = gather_with_grad(negatives)
    per_dim: dict[int, Tensor] = {}
    total = q.new_zeros((), dtype=loss_dtype(q.dtype))
    for d, w in zip(dims, weights):
        qd, pd = (q, p) if d == hidden else (_prefix(q, d), _prefix(p, d))
        nd = negatives if negatives is None or d == hidden else _prefix(negatives, d)
        per_dim[d] = info_nce(qd, pd, nd, temperature, false_negatives)
        total = total + w * per_dim[d]
    return MatryoshkaLossOutput(total=total, per_dim=per_dim)


class MatryoshkaInfoNCE(nn.Module):
    """:func:`matryoshka_info_nce` with fixed settings; ``hidden_size`` (when known) is checked at construction."""

    def __init__(
        self,
        dims: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        hidden_size: int | None = None,
        gather: bool = True,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.dims = list(dims) if dims is not None else None
        self.weights = list(weights) if weights is not None else (None if dims is None else [1.0] * len(dims))
        if self.dims is not None:
            validate_mrl(self.dims, self.weights or [], hidden_size)
        self.temperature = temperature
        self.gather = gather

    def forward(
        self, q: Tensor, p: Tensor, negatives: Tensor | None = None, false_negatives: Tensor | None = None
    ) -> MatryoshkaLossOutput:
        return matryoshka_info_nce(
            q,
            p,
            negatives,
            dims=self.dims,
            weights=self.weights,
            temperature=self.temperature,
            gather=self.gather,
            false_negatives=false_negatives,
        )

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}, temperature={self.temperature}, gather={self.gather}"
