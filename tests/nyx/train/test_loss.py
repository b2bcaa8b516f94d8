"""InfoNCE + Matryoshka loss, the distributed gather, and the gradient cache on a toy encoder."""

from __future__ import annotations

import contextlib
import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nyx.train.gradcache import Backprop, RandContext, cached_step, plain_step
from nyx.train.loss import MatryoshkaInfoNCE, gather_with_grad, info_nce, matryoshka_info_nce
from nyx.utils.batches import chunked
from tests.tolerances import EPS64, assert_within, rounding_tol

#: Every exactness test here runs in float64 (tests/tolerances.py): the loss is dtype-generic, so float64 checks
#: the same code while its rounding (~1e-15) stays far below any real defect on every CPU and thread count.
F64 = torch.float64


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def _loss_tol(n_logits: int, max_logit: float) -> float:
    """Rounding bound of a softmax cross-entropy over ``n_logits`` logits of size up to ``max_logit``."""
    return rounding_tol(EPS64, n_logits, max(1.0, max_logit))


def _ce(logits: list[float], target: int) -> float:
    m = max(logits)
    return -(logits[target] - m - math.log(sum(math.exp(x - m) for x in logits)))


def test_info_nce_matches_hand_computed_2x2_example():
    q = _t([[1.0, 0.0], [0.0, 1.0]])
    p = _t([[0.6, 0.8], [0.8, 0.6]])
    tau = 0.1
    # row 0: q0.p0 = 0.6, q0.p1 = 0.8 (target 0); row 1: q1.p0 = 0.8, q1.p1 = 0.6 (target 1)
    expected = (_ce([6.0, 8.0], 0) + _ce([8.0, 6.0], 1)) / 2
    assert_within("info_nce 2x2 vs hand-computed", info_nce(q, p, temperature=tau).item(), expected, _loss_tol(2, 8.0))
    assert expected == pytest.approx(-math.log(math.exp(6) / (math.exp(6) + math.exp(8))), rel=1e-12)


def test_hard_negatives_are_scored_only_by_their_own_query():
    q = _t([[1.0, 0.0], [0.0, 1.0]])
    p = _t([[0.6, 0.8], [0.8, 0.6]])
    # query 1's negative is identical to query 0: it would dominate query 0's row if it were shared
    n = _t([[[0.0, 1.0]], [[1.0, 0.0]]])
    tau = 0.1
    own_only = (_ce([6.0, 8.0, 0.0], 0) + _ce([8.0, 6.0, 0.0], 1)) / 2
    shared = (_ce([6.0, 8.0, 0.0, 10.0], 0) + _ce([8.0, 6.0, 10.0, 0.0], 1)) / 2
    got = info_nce(q, p, n, temperature=tau).item()
    assert_within("info_nce own hard negatives vs hand-computed", got, own_only, _loss_tol(3, 8.0))
    assert abs(got - shared) > 1.0


def test_masked_false_negative_is_left_out_of_the_softmax_but_the_target_never_is():
    q = _t([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = _t([[0.6, 0.8], [0.8, 0.6], [0.6, 0.8]])  # p2 is the same document as p0
    tau = 0.1
    mask = torch.tensor([[False, False, True], [False, False, False], [True, False, True]])  # diagonal ignored
    # row 0 drops p2, row 2 drops p0; row 1 keeps all three
    expected = (_ce([6.0, 8.0], 0) + _ce([8.0, 6.0, 8.0], 1) + _ce([9.6, 10.0], 1)) / 3
    tol = _loss_tol(3, 10.0)
    assert_within(
        "info_nce masked false negatives vs hand-computed",
        info_nce(q, p, temperature=tau, false_negatives=mask).item(),
        expected,
        tol,
    )
    unmasked = info_nce(q, p, temperature=tau).item()
    assert unmasked > expected + 0.1  # the duplicate pushed query 0 away from its own answer
    out = MatryoshkaInfoNCE([2, 1], [1.0, 0.5], tau)(q, p, false_negatives=mask)
    assert_within("matryoshka masked full dim vs hand-computed", out.per_dim[2].item(), expected, tol)
    with pytest.raises(ValueError, match=r"false_negatives \(2, 2\) must be \[N, N\] with N=3"):
        info_nce(q, p, false_negatives=mask[:2, :2])


def test_matryoshka_total_is_weighted_sum_of_per_dim_losses_on_renormalised_prefixes():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(3, 8, generator=g, dtype=F64), dim=-1)
    p = F.normalize(torch.randn(3, 8, generator=g, dtype=F64), dim=-1)
    n = F.normalize(torch.randn(3, 2, 8, generator=g, dtype=F64), dim=-1)
    out = matryoshka_info_nce(q, p, n, dims=[8, 4, 2], weights=[1.0, 1.0, 0.2], temperature=0.05)
    assert set(out.per_dim) == {8, 4, 2}
    tol = _loss_tol(3 + 3 * 2, 1 / 0.05)  # 3 in-batch + 6 hard-negative logits of size <= 1/tau
    for d in (8, 4, 2):
        ref = info_nce(
            F.normalize(q[:, :d], dim=-1),
            F.normalize(p[:, :d], dim=-1),
            F.normalize(n[..., :d], dim=-1),
            temperature=0.05,
        )
        assert_within("matryoshka per-dim loss vs info_nce on the prefix", out.per_dim[d].item(), ref.item(), tol)
    expected = out.per_dim[8] + out.per_dim[4] + 0.2 * out.per_dim[2]
    assert_within("matryoshka total vs weighted sum", out.total.item(), expected.item(), tol)
    # the weight really enters: changing it changes the total by exactly the weighted difference
    out2 = matryoshka_info_nce(q, p, n, dims=[8, 4, 2], weights=[1.0, 1.0, 1.0], temperature=0.05)
    assert_within(
        "matryoshka weight change vs weighted difference",
        (out2.total - out.total).item(),
        0.8 * out.per_dim[2].item(),
        tol,
    )
    metrics = out.as_metrics()
    assert set(metrics) == {"loss", "loss_dim_8", "loss_dim_4", "loss_dim_2"}


def test_module_equals_function_and_default_is_full_dim_only():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(4, 6, generator=g, dtype=F64), dim=-1)
    p = F.normalize(torch.randn(4, 6, generator=g, dtype=F64), dim=-1)
    mod = MatryoshkaInfoNCE(dims=[6, 3], weights=[1.0, 0.5], temperature=0.02, hidden_size=6)
    fn = matryoshka_info_nce(q, p, dims=[6, 3], weights=[1.0, 0.5], temperature=0.02)
    tol = _loss_tol(4, 1 / 0.02)
    assert_within("matryoshka module vs function", mod(q, p).total.item(), fn.total.item(), tol)
    default = MatryoshkaInfoNCE()(q, p)
    assert list(default.per_dim) == [6]
    assert_within("matryoshka default vs info_nce", default.total.item(), info_nce(q, p).item(), tol)


def test_mrl_dims_larger_than_hidden_size_raise_a_clear_error():
    with pytest.raises(ValueError, match="exceeds the encoder's hidden size 128"):
        MatryoshkaInfoNCE(dims=[2048, 1024], weights=[1, 1], hidden_size=128)
    q = F.normalize(torch.randn(2, 16), dim=-1)
    with pytest.raises(ValueError, match="mrl dim 32 exceeds the encoder's hidden size 16"):
        matryoshka_info_nce(q, q, dims=[32, 16], weights=[1, 1])
    with pytest.raises(ValueError, match="must match mrl dims"):
        MatryoshkaInfoNCE(dims=[16, 8], weights=[1.0])
    with pytest.raises(ValueError, match="temperature"):
        MatryoshkaInfoNCE(temperature=0.0)


def test_gather_without_process_group_is_identity():
    t = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(t) is t


# ----------------------------------------------------------------------------------------------------------
# Gradient cache on a toy encoder
# ----------------------------------------------------------------------------------------------------------


class ToyEncoder(nn.Module):
    """Bag of embeddings -> MLP (optional dropout) -> L2-normalised; inputs are LongTensors [n, L]. float64."""

    def __init__(self, dropout: float = 0.0, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.EmbeddingBag(50, 32, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, dim))
        self.to(F64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.emb(ids)), dim=-1)


def _toy_batch(b: int = 6, k: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randint(0, 50, (b, 5), generator=g)
    docs = torch.randint(0, 50, (b + b * k, 7), generator=g)
    return queries, docs


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _assert_same_step(
    name: str, plain, cached, plain_model: nn.Module, cached_model: nn.Module, record: bool = True
) -> None:
    """Loss and every parameter gradient of the cached step equal the plain step's, within float64 rounding.

    A parameter gradient sums one contribution per encoded row (6 queries + 18 documents = 24 rows), each through
    a loss over 8 logits (6 in-batch + 2 own hard negatives) of size <= 1/tau = 20, so the bound is taken over
    24 * 8 terms of the gradient's size.
    """
    n_rows, n_logits, max_logit = 24, 8, 20.0
    assert_within(
        f"{name}: loss",
        cached.loss.total.item(),
        plain.loss.total.item(),
        rounding_tol(EPS64, n_logits, max_logit),
        record,
    )
    for d, value in plain.loss.per_dim.items():
        assert_within(
            f"{name}: loss dim {d}",
            cached.loss.per_dim[d].item(),
            value.item(),
            rounding_tol(EPS64, n_logits, max_logit),
            record,
        )
    gp, gc = _grads(plain_model), _grads(cached_model)
    assert gp.keys() == gc.keys()
    for param in gp:
        scale = max(float(gp[param].abs().max()), EPS64)
        assert_within(f"{name}: grad", gc[param], gp[param], rounding_tol(EPS64, n_rows * n_logits, scale), record)
    assert all(g.abs().sum() > 0 for g in gc.values())  # every parameter really got a gradient


def _plain_and_cached(chunk: int, dropout: float = 0.0, backprop: Backprop | None = None):
    loss_fn = MatryoshkaInfoNCE(dims=[16, 8], weights=[1.0, 0.2], temperature=0.05)
    queries, docs = _toy_batch()
    plain_model, cached_model = ToyEncoder(dropout), ToyEncoder(dropout)
    torch.manual_seed(123)
    plain = plain_step(plain_model, queries, docs, 6, loss_fn)
    torch.manual_seed(123)
    cached = cached_step(cached_model, chunked(queries, chunk), chunked(docs, chunk), 6, loss_fn, backprop)
    return plain, cached, plain_model, cached_model


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_gradcache_loss_and_gradients_equal_the_plain_step(chunk):
    _assert_same_step(f"gradcache toy chunk={chunk}", *_plain_and_cached(chunk))


def test_gradcache_replays_dropout_masks_so_gradients_match_plain_step():
    """With dropout on and one chunk per role, only the RNG replay makes the second pass equal the first."""
    _assert_same_step("gradcache toy dropout replay", *_plain_and_cached(100, dropout=0.5))


class _SkipsOneChunk(Backprop):
    """A broken replay: the cached gradient of the first chunk is never back-propagated."""

    def __init__(self) -> None:
        self.seen = 0

    def backward(self, tensor, is_last):
        self.seen += 1
        if self.seen > 1:
            super().backward(tensor, is_last)


def test_gradcache_equivalence_check_fails_when_the_replay_is_broken(monkeypatch):
    """The two tests above can fail: one query of 24 rows left out of the replay, or dropout masks not replayed."""
    with pytest.raises(AssertionError, match="grad"):
        _assert_same_step("broken: one chunk skipped", *_plain_and_cached(1, backprop=_SkipsOneChunk()), record=False)
    monkeypatch.setattr(RandContext, "replay", lambda self: contextlib.nullcontext())
    with pytest.raises(AssertionError, match="grad"):
        _assert_same_step("broken: no rng replay", *_plain_and_cached(100, dropout=0.5), record=False)


def test_backprop_hooks_see_every_chunk_and_only_the_last_one_syncs():
    calls: list[tuple[str, bool]] = []

    class Recording(Backprop):
        def sync(self, is_last):
            calls.append(("sync", is_last))
            return super().sync(is_last)

        def backward(self, tensor, is_last):
            calls.append(("backward", is_last))
            super().backward(tensor, is_last)

    queries, docs = _toy_batch(b=4, k=1)
    cached_step(ToyEncoder(), chunked(queries, 2), chunked(docs, 3), 4, MatryoshkaInfoNCE(), Recording())
    backward_flags = [last for kind, last in calls if kind == "backward"]
    assert backward_flags == [False, False, False, False, True]  # 2 query chunks + 3 document chunks (8 rows)
    assert [last for kind, last in calls if kind == "sync"] == backward_flags


# ----------------------------------------------------------------------------------------------------------
# Two processes (gloo): the global loss and the summed gradients equal the one-process ones
# ----------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_case(sizes: list[int]):
    """The full batch of one case: normalised queries, positives and 2 negatives per query."""
    g = torch.Generator().manual_seed(7)
    n = sum(sizes)
    return tuple(
        F.normalize(torch.randn(*shape, generator=g, dtype=F64), dim=-1) for shape in ((n, 8), (n, 8), (n, 2, 8))
    )


_CASES = {"even": [3, 3], "uneven": [3, 2]}


def _dist_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, sizes in _CASES.items():
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            q, p, neg = (t[lo:hi].clone().requires_grad_(True) for t in _dist_case(sizes))
            out = matryoshka_info_nce(q, p, neg, dims=[8, 4], weights=[1.0, 0.5], temperature=0.05)
            out.total.backward()
            torch.save(
                {"loss": out.total.detach(), "gq": q.grad, "gp": p.grad, "gn": neg.grad},
                os.path.join(out_dir, f"{name}-rank{rank}.pt"),
            )
    finally:
        dist.destroy_process_group()


def test_two_process_gather_gives_the_one_process_loss_and_local_gradients(tmp_path):
    """Even and uneven shards: each rank's loss is the global one; its gradients are its slice of the global ones."""
    import torch.multiprocessing as mp

    mp.start_processes(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for name, sizes in _CASES.items():
        q, p, neg = (t.requires_grad_(True) for t in _dist_case(sizes))
        ref = matryoshka_info_nce(q, p, neg, dims=[8, 4], weights=[1.0, 0.5], temperature=0.05)
        ref.total.backward()
        # the global batch: N in-batch + 2 own negatives per row, logits of size <= 1/tau = 20
        n = sum(sizes)
        tol = rounding_tol(EPS64, n * (n + 2), 20.0)
        lo = 0
        for rank, size in enumerate(sizes):
            got = torch.load(tmp_path / f"{name}-rank{rank}.pt")
            assert got["loss"].dtype == F64
            assert_within(f"two-process gather {name}: loss", got["loss"].item(), ref.total.item(), tol)
            sl = slice(lo, lo + size)
            for key, full in (("gq", q.grad), ("gp", p.grad), ("gn", neg.grad)):
                assert_within(f"two-process gather {name}: {key}", got[key], full[sl], tol * float(full.abs().max()))
            lo += size
