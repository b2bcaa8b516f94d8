"""Run an iterator ahead of its consumer in a background thread (CPU preprocessing overlapping the model)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(source: Iterator[T], depth: int = 2, name: str = "nyx-prefetch") -> Iterator[T]:
    """Yield ``source``'s items, produced up to ``depth`` items ahead in a daemon thread.

    Order is kept; an exception raised by ``source`` is re-raised here, at the item where it happened.
    Closing the returned generator early (``break``, an error in the consumer, garbage collection) stops
    the producer at its next item and joins it. ``depth <= 0`` returns ``source`` unchanged (no thread).

    The producer overlaps the consumer only while one of them has released the GIL: torch ops, PIL decoding
    and resizing, the Rust tokenizers and large numpy operations do, Python-level work does not.
    """
    if depth <= 0:
        return source
    return _prefetch(source, depth, name)


def _prefetch(source: Iterator[T], depth: int, name: str) -> Iterator[T]:
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(e))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(source, "close", None)
        if close is not None:
            close()


__all__ = ["prefetch"]
