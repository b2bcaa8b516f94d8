"""Float tolerances for exactness tests that hold on any x86-64 CPU and thread count, and a record of their margins.

Two results that are mathematically equal but computed by another route (chunked vs whole batch, two processes vs
one, batched vs single, a fast kernel vs the stock one) differ by rounding, and how much depends on the CPU's
kernels and the order of each reduction. A tolerance is therefore derived, never guessed:

    tol = SAFETY * n * eps * magnitude

the forward-error bound of an ``n``-term floating-point sum (Higham, *Accuracy and Stability of Numerical
Algorithms*, §4.2: ``|fl(sum) - sum| <= gamma_n * sum|x_i|`` with ``gamma_n ~ n*u``, ``u = eps/2``) on values of
size ``magnitude``, times a safety factor for the few such reductions a test chains. Exactness tests run in
float64 wherever the model allows it (toy models, the tiny Qwen2.5-VL), where this bound sits ~9 orders of
magnitude below any real defect; float32 is kept only where the code under test is float32 by design.

Every check goes through :func:`assert_within`, which records the worst ``|difference| / tolerance`` per check;
the pytest summary prints them (``conftest.py``) and ``NYX_TOLERANCE_REPORT=path.json`` writes them. A ratio
above :data:`THIN_MARGIN` means the margin is too thin to trust on other CPUs.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
EPS64 = float(np.finfo(np.float64).eps)  # 2.22e-16
#: Safety factor over the summation bound, for a handful of chained reductions (matmul, softmax, norm, ...).
SAFETY = 8.0
#: A worst ratio above this on the machine that ran the suite is too thin a margin for other CPUs.
THIN_MARGIN = 0.1

#: check name -> worst |difference| / tolerance seen in this session
MARGINS: dict[str, float] = {}


def rounding_tol(eps: float, n: int, magnitude: float = 1.0, safety: float = SAFETY) -> float:
    """``safety * n * eps * magnitude``: the rounding bound of an ``n``-term sum on values of size ``magnitude``."""
    if n < 1:
        raise ValueError(f"reduction size must be >= 1, got {n}")
    return float(safety * n * eps * magnitude)


#: Embeddings computed in float64 and returned as float32 (the index format): two routes that agree in float64 to
#: ~1e-14 can still round to adjacent float32 values, at most one ulp apart (<= eps32/2 for unit-norm entries < 1).
F32_OUTPUT_TOL = rounding_tol(EPS32, 1)


def _as_float64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def max_abs_diff(actual: Any, expected: Any) -> float:
    a, b = _as_float64(actual), _as_float64(expected)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AssertionError("non-finite values in an exactness check")
    return float(np.abs(a - b).max())


def assert_within(name: str, actual: Any, expected: Any, tol: float, record: bool = True) -> float:
    """Assert ``max|actual - expected| <= tol`` (computed in float64), record the ratio, return it.

    ``record=False`` for checks that a test *expects* to fail (showing that a tolerance can catch a defect).
    """
    if not tol > 0:
        raise ValueError(f"{name}: tolerance must be positive, got {tol}")
    diff = max_abs_diff(actual, expected)
    ratio = diff / tol
    if record:
        MARGINS[name] = max(MARGINS.get(name, 0.0), ratio)
    assert diff <= tol, f"{name}: max |difference| {diff:.3g} exceeds the tolerance {tol:.3g} ({ratio:.1f}x)"
    return ratio


def report_lines() -> list[str]:
    """The worst ratio of each check, worst first, with the ones above :data:`THIN_MARGIN` flagged."""
    lines = []
    for name, ratio in sorted(MARGINS.items(), key=lambda kv: -kv[1]):
        flag = "  <-- thin margin" if ratio > THIN_MARGIN else ""
        lines.append(f"{ratio:10.2e}  {name}{flag}")
    return lines


def write_report(path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(dict(sorted(MARGINS.items())), f, indent=1)
