"""Downloading URLs into an open store: a pool of async workers over one ``httpx`` client, a rate limit per
host, retries with backoff, and each body sniffed with PIL before it is stored under its hash.

**Outcomes** (``reason`` of a failed URL): ``http_<status>`` (``http_404``, ``http_500``, ...), ``timeout`` (no
complete response within ``timeout`` seconds, headers to last byte), ``connection_error``, ``too_large`` (declared
or streamed body over ``max_bytes``; the download is aborted there), ``not_an_image`` (empty body, or bytes PIL does
not recognise as an image: an HTML error page served as ``.jpg``), ``too_many_redirects``, ``bad_url``,
``decoding_error``. Transient failures (5xx, 429, 408, ``timeout``, ``connection_error``) are retried within a run
with exponential backoff (``backoff``, doubling, at most ``max_backoff``; a ``Retry-After`` header is honoured up
to that), up to ``retries`` more attempts; others (4xx, ``too_large``, ``not_an_image``...) are final at once. A
URL still failing transiently at the end of a run is tried again on later runs, up to ``transient_runs`` runs in
all; then its failure is final too. Every request, retries included, waits for its host's rate limit
(``per_host_rate`` requests per second per host name); at most ``concurrency`` downloads are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from nyx.data.fetch.config import FetchConfig, FetchResult, Progress
from nyx.data.fetch.store import ImageStore

_FORMAT_EXT = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "AVIF": ".avif",
}
_MAX_DETAIL = 300


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def _clip(s: str, n: int = _MAX_DETAIL) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "..."


class _HostLimiter:
    """Spaces the starts of requests to one host by ``1 / rate`` seconds (slots are reserved in order)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}

    async def wait(self, host: str) -> None:
        if not self.interval:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next.get(host, now))  # single-threaded loop: no lock needed between these lines
        self._next[host] = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def sniff_image_file(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, extension)`` of an image file, read from its header with PIL; ``ValueError`` if it is none."""
    from PIL import Image, UnidentifiedImageError

    Image.init()
    formats = [f for f in _FORMAT_EXT if f in Image.OPEN]
    try:
        with Image.open(path, formats=formats) as im:
            fmt, (w, h) = im.format or "", im.size
    except UnidentifiedImageError:
        raise ValueError("not a recognised image format") from None
    except Exception as e:  # noqa: BLE001 - corrupt headers raise anything (SyntaxError, struct.error, ...)
        raise ValueError(f"unreadable image header ({type(e).__name__}: {e})") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image declares size {w}x{h}")
    return fmt, _FORMAT_EXT.get(fmt, "." + fmt.lower())


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


async def _attempt(client: Any, url: str, store: ImageStore, cfg: FetchConfig) -> tuple[FetchResult, float | None]:
    """One GET of ``url``: the result and the server's ``Retry-After`` (seconds) if it sent one."""
    import httpx

    def fail(reason: str, detail: str, status: int | None = None) -> FetchResult:
        return FetchResult(url=url, ok=False, reason=reason, detail=_clip(detail), http_status=status)

    tmp: str | None = None
    retry_after = None
    try:
        try:
            async with asyncio.timeout(cfg.timeout):
                async with client.stream("GET", url) as resp:
                    status = resp.status_code
                    if status >= 400:
                        retry_after = _retry_after(resp.headers.get("retry-after"))
                        return fail(f"http_{status}", f"HTTP {status} {resp.reason_phrase}", status), retry_after
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
                        return fail("too_large", f"Content-Length {declared} > max_bytes {cfg.max_bytes}", status), None
                    ctype = resp.headers.get("content-type", "?")
                    fd, tmp = tempfile.mkstemp(dir=store.tmp, suffix=".part")
                    digest, size, head = hashlib.sha256(), 0, b""
                    with os.fdopen(fd, "wb") as f:
                        async for chunk in resp.aiter_bytes():
                            size += len(chunk)
                            if size > cfg.max_bytes:
                                return fail(
                                    "too_large",
                                    f"body over max_bytes {cfg.max_bytes} (download aborted at {size} bytes)",
                                    status,
                                ), None
                            if len(head) < 64:
                                head += chunk[: 64 - len(head)]
                            digest.update(chunk)
                            f.write(chunk)
        except (TimeoutError, httpx.TimeoutException) as e:
            return fail("timeout", f"no complete response within {cfg.timeout:g} s ({type(e).__name__})"), None
        except httpx.TooManyRedirects as e:
            return fail("too_many_redirects", str(e)), None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            return fail("bad_url", f"{type(e).__name__}: {e}"), None
        except httpx.DecodingError as e:
            return fail("decoding_error", f"{type(e).__name__}: {e}"), None
        except httpx.TransportError as e:  # connect/read/write errors, protocol errors, proxies
            return fail("connection_error", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__), None
        if size == 0:
            return fail("not_an_image", f"empty body (HTTP {status}, Content-Type {ctype})", status), None
        try:
            fmt, ext = sniff_image_file(tmp)
        except ValueError as e:
            return fail("not_an_image", f"{e}; Content-Type {ctype}; starts with {head[:40]!r}", status), None
        name = digest.hexdigest() + ext
        dest = store.path(name)
        if dest.exists():  # the same bytes under another URL: stored once
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        tmp = None
        return FetchResult(
            url=url, ok=True, file=name, sha256=digest.hexdigest(), bytes=size, format=fmt, http_status=status
        ), None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


async def _fetch_one(client: Any, url: str, store: ImageStore, cfg: FetchConfig, limiter: _HostLimiter) -> FetchResult:
    prev = store.result(url)
    runs_before = prev.runs if prev is not None and prev.transient else 0
    host = _host(url)
    attempt = 0
    while True:
        attempt += 1
        await limiter.wait(host)
        res, retry_after = await _attempt(client, url, store, cfg)
        if res.ok or not res.transient or attempt > cfg.retries:
            break
        delay = min(cfg.max_backoff, cfg.backoff * 2 ** (attempt - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.max_backoff))
        await asyncio.sleep(delay)
    res.attempts = attempt
    if res.transient:
        res.runs = runs_before + 1
    return res


def _by_host_round_robin(urls: list[str]) -> list[str]:
    """Interleave hosts, so that the workers spread over hosts instead of queueing behind one host's rate."""
    groups: dict[str, list[str]] = {}
    for u in urls:
        groups.setdefault(_host(u), []).append(u)
    out: list[str] = []
    queues = [iter(g) for g in groups.values()]
    while queues:
        alive = []
        for q in queues:
            url = next(q, None)
            if url is not None:
                out.append(url)
                alive.append(q)
        queues = alive
    return out


async def _fetch_pending(urls: list[str], store: ImageStore, cfg: FetchConfig, progress: Progress | None) -> int:
    import httpx

    todo = iter(_by_host_round_robin(urls))
    limiter = _HostLimiter(cfg.per_host_rate)
    done = 0
    n_workers = min(cfg.concurrency, len(urls))
    limits = httpx.Limits(max_connections=n_workers, max_keepalive_connections=n_workers)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(cfg.timeout),
        limits=limits,
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": cfg.user_agent},
    ) as client:

        async def worker() -> None:
            nonlocal done
            for url in todo:  # one shared iterator: each URL goes to one worker
                store.record(await _fetch_one(client, url, store, cfg, limiter))
                done += 1
                if progress is not None and (done % 200 == 0 or done == len(urls)):
                    progress(f"fetched {done}/{len(urls)} image URLs")

        async with asyncio.TaskGroup() as tg:  # a worker's error (disk full) cancels the others
            for _ in range(n_workers):
                tg.create_task(worker())
    return done


def _run(coro: Any) -> Any:
    """Run a coroutine from synchronous code, also when the caller already has an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="nyx-fetch")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def fetch_into(
    store: ImageStore, urls: Iterable[str], cfg: FetchConfig, progress: Progress | None = None
) -> tuple[dict[str, FetchResult], list[str]]:
    """Fetch the ``urls`` of an open store that have no final result; return every URL's result and the URLs
    requested in this call."""
    wanted = list(dict.fromkeys(urls))
    pending = [u for u in wanted if not store.is_done(u, cfg.transient_runs)]
    if pending:
        _run(_fetch_pending(pending, store, cfg, progress))
    return {u: store.result(u) for u in wanted}, pending  # type: ignore[misc]


def fetch_urls(
    urls: Iterable[str], store_dir: str | os.PathLike, cfg: FetchConfig | None = None, progress: Progress | None = None
) -> dict[str, FetchResult]:
    """Fetch ``urls`` into the store at ``store_dir`` (resuming: URLs with a final result are not requested
    again) and return each URL's :class:`FetchResult`."""
    with ImageStore(store_dir).open() as store:
        return fetch_into(store, urls, cfg or FetchConfig(), progress)[0]
