"""Pooling (nyx.model.pooling): the last real token under left and right padding; unit-norm Matryoshka prefixes for
torch and numpy alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nyx.model.pooling import last_token_pool, mrl_truncate, normalize
from tests.tolerances import EPS32, assert_within, rounding_tol


def test_last_token_pool_finds_last_real_token_with_left_and_right_padding():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(last_token_pool(hidden, right), hidden[[0, 1], [2, 4]])
    assert torch.equal(last_token_pool(hidden, left), hidden[[0, 1], [4, 4]])
    with pytest.raises(ValueError, match="no real token"):
        last_token_pool(hidden, torch.zeros(2, 5, dtype=torch.long))


def test_normalize_and_matryoshka_prefixes_have_unit_norm_for_torch_and_numpy():
    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(0))
    for dim in (128, 64, 32, 16):
        t = mrl_truncate(x, dim)
        n = mrl_truncate(x.numpy(), dim)
        assert t.shape == (4, dim) and n.shape == (4, dim) and n.dtype == np.float32
        tol = rounding_tol(EPS32, dim)  # a float32 norm: a sum of `dim` squares
        assert_within("mrl_truncate torch: unit norm", t.norm(dim=-1), np.ones(4), tol)
        assert_within("mrl_truncate numpy: unit norm", np.linalg.norm(n, axis=-1), np.ones(4), tol)
        assert_within("mrl_truncate torch vs numpy", t, n, tol)
    assert_within(
        "mrl_truncate vs normalize of the prefix",
        mrl_truncate(x.numpy(), 16),
        normalize(x.numpy()[:, :16]),
        rounding_tol(EPS32, 16),
    )
    with pytest.raises(ValueError):
        mrl_truncate(x, 256)
