"""Reading and rewriting one OBELICS shard file (JSONL or Parquet): the remote image URLs its rows name
(:func:`entry_url`, :func:`shard_urls`), and the shard written again with each URL replaced by the stored file's
path, rows with an unfetchable image dropped into the rejects, and missing ids filled in as ingestion would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nyx.data.fetch.config import FetchResult
from nyx.data.rejects import RejectLog, ShardError
from nyx.utils.io import atomic_write


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


def shard_stem(path: Path) -> str:
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


def _resolve_row(
    row: dict[str, Any], idx: int, stem: str, local: Mapping[str, str], failed: Mapping[str, FetchResult]
) -> tuple[dict[str, Any] | None, list[FetchResult]]:
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


def _reject(
    rejects: RejectLog,
    shard_file: str,
    idx: int,
    rid: Any,
    bad: list[FetchResult],
    raw: str,
    users: dict[str, list[str]],
) -> None:
    first = bad[0]
    more = f" (and {len(bad) - 1} more unfetchable image(s))" if len(bad) > 1 else ""
    rejects.add(
        f"unfetchable image ({first.reason}): {first.url} [{first.detail}]{more}",
        record_id=str(rid),
        raw=raw[:2000],
        location=f"{shard_file}:{idx}",
    )
    for r in bad:
        users.setdefault(r.url, []).append(str(rid))


def write_resolved(
    source: Path,
    dest: Path,
    local: Mapping[str, str],
    failed: Mapping[str, FetchResult],
    rejects: RejectLog,
    users: dict[str, list[str]],
) -> tuple[int, int]:
    """Write ``dest`` from ``source`` with the URLs resolved; returns (rows as delivered, rows dropped)."""
    stem = shard_stem(dest)
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
                    _reject(
                        rejects,
                        dest.name,
                        idx,
                        _row_id(obj, stem, idx),
                        bad,
                        raw.decode("utf-8", "replace").rstrip("\n"),
                        users,
                    )
                    continue
                if new is obj and not _needs_id(obj):
                    out.write(raw)
                    continue
                new = {**new, "id": _row_id(new, stem, idx)} if _needs_id(new) else new
                out.write((json.dumps(new, ensure_ascii=False) + "\n").encode("utf-8"))
        return rows, dropped

    import pyarrow as pa
    import pyarrow.parquet as pq

    from nyx.data.obelics.reader import row_summary

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
                        _reject(rejects, dest.name, idx, _row_id(row, stem, idx), bad, row_summary(row), users)
                        continue
                    kept.append({**new, "id": _row_id(new, stem, idx)})
                if kept:
                    writer.write_table(pa.Table.from_pylist(kept, schema=schema))
    return rows, dropped
