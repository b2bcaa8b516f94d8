"""Batching: seeded global batches of an epoch, each process's slice, the in-batch false-negative mask.

:func:`global_batches` shuffles per epoch (seeded) into global batches that every process slices the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nyx.data.records import Record
from nyx.train.dataset.examples import TrainingExample, content_key


def global_batches(n_examples: int, global_batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of every full global batch of one epoch (seeded shuffle; a short tail is dropped)."""
    if global_batch_size <= 0:
        raise ValueError(f"global batch size must be > 0, got {global_batch_size}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=g).tolist()
    n_full = n_examples // global_batch_size
    return [order[i * global_batch_size : (i + 1) * global_batch_size] for i in range(n_full)]


def local_slice(batch: Sequence[int], rank: int, world_size: int) -> Sequence[int]:
    """The contiguous share of process ``rank`` (rank order = order of the gathered embeddings)."""
    per = len(batch) // world_size
    return batch[rank * per : (rank + 1) * per]


def in_batch_false_negatives(examples: Sequence[TrainingExample]) -> torch.Tensor:
    """``[N, N]`` bool: True where example *j*'s positive is not a negative for example *i* (``j != i``).

    That is when both positives are the same document (same id or same content: two questions written
    from one chunk) or when *j*'s positive is a document judged relevant to *i* (``exclude``). The loss
    leaves those pairs out of the softmax instead of pushing a query away from its own answer.
    """
    ids = [e.positive.id for e in examples]
    keys = [content_key(e.positive) for e in examples]
    n = len(examples)
    mask = torch.zeros((n, n), dtype=torch.bool)
    for i, ex in enumerate(examples):
        for j in range(n):
            if j != i and (ids[j] == ids[i] or keys[j] == keys[i] or ids[j] in ex.exclude):
                mask[i, j] = True
    return mask


def batch_records(examples: Sequence[TrainingExample]) -> tuple[list[Record], list[Record]]:
    """Queries, and documents laid out as [positives..., negatives of query 0..., of query 1..., ...]."""
    queries = [e.query for e in examples]
    docs = [e.positive for e in examples] + [n for e in examples for n in e.negatives]
    return queries, docs
