"""Is the loss falling? The early and late loss of a training run compared, from its logged points."""

from __future__ import annotations

from typing import Any


def loss_trend(points: list[tuple[int, float, float]]) -> dict[str, Any]:
    """Compare the loss early and late in a run, from logged ``(step, loss, epoch)`` points.

    A logged loss is the mean over one batch (or a few): how hard the batch is moves it as much as training does in a
    short run. With two or more complete epochs the comparison is of the *same examples*: the mean loss of the first
    epoch against the last complete one. With fewer, the first and last fifth of the logged values."""
    import math

    if len(points) < 2:
        return {"comparable": False, "reason": f"{len(points)} logged loss value(s), need at least 2"}
    points = sorted(points)
    finite = all(math.isfinite(loss) for _, loss, _ in points)
    by_epoch: dict[int, list[float]] = {}
    for _, loss, epoch in points:
        by_epoch.setdefault(max(0, math.ceil(round(epoch, 6)) - 1), []).append(loss)
    complete = int(math.floor(round(points[-1][2], 6)))
    if complete >= 2:
        first, last = by_epoch[0], by_epoch[complete - 1]
        how = f"mean of epoch 1 vs epoch {complete} (the same examples)"
    else:
        n = max(1, len(points) // 5)
        first, last = [p[1] for p in points[:n]], [p[1] for p in points[-n:]]
        how = f"mean of the first vs last {n} logged value(s)"
    return {
        "comparable": True,
        "finite": finite,
        "first": sum(first) / len(first),
        "last": sum(last) / len(last),
        "how": how,
        "logged": len(points),
    }
