"""InfoNCE + Matryoshka loss, the distributed gather, and the gradient cache on a toy encoder."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nyx.train.gradcache import Backprop, cached_step, chunked, plain_step
from nyx.train.loss import MatryoshkaInfoNCE, gather_with_grad, info_nce, matryoshka_info_nce


def _ce(logits: list[float], target: int) -> float:
    m = max(logits)
    return -(logits[target] - m - math.log(sum(math.exp(x - m) for x in logits)))


def test_info_nce_matches_hand_computed_2x2_example():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    tau = 0.1
    # row 0: q0.p0 = 0.6, q0.p1 = 0.8 (target 0); row 1: q1.p0 = 0.8, q1.p1 = 0.6 (target 1)
    expected = (_ce([6.0, 8.0], 0) + _ce([8.0, 6.0], 1)) / 2
    assert info_nce(q, p, temperature=tau).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(-math.log(math.exp(6) / (math.exp(6) + math.exp(8))), rel=1e-9)


def test_hard_negatives_are_scored_only_by_their_own_query():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    # query 1's negative is identical to query 0: it would dominate query 0's row if it were shared
    n = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    tau = 0.1
    own_only = (_ce([6.0, 8.0, 0.0], 0) + _ce([8.0, 6.0, 0.0], 1)) / 2
    shared = (_ce([6.0, 8.0, 0.0, 10.0], 0) + _ce([8.0, 6.0, 10.0, 0.0], 1)) / 2
    got = info_nce(q, p, n, temperature=tau).item()
    assert got == pytest.approx(own_only, rel=1e-6)
    assert abs(got - shared) > 1.0


def test_masked_false_negative_is_left_out_of_the_softmax_but_the_target_never_is():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.6, 0.8]])  # p2 is the same document as p0
    tau = 0.1
    mask = torch.tensor([[False, False, True], [False, False, False], [True, False, True]])  # diagonal ignored
    # row 0 drops p2, row 2 drops p0; row 1 keeps all three
    expected = (_ce([6.0, 8.0], 0) + _ce([8.0, 6.0, 8.0], 1) + _ce([9.6, 10.0], 1)) / 3
    assert info_nce(q, p, temperature=tau, false_negatives=mask).item() == pytest.approx(expected, rel=1e-6)
    unmasked = info_nce(q, p, temperature=tau).item()
    assert unmasked > expected + 0.1  # the duplicate pushed query 0 away from its own answer
    out = MatryoshkaInfoNCE([2, 1], [1.0, 0.5], tau)(q, p, false_negatives=mask)
    assert out.per_dim[2].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"false_negatives \(2, 2\) must be \[N, N\] with N=3"):
        info_nce(q, p, false_negatives=mask[:2, :2])


def test_matryoshka_total_is_weighted_sum_of_per_dim_losses_on_renormalised_prefixes():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    p = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    n = F.normalize(torch.randn(3, 2, 8, generator=g), dim=-1)
    out = matryoshka_info_nce(q, p, n, dims=[8, 4, 2], weights=[1.0, 1.0, 0.2], temperature=0.05)
    assert set(out.per_dim) == {8, 4, 2}
    for d in (8, 4, 2):
        ref = info_nce(F.normalize(q[:, :d], dim=-1), F.normalize(p[:, :d], dim=-1),
                       F.normalize(n[..., :d], dim=-1), temperature=0.05)
        assert out.per_dim[d].item() == pytest.approx(ref.item(), rel=1e-5)
    expected = out.per_dim[8] + out.per_dim[4] + 0.2 * out.per_dim[2]
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
    # the weight really enters: changing it changes the total by exactly the weighted difference
    out2 = matryoshka_info_nce(q, p, n, dims=[8, 4, 2], weights=[1.0, 1.0, 1.0], temperature=0.05)
    assert (out2.total - out.total).item() == pytest.approx(0.8 * out.per_dim[2].item(), rel=1e-5)
    metrics = out.as_metrics()
    assert set(metrics) == {"loss", "loss_dim_8", "loss_dim_4", "loss_dim_2"}


def test_module_equals_function_and_default_is_full_dim_only():
    q = F.normalize(torch.randn(4, 6), dim=-1)
    p = F.normalize(torch.randn(4, 6), dim=-1)
    mod = MatryoshkaInfoNCE(dims=[6, 3], weights=[1.0, 0.5], temperature=0.02, hidden_size=6)
    fn = matryoshka_info_nce(q, p, dims=[6, 3], weights=[1.0, 0.5], temperature=0.02)
    assert mod(q, p).total.item() == pytest.approx(fn.total.item(), rel=1e-6)
    default = MatryoshkaInfoNCE()(q, p)
    assert list(default.per_dim) == [6]
    assert default.total.item() == pytest.approx(info_nce(q, p).item(), rel=1e-6)


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
    """Bag of embeddings -> MLP (optional dropout) -> L2-normalised; inputs are LongTensors [n, L]."""

    def __init__(self, dropout: float = 0.0, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.EmbeddingBag(50, 32, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.emb(ids)), dim=-1)


def _toy_batch(b: int = 6, k: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randint(0, 50, (b, 5), generator=g)
    docs = torch.randint(0, 50, (b + b * k, 7), generator=g)
    return queries, docs


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_gradcache_loss_and_gradients_equal_the_plain_step(chunk):
    loss_fn = MatryoshkaInfoNCE(dims=[16, 8], weights=[1.0, 0.2], temperature=0.05)
    queries, docs = _toy_batch()
    plain_model, cached_model = ToyEncoder(), ToyEncoder()
    plain = plain_step(plain_model, queries, docs, 6, loss_fn)
    cached = cached_step(cached_model, chunked(queries, chunk), chunked(docs, chunk), 6, loss_fn)
    assert cached.loss.total.item() == pytest.approx(plain.loss.total.item(), rel=1e-6)
    for d in (16, 8):
        assert cached.loss.per_dim[d].item() == pytest.approx(plain.loss.per_dim[d].item(), rel=1e-6)
    gp, gc = _grads(plain_model), _grads(cached_model)
    for name in gp:
        assert torch.allclose(gp[name], gc[name], atol=1e-6, rtol=1e-5), name
    assert any(g.abs().sum() > 0 for g in gc.values())


def test_gradcache_replays_dropout_masks_so_gradients_match_plain_step():
    """With dropout on and one chunk per role, only the RNG replay makes the second pass equal the first."""
    loss_fn = MatryoshkaInfoNCE(temperature=0.05)
    queries, docs = _toy_batch()
    plain_model, cached_model = ToyEncoder(dropout=0.5), ToyEncoder(dropout=0.5)
    torch.manual_seed(123)
    plain = plain_step(plain_model, queries, docs, 6, loss_fn)
    torch.manual_seed(123)
    cached = cached_step(cached_model, [queries], [docs], 6, loss_fn)
    assert cached.loss.total.item() == pytest.approx(plain.loss.total.item(), rel=1e-6)
    gp, gc = _grads(plain_model), _grads(cached_model)
    for name in gp:
        assert torch.allclose(gp[name], gc[name], atol=1e-6, rtol=1e-5), name


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
    return (F.normalize(torch.randn(n, 8, generator=g), dim=-1), F.normalize(torch.randn(n, 8, generator=g), dim=-1),
            F.normalize(torch.randn(n, 2, 8, generator=g), dim=-1))


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
            torch.save({"loss": out.total.detach(), "gq": q.grad, "gp": p.grad, "gn": neg.grad},
                       os.path.join(out_dir, f"{name}-rank{rank}.pt"))
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
        lo = 0
        for rank, size in enumerate(sizes):
            got = torch.load(tmp_path / f"{name}-rank{rank}.pt")
            assert got["loss"].item() == pytest.approx(ref.total.item(), rel=1e-6), name
            sl = slice(lo, lo + size)
            assert torch.allclose(got["gq"], q.grad[sl], atol=1e-6), name
            assert torch.allclose(got["gp"], p.grad[sl], atol=1e-6), name
            assert torch.allclose(got["gn"], neg.grad[sl], atol=1e-6), name
            lo += size
