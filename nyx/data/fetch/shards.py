"""Fetching the remote images of a raw folder's shards (:func:`fetch_raw_images`): which shards need it, the
fetch, the rewrite, the rejects and the report of each shard, and the stamp that leaves a shard alone until its
resolution changes.

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

import dataclasses
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx.data.fetch.config import FetchConfig, FetchResult, Progress
from nyx.data.fetch.download import fetch_into
from nyx.data.fetch.shard_io import shard_stem, shard_urls, write_resolved
from nyx.data.fetch.store import ImageStore
from nyx.data.rejects import RejectLog, ShardError
from nyx.utils.io import atomic_write, file_sha256, read_json, write_json


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


def _signature(urls: list[str], results: Mapping[str, FetchResult]) -> str:
    """What a shard's resolution depends on: each URL's stored file or failure reason."""
    h = hashlib.sha256()
    for u in sorted(urls):
        r = results[u]
        h.update(f"{u}\t{r.file if r.ok else '!' + str(r.reason)}\n".encode())
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
    name = shard_stem(shard)
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


def _resolve_shard(
    plan: _Plan, raw_dir: Path, store: ImageStore, rejects_dir: Path, cfg: FetchConfig, progress: Progress | None
) -> ShardReport:
    shard, urls, original = plan.shard, plan.urls, plan.original
    name = shard_stem(shard)
    if plan.stamp is None:
        _copy_original(shard, original)  # kept as delivered: the source of every later resolution
    results, requested = fetch_into(store, urls, cfg, progress)
    now: dict[str, Any] = {
        "requested": len(requested),
        "fetched": sum(1 for u in requested if results[u].ok),
        "transient_now": sum(1 for u in requested if results[u].transient),
    }
    signature = _signature(urls, results)
    failed = {u: r for u, r in results.items() if not r.ok}
    report_path = rejects_dir / f"{name}.report.json"
    if plan.stamp is not None and plan.stamp.get("signature") == signature and report_path.is_file():
        report = ShardReport(**read_json(report_path))
        report = dataclasses.replace(report, status="unchanged", **now)
        return report
    local = {u: _rel(store.path(r.file), raw_dir) for u, r in results.items() if r.ok}  # type: ignore[arg-type]
    rejects = RejectLog(stage="raw_images")
    users: dict[str, list[str]] = {}
    rows, dropped = write_resolved(original, shard, local, failed, rejects, users)
    rejects_file = rejects.write(rejects_dir / f"{name}.jsonl")
    urls_file = rejects_dir / f"{name}.urls.jsonl"
    with atomic_write(urls_file, "w") as f:
        for u, r in failed.items():
            final = not r.transient or r.runs >= cfg.transient_runs
            f.write(
                json.dumps(
                    {
                        "url": u,
                        "reason": r.reason,
                        "detail": r.detail,
                        "http_status": r.http_status,
                        "attempts": r.attempts,
                        "runs": r.runs,
                        "final": final,
                        "documents": users.get(u, []),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    report = ShardReport(
        shard=name,
        file=shard.name,
        status="resolved",
        urls=len(urls),
        stored=len(urls) - len(failed),
        failed=len(failed),
        **now,
        reasons=dict(Counter(r.reason for r in failed.values())),  # type: ignore[misc]  # failures have a reason
        pending_retry=sum(1 for r in failed.values() if r.transient and r.runs < cfg.transient_runs),
        documents=rows,
        dropped=dropped,
        rejects=str(rejects_file),
        url_rejects=str(urls_file),
        original=str(original),
    )
    write_json(dataclasses.asdict(report), report_path)
    write_json(
        {"source_sha256": file_sha256(original), "resolved_sha256": file_sha256(shard), "signature": signature},
        original.parent / f".{shard.name}.json",
    )
    if progress is not None:
        progress(
            f"{name}: {report.stored}/{report.urls} images stored, {report.failed} failed "
            f"{report.reasons}, {dropped}/{rows} documents dropped"
        )
    return report


def fetch_raw_images(
    raw_dir: str | os.PathLike,
    rejects_dir: str | os.PathLike,
    cfg: FetchConfig | None = None,
    store_dir: str | os.PathLike | None = None,
    shards: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> list[ShardReport]:
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
        found = [s for s in found if shard_stem(s) in wanted]
    plans = [_plan_shard(s, raw_dir) for s in found]
    if not any(isinstance(p, _Plan) for p in plans):
        return plans  # type: ignore[return-value]
    reports: list[ShardReport] = []
    with ImageStore(Path(store_dir) if store_dir is not None else raw_dir / "images").open() as store:
        for p in plans:
            reports.append(_resolve_shard(p, raw_dir, store, rejects_dir, cfg, progress) if isinstance(p, _Plan) else p)
    return reports
