"""Micro-batching for a server: requests that arrive within a short window are processed in one call.

A :class:`MicroBatcher` lives on the server's event loop. :meth:`MicroBatcher.submit` queues one item and waits
for its result; a collector task takes the first queued item, waits up to ``window_ms`` for more (at most
``max_batch`` in all), and hands the batch to ``process`` in a single worker thread, so the event loop stays free
to accept requests while the model runs. Items queued while a batch runs are collected for the next one.

``process(items)`` returns one entry per item, in order: the item's result, or an exception that fails that item
alone. If ``process`` itself raises, every item of the batch gets the exception; the collector goes on with the
next batch either way, so no request can stop the worker.

``window_ms = 0`` turns batching off: every item is processed alone (``max_batch`` is then 1).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

ProcessFn = Callable[[Sequence[T]], Sequence[Any]]


class BatcherClosedError(RuntimeError):
    """The batcher is not running (never started, or shutting down)."""


@dataclass
class BatchStats:
    """What the batcher has done so far (shown by ``/health``)."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    busy_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "items": self.items,
            "largest_batch": self.largest_batch,
            "mean_batch": round(mean, 3),
            "busy_seconds": round(self.busy_seconds, 3),
        }


class MicroBatcher(Generic[T]):
    """Collect concurrent items for ``window_ms`` (up to ``max_batch``) and run ``process`` on them in one thread.

    Start it on the running event loop with :meth:`start`, stop it with :meth:`stop` (queued items then fail
    with :class:`BatcherClosedError`).
    """

    def __init__(self, process: ProcessFn, *, window_ms: float = 5.0, max_batch: int = 32, name: str = "nyx-batch"):
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.process = process
        self.window_s = window_ms / 1000.0
        self.max_batch = max_batch if window_ms > 0 else 1
        self.name = name
        self.stats = BatchStats()
        self._stats_lock = threading.Lock()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def window_ms(self) -> float:
        return self.window_s * 1000.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"{self.name}-collector")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping: nothing to report
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(BatcherClosedError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def submit(self, item: T) -> Any:
        """Queue ``item`` and wait for its result (raises the item's exception)."""
        if not self.running or self._queue is None:
            raise BatcherClosedError("the batcher is not running (the app's lifespan has not started, or it stopped)")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                # whatever is already queued joins at once; then wait out the rest of the window for more
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.done()]  # a caller that went away is skipped
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._run, [item for item, _ in live])
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(BatcherClosedError("the server is shutting down"))
                raise
            except BaseException as e:  # noqa: BLE001 - the executor itself failed: fail this batch, keep going
                results = [e] * len(live)
            for (_, fut), res in zip(live, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _run(self, items: list[T]) -> list[Any]:
        """In the worker thread: one ``process`` call; its failure fails every item, never the worker."""
        t0 = time.perf_counter()
        try:
            results = list(self.process(items))
            if len(results) != len(items):
                raise RuntimeError(f"process returned {len(results)} results for {len(items)} items")
        except Exception as e:  # noqa: BLE001 - reported to every caller of the batch
            log.exception("batch of %d failed", len(items))
            results = [e] * len(items)
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.largest_batch = max(self.stats.largest_batch, len(items))
            self.stats.busy_seconds += time.perf_counter() - t0
        return results


__all__ = ["BatchStats", "BatcherClosedError", "MicroBatcher"]
