"""Fetching the ``http(s)`` images of OBELICS shards into the content-addressed image store.

Public OBELICS rows name their images by URL. :func:`fetch_raw_images` downloads every remote image of the shards of
a raw folder (``data/raw``) into the folder's image store and rewrites each shard so that its rows name the local
files; :mod:`nyx.data.ingest` then reads the shards as if the images had always been there.

**Why httpx and not img2dataset.** img2dataset is the usual tool for bulk image download, but it pulls a large
dependency tree (its own resizer, fsspec, pyspark/ray backends, wandb hooks) and writes its own output layout
(webdataset tars or numbered folders, resized by default, keyed by sample, not by content). The pipeline needs
something else: the project's content-addressed store (one file per distinct image, named by its bytes), a
durable URL index to resume from, the project's reject rules with a reason per URL, and the original bytes (the
pixel budget is applied later, at decoding). ``httpx`` (already a dependency: the OpenAI-compatible clients use it)
gives an async client with connection limits, streaming and timeouts; the rest (rate limit, retries, sniffing,
index, shard rewriting) is this module.

**Store** (``<raw>/images``, the folder the bundled sample already keeps its images in):

* ``images/<sha256 of the bytes><ext>``: each distinct image once; ``ext`` comes from sniffing the bytes with PIL
  (``.jpg``, ``.png``, ``.gif``, ``.webp``, ``.bmp``, ``.tif``, ``.avif``), never from the URL or Content-Type.
  Two URLs serving the same bytes share one file.
* ``images/.fetch/index.jsonl``: the URL index, one JSON line appended per finished URL (stored file or failure
  reason, attempts, HTTP status). Append-only, written with one ``write`` per line; the last line for a URL wins.
  A run that is killed loses at most the downloads in flight: on restart every URL with a final result is skipped.
* ``images/.fetch/tmp/``: partial downloads (``*.part``); a file is renamed into the store only when complete and
  sniffed. Whatever a killed run left there is deleted when the next run starts (under ``images/.fetch/lock``, so
  two runs never share the store).

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

**Shards.** A shard with remote images (``data/raw/<file>``) is copied as delivered to ``<raw>/remote/<file>``
(kept: it is the source from which the shard is resolved again, e.g. when a transient failure clears), then
rewritten in place: each URL entry becomes the stored file's path relative to the raw folder (``images/<sha>.png``).
A row with an image that could not be fetched is dropped, like a row with an undecodable image at ingestion, and
kept with the reason in ``<rejects>/<shard>.jsonl`` (``unfetchable image (<reason>): <url>``). Rows that had no id
get the one ingestion would have given them (``<stem>-<row>``), so dropping rows never renumbers the others.
``<rejects>/<shard>.urls.jsonl`` names each failed URL with its reason, detail, attempts and the documents that
used it; ``<rejects>/<shard>.report.json`` holds the shard's :class:`ShardReport` (counts by reason).
``<raw>/remote/.<file>.json`` stamps what was written, so that a later run leaves the shard alone unless its
resolution changed, and a shard replaced by the user (no URLs) is never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from nyx.data.rejects import RejectLog, ShardError
from nyx.utils.io import atomic_write, file_sha256, read_json, write_json

Progress = Callable[[str], None]

#: reasons worth another attempt (besides ``http_5xx``, ``http_408`` and ``http_429``)
TRANSIENT_REASONS = frozenset({"timeout", "connection_error"})
_FORMAT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
               "TIFF": ".tif", "AVIF": ".avif"}
_MAX_DETAIL = 300


@dataclass(frozen=True)
class FetchConfig:
    """How images are downloaded (the profile's ``fetch`` settings, :class:`nyx.settings.FetchSettings`)."""

    concurrency: int = 16  #: downloads in flight at once
    per_host_rate: float = 4.0  #: requests per second to one host name (0: no limit)
    timeout: float = 20.0  #: seconds for one attempt, from the request to the last byte
    retries: int = 3  #: further attempts after a transient failure, within a run
    backoff: float = 1.0  #: seconds before the first retry; doubles with each
    max_backoff: float = 60.0
    max_bytes: int = 20 * 1024 * 1024  #: larger bodies are aborted and rejected (``too_large``)
    transient_runs: int = 3  #: runs that try a URL whose failures were transient; then the failure is final
    user_agent: str = "nyx-image-fetch/1.0 (+OBELICS image download for a retrieval corpus)"

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.transient_runs < 1:
            raise ValueError("concurrency and transient_runs must be >= 1, retries >= 0")
        if self.per_host_rate < 0 or self.timeout <= 0 or self.backoff < 0 or self.max_bytes < 1:
            raise ValueError("per_host_rate and backoff must be >= 0, timeout and max_bytes > 0")


def is_transient(reason: str | None) -> bool:
    """Whether a failure may clear by itself (server errors, throttling, timeouts, network)."""
    if reason is None:
        return False
    if reason in TRANSIENT_REASONS:
        return True
    if reason.startswith("http_"):
        try:
            code = int(reason[5:])
        except ValueError:
            return False
        return code >= 500 or code in (408, 429)
    return False


@dataclass
class FetchResult:
    """What became of one URL: a stored file (``file``, a name in the store) or a failure (``reason``)."""

    url: str
    ok: bool
    file: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    format: str | None = None
    reason: str | None = None
    detail: str | None = None
    http_status: int | None = None
    attempts: int = 0
    runs: int = 0  #: runs that ended on a transient failure of this URL
    at: float = field(default_factory=time.time)

    @property
    def transient(self) -> bool:
        return not self.ok and is_transient(self.reason)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FetchResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------------------------
# Image entries
# ----------------------------------------------------------------------------------------------------------


def entry_url(entry: Any) -> str | None:
    """The ``http(s)`` URL an OBELICS image entry names, or ``None`` (local path, bytes, ``data:`` URL, null).

    Protocol-relative ``//host/x`` is read as ``https://host/x``."""
    if isinstance(entry, Mapping):
        if entry.get("bytes") is not None:
            return None
        entry = entry.get("path") or entry.get("url") or entry.get("src")
    if not isinstance(entry, str):
        return None
    ref = entry.strip()
    if ref.startswith(("http://", "https://")):
        return ref
    if ref.startswith("//"):
        return "https:" + ref
    return None


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def _clip(s: str, n: int = _MAX_DETAIL) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "..."


# ----------------------------------------------------------------------------------------------------------
# The store and its URL index
# ----------------------------------------------------------------------------------------------------------


class ImageStore:
    """The content-addressed image folder and its URL index. Use as a context manager (:meth:`open`): it takes
    the store's lock, deletes partial downloads of killed runs and reads the index."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.meta = self.root / ".fetch"
        self.index_path = self.meta / "index.jsonl"
        self.tmp = self.meta / "tmp"
        self._results: dict[str, FetchResult] = {}
        self._tried: set[str] = set()  # URLs attempted in this run (a transient failure is not retried twice)
        self._fd: int | None = None
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator["ImageStore"]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another fetch is using the image store {self.root} (lock "
                                   f"{self.meta / 'lock'}); wait for it to finish") from None
            self.clean_tmp()
            self._load_index()
            self._fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                yield self
            finally:
                os.close(self._fd)
                self._fd = None
                self.clean_tmp()
        finally:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def clean_tmp(self) -> int:
        """Delete partial downloads; returns how many there were."""
        n = 0
        if self.tmp.is_dir():
            for p in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink() if not p.is_dir() else shutil.rmtree(p)
                    n += 1
        return n

    def _load_index(self) -> None:
        self._results.clear()
        if not self.index_path.is_file():
            return
        data = self.index_path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line torn by a kill: end it so the next append starts clean
            with open(self.index_path, "ab") as f:
                f.write(b"\n")
        for line in data.splitlines():
            try:
                res = FetchResult.from_json(json.loads(line))
            except (ValueError, TypeError):
                continue  # the torn line: that URL simply has no result yet
            self._results[res.url] = res

    def result(self, url: str) -> FetchResult | None:
        return self._results.get(url)

    def path(self, name: str) -> Path:
        return self.root / name

    def is_done(self, url: str, transient_runs: int) -> bool:
        """Whether ``url`` has a final result: a stored file that is still there, a permanent failure, a transient
        one that has had its ``transient_runs`` runs, or any result from this run."""
        if url in self._tried:
            return True
        r = self._results.get(url)
        if r is None:
            return False
        if r.ok:
            return bool(r.file) and self.path(r.file).is_file()
        return not r.transient or r.runs >= transient_runs

    def record(self, res: FetchResult) -> None:
        """Append one finished URL to the index (one ``write``: a kill leaves whole lines or one torn last line)."""
        assert self._fd is not None, "ImageStore.record outside open()"
        os.write(self._fd, (json.dumps(res.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        self._results[res.url] = res
        self._tried.add(res.url)


# ----------------------------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------------------------


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
                        return fail("too_large", f"Content-Length {declared} > max_bytes {cfg.max_bytes}",
                                    status), None
                    ctype = resp.headers.get("content-type", "?")
                    fd, tmp = tempfile.mkstemp(dir=store.tmp, suffix=".part")
                    digest, size, head = hashlib.sha256(), 0, b""
                    with os.fdopen(fd, "wb") as f:
                        async for chunk in resp.aiter_bytes():
                            size += len(chunk)
                            if size > cfg.max_bytes:
                                return fail("too_large", f"body over max_bytes {cfg.max_bytes} (download aborted "
                                                         f"at {size} bytes)", status), None
                            if len(head) < 64:
                                head += chunk[:64 - len(head)]
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
        return FetchResult(url=url, ok=True, file=name, sha256=digest.hexdigest(), bytes=size, format=fmt,
                           http_status=status), None
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
            u = next(q, None)
            if u is not None:
                out.append(u)
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
    async with httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout), limits=limits, follow_redirects=True,
                                 max_redirects=5, headers={"User-Agent": cfg.user_agent}) as client:
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


def fetch_into(store: ImageStore, urls: Iterable[str], cfg: FetchConfig,
               progress: Progress | None = None) -> tuple[dict[str, FetchResult], list[str]]:
    """Fetch the ``urls`` of an open store that have no final result; return every URL's result and the URLs
    requested in this call."""
    wanted = list(dict.fromkeys(urls))
    pending = [u for u in wanted if not store.is_done(u, cfg.transient_runs)]
    if pending:
        _run(_fetch_pending(pending, store, cfg, progress))
    return {u: store.result(u) for u in wanted}, pending  # type: ignore[misc]


def fetch_urls(urls: Iterable[str], store_dir: str | os.PathLike, cfg: FetchConfig | None = None,
               progress: Progress | None = None) -> dict[str, FetchResult]:
    """Fetch ``urls`` into the store at ``store_dir`` (resuming: URLs with a final result are not requested
    again) and return each URL's :class:`FetchResult`."""
    with ImageStore(store_dir).open() as store:
        return fetch_into(store, urls, cfg or FetchConfig(), progress)[0]


# ----------------------------------------------------------------------------------------------------------
# Shards
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ShardReport:
    """One shard's remote images after a run. ``status``: ``resolved`` (the shard was rewritten), ``unchanged``
    (resolved before, nothing changed), ``local`` (no remote images), ``unreadable`` (left for ingestion to
    reject)."""

    shard: str
    file: str
    status: str
    urls: int = 0  #: distinct remote image URLs in the shard
    stored: int = 0  #: URLs whose image is in the store
    failed: int = 0  #: URLs that could not be fetched
    requested: int = 0  #: URLs requested in this run (the others had a result from earlier runs or shards)
    fetched: int = 0  #: of those, stored in this run
    transient_now: int = 0  #: of those, failed for a transient reason in this run
    reasons: dict[str, int] = field(default_factory=dict)  #: failed URLs by reason
    pending_retry: int = 0  #: failed URLs whose failure is transient and that a later run tries again
    documents: int = 0  #: rows in the shard as delivered
    dropped: int = 0  #: rows dropped for an unfetchable image
    rejects: str | None = None  #: the dropped rows, with the reason
    url_rejects: str | None = None  #: the failed URLs, with the reason
    original: str | None = None  #: the shard as delivered
    error: str | None = None


def _shard_stem(path: Path) -> str:
    return path.name.split(".")[0]


def _iter_jsonl_lines(path: Path) -> Iterator[tuple[int | None, bytes, Any]]:
    """(row index or None for a blank line, the raw line, the decoded object or None when it is not JSON)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ShardError(path.name, f"unreadable JSONL file ({type(e).__name__}): {e}") from e
    with f:
        idx = 0
        for raw in f:
            if not raw.strip():
                yield None, raw, None
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                obj = None
            yield idx, raw, obj
            idx += 1


def _parquet_batches(path: Path, columns: list[str] | None = None) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    errors = (pa.ArrowException, OSError, ValueError, EOFError)
    try:
        pf = pq.ParquetFile(path)
        if columns is not None:
            columns = [c for c in columns if c in pf.schema_arrow.names]
            if not columns:
                return
        batches = pf.iter_batches(batch_size=1024, columns=columns)
        while True:
            batch = next(batches, None)
            if batch is None:
                return
            yield batch
    except errors as e:
        raise ShardError(path.name, f"unreadable Parquet file ({type(e).__name__}): {' '.join(str(e).split())}") from e


def _row_urls(row: Any) -> list[str]:
    if not isinstance(row, Mapping) or not isinstance(row.get("images"), (list, tuple)):
        return []
    return [u for u in (entry_url(e) for e in row["images"]) if u is not None]


def shard_urls(path: str | os.PathLike) -> list[str]:
    """The distinct remote image URLs of one shard, in order; :class:`ShardError` when it cannot be read."""
    path = Path(path)
    urls: dict[str, None] = {}
    if path.suffix == ".parquet":
        for batch in _parquet_batches(path, ["images"]):
            for images in batch.column("images").to_pylist():
                for u in _row_urls({"images": images}):
                    urls.setdefault(u)
    else:
        for _, _, obj in _iter_jsonl_lines(path):
            for u in _row_urls(obj):
                urls.setdefault(u)
    return list(urls)


def _needs_id(row: Mapping[str, Any]) -> bool:
    rid = row.get("id")
    return rid is None or (isinstance(rid, str) and not rid.strip())


def _row_id(row: Mapping[str, Any], stem: str, idx: int) -> str:
    """The row's id as ingestion reads it: its own, or ``<shard stem>-<row index>``."""
    return f"{stem}-{idx}" if _needs_id(row) else str(row["id"])


def _resolve_row(row: dict[str, Any], idx: int, stem: str, local: Mapping[str, str],
                 failed: Mapping[str, FetchResult]) -> tuple[dict[str, Any] | None, list[FetchResult]]:
    """The row with its URL entries replaced by local paths and an id if it had none, or ``None`` and the failures
    of its images when one of them could not be fetched."""
    urls = _row_urls(row)
    if not urls:
        return row, []
    bad = [failed[u] for u in dict.fromkeys(urls) if u in failed]
    if bad:
        return None, bad
    out = dict(row)
    out["id"] = _row_id(row, stem, idx)  # what ingestion would call it: dropping other rows must not renumber it
    images = []
    for e in row["images"]:
        u = entry_url(e)
        if u is None:
            images.append(e)
        elif isinstance(e, Mapping):
            images.append({**e, "path": local[u]} if "bytes" not in e else {**e, "bytes": None, "path": local[u]})
        else:
            images.append(local[u])
    out["images"] = images
    return out, []


def _reject(rejects: RejectLog, shard_file: str, idx: int, rid: Any, bad: list[FetchResult], raw: str,
            users: dict[str, list[str]]) -> None:
    first = bad[0]
    more = f" (and {len(bad) - 1} more unfetchable image(s))" if len(bad) > 1 else ""
    rejects.add(f"unfetchable image ({first.reason}): {first.url} [{first.detail}]{more}", record_id=str(rid),
                raw=raw[:2000], location=f"{shard_file}:{idx}")
    for r in bad:
        users.setdefault(r.url, []).append(str(rid))


def _write_resolved(source: Path, dest: Path, local: Mapping[str, str], failed: Mapping[str, FetchResult],
                    rejects: RejectLog, users: dict[str, list[str]]) -> tuple[int, int]:
    """Write ``dest`` from ``source`` with the URLs resolved; returns (rows as delivered, rows dropped)."""
    stem = _shard_stem(dest)
    rows = dropped = 0
    if source.suffix == ".jsonl":
        with atomic_write(dest, "wb") as out:
            for idx, raw, obj in _iter_jsonl_lines(source):
                if idx is None:
                    out.write(raw)
                    continue
                rows += 1
                if not isinstance(obj, dict):
                    out.write(raw)  # verbatim: bad lines stay for ingestion to reject with its own reason
                    continue
                new, bad = _resolve_row(obj, idx, stem, local, failed)
                if new is None:
                    dropped += 1
                    _reject(rejects, dest.name, idx, _row_id(obj, stem, idx), bad,
                            raw.decode("utf-8", "replace").rstrip("\n"), users)
                    continue
                if new is obj and not _needs_id(obj):
                    out.write(raw)
                    continue
                new = {**new, "id": _row_id(new, stem, idx)} if _needs_id(new) else new
                out.write((json.dumps(new, ensure_ascii=False) + "\n").encode("utf-8"))
        return rows, dropped

    import pyarrow as pa
    import pyarrow.parquet as pq

    from nyx.data.obelics import _row_summary

    schema = pq.ParquetFile(source).schema_arrow
    id_idx = schema.get_field_index("id")
    if id_idx < 0:
        schema = schema.insert(0, pa.field("id", pa.string()))
    elif not pa.types.is_string(schema.field(id_idx).type):
        schema = schema.set(id_idx, pa.field("id", pa.string()))
    with atomic_write(dest, "wb") as f:
        with pq.ParquetWriter(f, schema, compression="zstd") as writer:
            for batch in _parquet_batches(source):
                kept = []
                for row in batch.to_pylist():
                    idx = rows
                    rows += 1
                    new, bad = _resolve_row(row, idx, stem, local, failed)
                    if new is None:
                        dropped += 1
                        _reject(rejects, dest.name, idx, _row_id(row, stem, idx), bad, _row_summary(row), users)
                        continue
                    kept.append({**new, "id": _row_id(new, stem, idx)})
                if kept:
                    writer.write_table(pa.Table.from_pylist(kept, schema=schema))
    return rows, dropped


def _signature(urls: list[str], results: Mapping[str, FetchResult]) -> str:
    """What a shard's resolution depends on: each URL's stored file or failure reason."""
    h = hashlib.sha256()
    for u in sorted(urls):
        r = results[u]
        h.update(f"{u}\t{r.file if r.ok else '!' + str(r.reason)}\n".encode("utf-8"))
    return h.hexdigest()


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return os.fspath(path.absolute())


def _copy_original(shard: Path, original: Path) -> None:
    if original.is_file() and file_sha256(original) == file_sha256(shard):
        return
    with open(shard, "rb") as src, atomic_write(original, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


@dataclass
class _Plan:
    shard: Path
    urls: list[str]
    original: Path
    stamp: dict[str, Any] | None  #: the stamp of an earlier run's rewrite (None: the shard is as delivered)


def _plan_shard(shard: Path, raw_dir: Path) -> ShardReport | _Plan:
    """What to do with one shard: resolve it from the shard as delivered (it names remote images), resolve it
    again from the kept original (an earlier run wrote it), or nothing (a report: ``local``, ``unreadable``)."""
    name = _shard_stem(shard)
    remote_dir = raw_dir / "remote"
    original = remote_dir / shard.name
    stamp_path = remote_dir / f".{shard.name}.json"
    try:
        urls = shard_urls(shard)
        if urls:  # delivered (or delivered again) with remote images
            return _Plan(shard, urls, original, None)
        stamp = read_json(stamp_path) if stamp_path.is_file() else None
        if stamp is not None and original.is_file() and stamp.get("resolved_sha256") == file_sha256(shard):
            return _Plan(shard, shard_urls(original), original, stamp)  # ours: resolved again if an outcome changed
    except ShardError as e:
        return ShardReport(shard=name, file=shard.name, status="unreadable", error=e.reason)
    # no remote images, or replaced by the user since an earlier run rewrote it: never touched
    return ShardReport(shard=name, file=shard.name, status="local")


def _resolve_shard(plan: _Plan, raw_dir: Path, store: ImageStore, rejects_dir: Path, cfg: FetchConfig,
                   progress: Progress | None) -> ShardReport:
    shard, urls, original = plan.shard, plan.urls, plan.original
    name = _shard_stem(shard)
    if plan.stamp is None:
        _copy_original(shard, original)  # kept as delivered: the source of every later resolution
    results, requested = fetch_into(store, urls, cfg, progress)
    now = {"requested": len(requested), "fetched": sum(1 for u in requested if results[u].ok),
           "transient_now": sum(1 for u in requested if results[u].transient)}
    signature = _signature(urls, results)
    failed = {u: r for u, r in results.items() if not r.ok}
    report_path = rejects_dir / f"{name}.report.json"
    if plan.stamp is not None and plan.stamp.get("signature") == signature and report_path.is_file():
        report = ShardReport(**read_json(report_path))
        report = dataclasses.replace(report, status="unchanged", **now)
        return report
    local = {u: _rel(store.path(r.file), raw_dir) for u, r in results.items() if r.ok}  # type: ignore[arg-type]
    rejects, users = RejectLog(stage="raw_images"), {}
    rows, dropped = _write_resolved(original, shard, local, failed, rejects, users)
    rejects_file = rejects.write(rejects_dir / f"{name}.jsonl")
    urls_file = rejects_dir / f"{name}.urls.jsonl"
    with atomic_write(urls_file, "w") as f:
        for u, r in failed.items():
            final = not r.transient or r.runs >= cfg.transient_runs
            f.write(json.dumps({"url": u, "reason": r.reason, "detail": r.detail, "http_status": r.http_status,
                                "attempts": r.attempts, "runs": r.runs, "final": final,
                                "documents": users.get(u, [])}, ensure_ascii=False) + "\n")
    report = ShardReport(
        shard=name, file=shard.name, status="resolved", urls=len(urls), stored=len(urls) - len(failed),
        failed=len(failed), **now, reasons=dict(Counter(r.reason for r in failed.values())),
        pending_retry=sum(1 for r in failed.values() if r.transient and r.runs < cfg.transient_runs),
        documents=rows, dropped=dropped, rejects=str(rejects_file), url_rejects=str(urls_file),
        original=str(original))
    write_json(dataclasses.asdict(report), report_path)
    write_json({"source_sha256": file_sha256(original), "resolved_sha256": file_sha256(shard),
                "signature": signature}, original.parent / f".{shard.name}.json")
    if progress is not None:
        progress(f"{name}: {report.stored}/{report.urls} images stored, {report.failed} failed "
                 f"{report.reasons}, {dropped}/{rows} documents dropped")
    return report


def fetch_raw_images(raw_dir: str | os.PathLike, rejects_dir: str | os.PathLike, cfg: FetchConfig | None = None,
                     store_dir: str | os.PathLike | None = None, shards: Iterable[str] | None = None,
                     progress: Progress | None = None) -> list[ShardReport]:
    """Fetch the remote images of every shard of ``raw_dir`` (or of the named ones) into the store
    (``<raw_dir>/images`` unless ``store_dir``) and rewrite those shards to name the local files; one
    :class:`ShardReport` per shard (``local`` for one without remote images). Nothing is written (not even the
    store's index) when no shard has remote images. See the module's docstring."""
    from nyx.data.obelics import list_shards

    raw_dir, rejects_dir = Path(raw_dir), Path(rejects_dir)
    cfg = cfg or FetchConfig()
    found = list_shards(raw_dir)
    if shards is not None:
        wanted = set(shards)
        found = [s for s in found if _shard_stem(s) in wanted]
    plans = [_plan_shard(s, raw_dir) for s in found]
    if not any(isinstance(p, _Plan) for p in plans):
        return plans  # type: ignore[return-value]
    reports: list[ShardReport] = []
    with ImageStore(Path(store_dir) if store_dir is not None else raw_dir / "images").open() as store:
        for p in plans:
            reports.append(_resolve_shard(p, raw_dir, store, rejects_dir, cfg, progress) if isinstance(p, _Plan)
                           else p)
    return reports


__all__ = [
    "FetchConfig",
    "FetchResult",
    "ImageStore",
    "ShardReport",
    "entry_url",
    "fetch_into",
    "fetch_raw_images",
    "fetch_urls",
    "is_transient",
    "shard_urls",
    "sniff_image_file",
]
