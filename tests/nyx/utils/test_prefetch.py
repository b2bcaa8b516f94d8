"""nyx.utils.prefetch: order, errors at the right item, and a producer that stops when the consumer does."""

from __future__ import annotations

import threading
import time

import pytest

from nyx.utils.prefetch import prefetch


def test_items_come_in_order_and_all_of_them():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))


def test_depth_zero_returns_the_source_without_a_thread():
    source = iter([1, 2])
    assert prefetch(source, depth=0) is source


def test_producer_runs_ahead_in_another_thread_by_at_most_depth_items():
    produced: list[int] = []
    threads: set[str] = set()

    def source():
        for i in range(10):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    it = prefetch(source(), depth=2, name="test-prefetch")
    assert next(it) == 0
    time.sleep(0.3)  # let the producer fill the queue
    # item 0 consumed, items 1-2 queued, item 3 produced and waiting for room
    assert len(produced) == 4
    assert threads == {"test-prefetch"}
    assert list(it) == list(range(1, 10))


def test_an_error_in_the_source_reaches_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("record 3 is broken")

    got = []
    with pytest.raises(ValueError, match="record 3 is broken"):
        for item in prefetch(source(), depth=4):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer_and_closes_the_source():
    closed = threading.Event()
    produced: list[int] = []

    def source():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    before = threading.active_count()
    gen = source()  # held here, so only prefetch's close() (not garbage collection) can run its finally
    it = prefetch(gen, depth=2)
    for item in it:
        if item == 5:
            break
    it.close()
    assert closed.is_set()
    assert len(produced) <= 5 + 1 + 2 + 1  # consumed + in the queue + one waiting for room
    assert threading.active_count() == before
