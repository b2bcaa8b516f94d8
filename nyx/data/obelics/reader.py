"""Reading OBELICS shards (Parquet or JSONL) as :class:`~nyx.data.records.Record` s, bad rows to the reject log.

See :mod:`nyx.data.obelics` for the row format, the document ids and what is rejected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nyx.data.images import ImageConfig, verify_image
from nyx.data.jsonl import iter_json_lines
from nyx.data.obelics.image_refs import ImageResolver
from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog, ShardError

SHARD_SUFFIXES = (".parquet", ".jsonl")
_RESERVED = ("id", "texts", "images")
_MAX_RAW = 2000  # characters of a bad row kept in the reject log


def _json_safe(value: Any, parse_json: bool = False) -> Any:
    """Extra columns as JSON values: bytes become a note; with ``parse_json`` JSON strings are decoded."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        if not parse_json:
            return value
        s = value.strip()
        if s[:1] in ("{", "["):
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return value
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _clip(s: str) -> str:
    return s if len(s) <= _MAX_RAW else s[:_MAX_RAW] + "..."


def row_summary(row: Mapping[str, Any]) -> str:
    """A row as clipped JSON: what a reject log keeps of it."""
    return _clip(json.dumps({k: _json_safe(v) for k, v in row.items()}, ensure_ascii=False, default=str))


def row_to_record(
    row: Mapping[str, Any], default_id: str, base_dir: Path, resolver: ImageResolver, from_json: bool = False
) -> Record:
    """One OBELICS row as a :class:`Record`; raises :class:`RecordError` on anything malformed."""
    if not isinstance(row, Mapping):
        raise RecordError(f"expected an object, got {type(row).__name__}", record_id=default_id)
    rid = row.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        rid = default_id
    elif not isinstance(rid, (str, int)):
        raise RecordError(f"id must be a string, got {type(rid).__name__}", record_id=default_id)
    rid = str(rid)
    texts, images = row.get("texts"), row.get("images")
    if not isinstance(texts, (list, tuple)) or not isinstance(images, (list, tuple)):
        raise RecordError("malformed row: 'texts' and 'images' must both be lists", record_id=rid)
    if len(texts) != len(images):
        raise RecordError(f"malformed row: {len(texts)} texts but {len(images)} images", record_id=rid)
    parts: list[Part] = []
    for i, (text, image) in enumerate(zip(texts, images)):
        if (text is None) == (image is None):
            state = "both" if text is not None else "neither"
            raise RecordError(f"malformed row: position {i} has {state} of text and image", record_id=rid)
        if text is not None:
            if not isinstance(text, str):
                raise RecordError(f"malformed row: text at position {i} is {type(text).__name__}", record_id=rid)
            if text.strip():
                parts.append(Part.of_text(text))
        else:
            parts.append(Part.of_image(resolver.resolve(image, base_dir, rid, i, from_json=from_json)))
    if not parts:
        raise RecordError("empty record: no text and no image", record_id=rid)
    extra = {
        k: _json_safe(v, parse_json=k.endswith("metadata"))  # OBELICS stores metadata as JSON text
        for k, v in row.items()
        if k not in _RESERVED and v is not None
    }
    return Record(id=rid, content=parts, extra=extra)


def _unreadable(path: Path, kind: str, error: BaseException) -> ShardError:
    """The reader's error on a whole shard, named by file (its message on one line)."""
    message = " ".join(str(error).split()) or "no message"
    return ShardError(path.name, f"unreadable {kind} file ({type(error).__name__}): {message}")


def _iter_parquet_rows(path: Path, batch_size: int) -> Iterator[tuple[int, Any, str | None]]:
    """(row index, row, None) of a Parquet shard; :class:`ShardError` when the file cannot be read (no footer,
    a damaged page): a Parquet file is checked as a whole, so it is rejected as a whole, not row by row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    read_errors = (pa.ArrowException, OSError, ValueError, EOFError)  # thrift/page errors surface as OSError
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_size)
    except read_errors as e:
        raise _unreadable(path, "Parquet", e) from e
    idx = 0
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            rows = batch.to_pylist()
        except read_errors as e:
            raise _unreadable(path, "Parquet", e) from e
        for row in rows:
            yield idx, row, None
            idx += 1


def _iter_jsonl_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(row index, decoded object or RecordError, raw line); the index counts non-blank lines.

    A bad line is a bad record (the other lines go on); a last line cut mid-record (no final newline, not valid
    JSON) is one, with "the file looks truncated" in its reason. A file that cannot be read at all (I/O error)
    raises :class:`ShardError`."""
    lines = iter_json_lines(path)
    while True:
        try:
            line = next(lines, None)
        except OSError as e:
            raise _unreadable(path, "JSONL", e) from e
        if line is None:
            return
        obj = line.error(note_truncation=True) if line.cause is not None else line.value
        yield line.index, obj, line.text


def list_shards(folder: str | os.PathLike) -> list[Path]:
    """OBELICS shards (``*.parquet``, ``*.jsonl``) directly in ``folder``, sorted by name; hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such shard folder: {folder}")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix in SHARD_SUFFIXES
    )


def iter_obelics(
    path: str | os.PathLike,
    rejects: RejectLog | None = None,
    image_root: str | os.PathLike | None = None,
    verify_images: bool = False,
    image_cfg: ImageConfig | None = None,
    *,
    url_map: Mapping[str, str] | str | os.PathLike | None = None,
    bytes_cache: str | os.PathLike | None = None,
    batch_size: int = 256,
) -> Iterator[Record]:
    """Stream the documents of one OBELICS shard (or of every shard in a folder) as :class:`Record` s.

    Bad rows (malformed, empty, duplicate id, unresolvable image, or with ``verify_images`` an image that
    does not decode fully) are added to ``rejects`` with the reason and ``<shard>:<row>``; with
    ``rejects=None`` the first one raises instead. A shard that cannot be read raises
    :class:`~nyx.data.rejects.ShardError` naming it (possibly after its first rows for a Parquet file damaged
    past its first row batch: a caller that must not keep part of a shard collects before using).
    """
    path = Path(path)
    if path.is_dir():
        for shard in list_shards(path):
            yield from iter_obelics(
                shard,
                rejects,
                image_root,
                verify_images,
                image_cfg,
                url_map=url_map,
                bytes_cache=bytes_cache,
                batch_size=batch_size,
            )
        return
    if not path.is_file():
        raise FileNotFoundError(f"no such OBELICS shard: {path}")
    if path.suffix == ".parquet":
        rows, from_json = _iter_parquet_rows(path, batch_size), False
    elif path.suffix == ".jsonl":
        rows, from_json = _iter_jsonl_rows(path), True
    else:
        raise ValueError(f"unsupported shard type {path.suffix!r} (expected one of {SHARD_SUFFIXES})")
    resolver = ImageResolver.create(image_root, url_map, bytes_cache)
    base_dir = path.parent
    seen: set[str] = set()
    for idx, row, raw in rows:
        where = f"{path.name}:{idx}"
        default_id = f"{path.stem}-{idx}"
        try:
            if isinstance(row, RecordError):
                raise row
            record = row_to_record(row, default_id, base_dir, resolver, from_json=from_json)
            if record.id in seen:
                raise RecordError("duplicate id in shard", record_id=record.id)
            if verify_images:
                for ref in record.images:
                    verify_image(ref, image_cfg, record_id=record.id)
        except RecordError as e:
            e.location = e.location or where
            if e.record_id is None and not isinstance(row, RecordError):
                e.record_id = default_id
            if rejects is None:
                raise
            if raw is not None:
                raw = _clip(raw)
            elif isinstance(row, Mapping):
                raw = row_summary(row)
            rejects.add(e, raw=raw)
            continue
        seen.add(record.id)
        yield record


def read_obelics(path: str | os.PathLike, rejects: RejectLog | None = None, **kwargs: Any) -> list[Record]:
    return list(iter_obelics(path, rejects, **kwargs))
