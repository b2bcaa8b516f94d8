"""One contrastive training step, plain or with a gradient cache (Gao et al., 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup").

A contrastive loss couples every example of the batch, so the batch cannot be split into independent
micro-batches. The gradient cache splits only the *encoder* work:

1. encode every sub-batch (chunk) without autograd, remembering the RNG state before each chunk;
2. compute the loss on the detached embeddings and its gradient with respect to the embeddings;
3. re-encode each chunk with autograd (same RNG state, so the same dropout masks) and back-propagate the
   cached embedding gradient through it (``backward(sum(reps * grad))``).

Peak activation memory is that of one chunk, whatever the batch size; the result equals the plain step.

How a tensor is back-propagated is delegated to a :class:`Backprop` (plain autograd here; the trainer gives
one that goes through accelerate, i.e. DDP ``no_sync`` for all but the last chunk, or the DeepSpeed engine
with gradient-accumulation boundaries). Under torch.distributed the loss is the global one (see
:mod:`nyx.train.loss`) and is back-propagated multiplied by the world size, because DDP and DeepSpeed average
gradients over ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nyx.train.loss import MatryoshkaLossOutput, world_size

#: Maps one chunk of collated model inputs to ``[n, D]`` normalised embeddings with autograd.
EncodeFn = Callable[[Any], Tensor]
#: Maps (queries ``[B, D]``, positives ``[B, D]``, negatives ``[B, K, D]`` or None) to the loss.
LossFn = Callable[[Tensor, Tensor, Tensor | None], MatryoshkaLossOutput]


class Backprop:
    """Plain autograd. ``sync(is_last)`` wraps the forward *and* backward of one chunk (DDP ``no_sync``)."""

    def sync(self, is_last: bool) -> AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, tensor: Tensor, is_last: bool) -> None:
        tensor.backward()


class RandContext:
    """The CPU (and, when used, CUDA) RNG state at capture time; ``replay()`` runs code under that state."""

    def __init__(self) -> None:
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        devices = list(range(len(self.cuda_states))) if self.cuda_states is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu_state)
            if self.cuda_states is not None:
                torch.cuda.set_rng_state_all(self.cuda_states)
            yield


@dataclass
class StepOutput:
    """Loss of the step (global batch) and the number of local examples encoded."""

    loss: MatryoshkaLossOutput
    n_queries: int
    n_documents: int


def _split_docs(doc_reps: Tensor, n_queries: int) -> tuple[Tensor, Tensor | None]:
    """Documents are laid out as ``[B positives, then B*K negatives in query order]``."""
    pos = doc_reps[:n_queries]
    rest = doc_reps[n_queries:]
    if rest.shape[0] == 0:
        return pos, None
    if rest.shape[0] % n_queries:
        raise ValueError(f"{rest.shape[0]} negatives do not divide evenly over {n_queries} queries")
    return pos, rest.view(n_queries, rest.shape[0] // n_queries, rest.shape[-1])


def plain_step(
    encode: EncodeFn,
    query_inputs: Any,
    doc_inputs: Any,
    n_queries: int,
    loss_fn: LossFn,
    backprop: Backprop | None = None,
) -> StepOutput:
    """Encode queries and documents with autograd, compute the loss, back-propagate once.

    ``doc_inputs`` encode the positives first, then the hard negatives grouped by query.
    """
    backprop = backprop or Backprop()
    with backprop.sync(True):
        q = encode(query_inputs)
        d = encode(doc_inputs)
        p, n = _split_docs(d, n_queries)
        out = loss_fn(q, p, n)
        backprop.backward(out.total * world_size(), True)
    return StepOutput(loss=_detached(out), n_queries=q.shape[0], n_documents=d.shape[0])


def cached_step(
    encode: EncodeFn,
    query_chunks: Iterable[Any],
    doc_chunks: Iterable[Any],
    n_queries: int,
    loss_fn: LossFn,
    backprop: Backprop | None = None,
) -> StepOutput:
    """The gradient-cache step over pre-collated chunks (same layout as :func:`plain_step`, chunked, e.g. by
    :func:`nyx.utils.batches.chunked`).

    Equal, within float tolerance, to :func:`plain_step` on the concatenated inputs: same loss, same
    parameter gradients (also with dropout, thanks to the RNG replay).
    """
    backprop = backprop or Backprop()
    q_chunks, d_chunks = list(query_chunks), list(doc_chunks)
    chunks = [*q_chunks, *d_chunks]
    n_q_chunks = len(q_chunks)
    if not q_chunks or not d_chunks:
        raise ValueError("cached_step needs at least one query chunk and one document chunk")

    # 1. encode without autograd, remembering the RNG state of each chunk
    rng_states: list[RandContext] = []
    reps: list[Tensor] = []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(RandContext())
            reps.append(encode(chunk).detach())

    # 2. loss on the detached embeddings; gradient with respect to the embeddings
    leaves = [r.requires_grad_(True) for r in reps]
    q = torch.cat(leaves[:n_q_chunks])
    d = torch.cat(leaves[n_q_chunks:])
    p, n = _split_docs(d, n_queries)
    out = loss_fn(q, p, n)
    scaled = out.total * world_size()
    grads = torch.autograd.grad(scaled, leaves)

    # 3. re-encode each chunk with autograd under its RNG state and back-propagate the cached gradient
    for i, (chunk, state, grad) in enumerate(zip(chunks, rng_states, grads)):
        is_last = i == len(chunks) - 1
        with backprop.sync(is_last):
            with state.replay():
                rep = encode(chunk)
            backprop.backward(torch.sum(rep * grad.to(rep.dtype)), is_last)
    return StepOutput(loss=_detached(out), n_queries=q.shape[0], n_documents=d.shape[0])


def _detached(out: MatryoshkaLossOutput) -> MatryoshkaLossOutput:
    return MatryoshkaLossOutput(total=out.total.detach(), per_dim={k: v.detach() for k, v in out.per_dim.items()})
