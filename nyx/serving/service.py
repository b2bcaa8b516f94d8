"""The service behind the app: the current model (swapped in one assignment), the batcher, and the alias poller
that hot-swaps in a new registry version when the alias moves (the old model serves until the new one is loaded)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from nyx.serving.batching import MicroBatcher
from nyx.serving.config import ServeSettings
from nyx.serving.jobs import Job, process_jobs
from nyx.serving.loading import LoadedModel, load_folder, load_registry_version, registry_client, resolve_version
from nyx.serving.source import Source

log = logging.getLogger("nyx.serving.server")  # one logger name for the whole service (what operators filter on)


class SearchService:
    """What the app serves: :attr:`current` (swapped atomically), the batcher, and the alias poller."""

    def __init__(
        self,
        source: Source,
        settings: ServeSettings,
        corpus: str | os.PathLike | None = None,
        tracking_uri: str | None = None,
        warm_up: bool = True,
    ):
        self.source = source
        self.settings = settings
        self.corpus = corpus
        self.tracking_uri = tracking_uri
        self.warm_up = warm_up
        self.started_at = time.time()
        self.batcher: MicroBatcher[Job] = MicroBatcher(
            process_jobs, window_ms=settings.batch_window_ms, max_batch=settings.max_batch, name="nyx-serve"
        )
        self.swaps = 0
        self.last_poll: float | None = None
        self.last_error: dict[str, Any] | None = None
        self._client = None
        self._poller: asyncio.Task | None = None
        self.current: LoadedModel = self._load_initial()

    @property
    def client(self):
        if self._client is None:
            self._client = registry_client(self.tracking_uri)
        return self._client

    def _load_initial(self) -> LoadedModel:
        if not self.source.is_registry:
            model = load_folder(self.source, self.corpus, warm_up=self.warm_up)
        else:
            model = self._load_version(resolve_version(self.client, self.source), strict_documents=True)
        log.info(
            "serving %s: %s retriever, %d documents, dims %s%s",
            self.source.raw,
            model.retriever.name,
            model.retriever.num_docs,
            model.retriever.dims,
            f", version {model.model_version}" if model.model_version else "",
        )
        return model

    def _load_version(self, version: str, strict_documents: bool = False) -> LoadedModel:
        return load_registry_version(
            self.client, self.source, version, self.corpus, warm_up=self.warm_up, strict_documents=strict_documents
        )

    async def start(self) -> None:
        await self.batcher.start()
        if self.source.is_alias and self.settings.poll_seconds > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="nyx-serve-alias-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._poller = None
        await self.batcher.stop()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            await self.check_alias()

    async def check_alias(self) -> bool:
        """Swap in the alias's version if it moved (loaded in a thread; the old model serves meanwhile).
        Returns whether a swap happened; failures are logged and the old model keeps serving."""
        self.last_poll = time.time()
        try:
            version = await asyncio.to_thread(resolve_version, self.client, self.source)
        except Exception as e:  # noqa: BLE001
            log.warning("alias check failed, still serving version %s: %s", self.current.model_version, e)
            self.last_error = {"at": self.last_poll, "version": None, "error": str(e)}
            return False
        old = self.current
        if version == old.model_version:
            return False
        log.info(
            "%s moved from version %s to %s: loading it in the background", self.source.raw, old.model_version, version
        )
        try:
            new = await asyncio.to_thread(self._load_version, version)
        except Exception as e:  # noqa: BLE001 - anything: the old model keeps serving
            log.error(
                "could not load %s version %s, still serving version %s: %s",
                self.source.name,
                version,
                old.model_version,
                e,
            )
            self.last_error = {"at": self.last_poll, "version": version, "error": str(e)}
            return False
        self.current = new  # one assignment: requests that already hold `old` finish on it
        self.swaps += 1
        self.last_error = None
        log.info(
            "now serving %s version %s (was %s; loaded in %.1f s)",
            self.source.name,
            version,
            old.model_version,
            new.load_seconds,
        )
        return True

    def health(self) -> dict[str, Any]:
        s = self.settings
        return {
            "status": "ok",
            **self.current.info(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "batching": {
                "window_ms": self.batcher.window_ms,
                "max_batch": self.batcher.max_batch,
                **self.batcher.stats.to_json(),
            },
            "hot_swap": {
                "enabled": self.source.is_alias and s.poll_seconds > 0,
                "poll_seconds": s.poll_seconds,
                "swaps": self.swaps,
                "last_poll": self.last_poll,
                "last_error": self.last_error,
            },
            "limits": {
                "max_request_bytes": s.max_request_bytes,
                "max_image_bytes": s.max_image_bytes,
                "max_image_pixels": s.max_image_pixels,
                "max_k": s.max_k,
            },
        }
