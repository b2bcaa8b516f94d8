"""Cutting a sequence or a stream into consecutive chunks of a fixed size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any


def chunked(items: Iterable[Any], size: int) -> Iterator[Any]:
    """Consecutive chunks of ``size`` items, the last one possibly shorter; ``size`` <= 0: one chunk of everything.

    A sliceable sized collection (list, tuple, tensor, array) is cut into slices of its own type; any other
    iterable (a generator, a set) is read lazily into lists, so a stream is never held whole. Empty input yields
    no chunk.
    """
    if not isinstance(items, Mapping) and hasattr(items, "__len__") and hasattr(items, "__getitem__"):
        n = len(items)  # type: ignore[arg-type]
        step = size if 0 < size < n else n
        for start in range(0, n, max(step, 1)):
            yield items[start : start + step]
        return
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
