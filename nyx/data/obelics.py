"""Reading and writing OBELICS shards: web documents as interleaved text segments and images.

An OBELICS row holds two parallel lists, ``texts`` and ``images``, of the same length; at each position
exactly one of the two is non-null, and the order is the page's reading order. Optional columns: ``id``,
``url``, ``metadata`` (a JSON string in the public dataset), ``general_metadata`` and anything else; they
are kept in :attr:`Record.extra`.

An image entry may be

* a file path, relative to the shard's folder (or absolute);
* an ``http(s)://`` URL whose file was downloaded beforehand into ``image_root``: the file is found
  through a ``url_map`` (JSON object ``{url: path relative to image_root}``) or, by default, named
  ``sha1(url) + extension`` (see :func:`url_to_filename`);
* raw encoded bytes (``bytes`` or a Hugging Face image struct ``{"bytes": ..., "path": ...}``; in JSONL
  the bytes are base64 text), which become a ``data:`` URL or, with ``bytes_cache``, a content-addressed
  file in that folder;
* a ``data:`` URL.

Shards are Parquet (``*.parquet``, read in row batches with pyarrow) or JSONL (``*.jsonl``). Document ids are
stable: the row's ``id`` when present, otherwise ``<shard stem>-<row index>``. Following the paper,
documents with any image that cannot be resolved (or, with ``verify_images=True``, fully decoded) are
dropped and logged to the :class:`~nyx.data.rejects.RejectLog` with the reason.

A shard that cannot be read at all (a truncated or corrupt Parquet file, an I/O error) raises
:class:`~nyx.data.rejects.ShardError` with the file's name and the reader's message, whether or not a reject
log is given: it is not a bad record, the caller rejects the whole shard (``nyx.data.ingest`` does). A JSONL
shard cut mid-record is not unreadable: its complete lines are read, the cut last line is one rejected record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import posixpath
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from nyx.data.images import ImageConfig, bytes_to_data_url, sniff_mime, verify_image
from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog, ShardError
from nyx.utils.io import atomic_write

SHARD_SUFFIXES = (".parquet", ".jsonl")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
_MIME_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
             "image/bmp": ".bmp", "image/tiff": ".tif"}
_RESERVED = ("id", "texts", "images")
_MAX_RAW = 2000  # characters of a bad row kept in the reject log


# ----------------------------------------------------------------------------------------------------------
# Image references
# ----------------------------------------------------------------------------------------------------------


def url_to_filename(url: str) -> str:
    """The default name of a downloaded image: ``sha1(url)`` plus the URL path's image extension, if any."""
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()
    ext = posixpath.splitext(urllib.parse.urlsplit(url).path)[1].lower()
    return digest + (ext if ext in IMAGE_EXTENSIONS else "")


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://", "//"))


@dataclass
class ImageResolver:
    """Turns an OBELICS image entry into an image reference a :class:`Part` can hold (path or data URL).

    ``image_root``: folder of downloaded images (for URL entries). ``url_map``: ``{url: relative path}`` or a
    JSON file holding one. ``bytes_cache``: folder where embedded bytes are written (content-addressed);
    without it they become ``data:`` URLs.
    """

    image_root: Path | None = None
    url_map: Mapping[str, str] | None = None
    bytes_cache: Path | None = None
    _listing: dict[str, str] | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, image_root: str | os.PathLike | None = None,
               url_map: Mapping[str, str] | str | os.PathLike | None = None,
               bytes_cache: str | os.PathLike | None = None) -> "ImageResolver":
        if url_map is not None and not isinstance(url_map, Mapping):
            with open(url_map, encoding="utf-8") as f:
                url_map = json.load(f)
            if not isinstance(url_map, dict):
                raise ValueError(f"url_map file must hold a JSON object {{url: path}}, got {type(url_map).__name__}")
        return cls(image_root=Path(image_root) if image_root is not None else None, url_map=url_map,
                   bytes_cache=Path(bytes_cache) if bytes_cache is not None else None)

    def resolve(self, entry: Any, base_dir: Path, record_id: str, position: int, from_json: bool = False) -> str:
        """Path or ``data:`` URL for one image entry; :class:`RecordError` when it cannot be found."""
        if isinstance(entry, dict):
            raw = entry.get("bytes")
            if raw is not None:
                return self._from_bytes(self._as_bytes(raw, record_id, position, from_json), record_id, position)
            entry = entry.get("path") or entry.get("url") or entry.get("src")
            if entry is None:
                raise RecordError(f"malformed image entry: position {position} has neither bytes nor path",
                                  record_id=record_id)
        if isinstance(entry, (bytes, bytearray)):
            return self._from_bytes(bytes(entry), record_id, position)
        if not isinstance(entry, str) or not entry.strip():
            raise RecordError(f"malformed image entry: position {position} is {type(entry).__name__}",
                              record_id=record_id)
        ref = entry.strip()
        if ref.startswith("data:"):
            return ref
        if is_url(ref):
            return str(self._from_url(ref, record_id))
        path = Path(ref) if os.path.isabs(ref) else base_dir / ref
        if not path.is_file():
            raise RecordError(f"image not found: {path}", record_id=record_id)
        return os.path.normpath(os.fspath(path.absolute()))

    @staticmethod
    def _as_bytes(raw: Any, record_id: str, position: int, from_json: bool) -> bytes:
        if isinstance(raw, (bytes, bytearray)):
            return bytes(raw)
        if isinstance(raw, str) and from_json:  # JSON cannot hold bytes: base64 text
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise RecordError(f"malformed image entry: position {position} has bytes that are not base64",
                                  record_id=record_id) from None
        raise RecordError(f"malformed image entry: position {position} has bytes of type {type(raw).__name__}",
                          record_id=record_id)

    def _from_bytes(self, data: bytes, record_id: str, position: int) -> str:
        if not data:
            raise RecordError(f"empty image file: position {position} has zero bytes", record_id=record_id)
        mime = sniff_mime(data)
        if self.bytes_cache is None:
            return bytes_to_data_url(data, mime)
        name = hashlib.sha256(data).hexdigest()[:32] + _MIME_EXT.get(mime or "", ".bin")
        path = self.bytes_cache / name
        if not path.exists():
            with atomic_write(path, "wb") as f:
                f.write(data)
        return os.fspath(path.absolute())

    def _from_url(self, url: str, record_id: str) -> Path:
        if self.image_root is None:
            raise RecordError(f"image not downloaded: {url} (no image_root given for URL images)",
                              record_id=record_id)
        if self.url_map is not None and url in self.url_map:
            path = self.image_root / self.url_map[url]
            if path.is_file():
                return path.absolute()
            raise RecordError(f"image not downloaded: {url} (url_map points to missing {path})", record_id=record_id)
        name = url_to_filename(url)
        path = self.image_root / name
        if path.is_file():
            return path.absolute()
        # Downloaders often add the extension from the Content-Type: accept sha1(url).<any ext>.
        stem = name.split(".", 1)[0]
        found = self._files_by_stem().get(stem)
        if found is not None:
            return (self.image_root / found).absolute()
        raise RecordError(f"image not downloaded: {url} (expected {path})", record_id=record_id)

    def _files_by_stem(self) -> dict[str, str]:
        if self._listing is None:
            listing: dict[str, str] = {}
            if self.image_root is not None and self.image_root.is_dir():
                for name in sorted(os.listdir(self.image_root)):
                    listing.setdefault(name.split(".", 1)[0], name)
            self._listing = listing
        return self._listing


# ----------------------------------------------------------------------------------------------------------
# Rows -> records
# ----------------------------------------------------------------------------------------------------------


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


def _row_summary(row: Mapping[str, Any]) -> str:
    return _clip(json.dumps({k: _json_safe(v) for k, v in row.items()}, ensure_ascii=False, default=str))


def row_to_record(row: Mapping[str, Any], default_id: str, base_dir: Path, resolver: ImageResolver,
                  from_json: bool = False) -> Record:
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
    extra = {k: _json_safe(v, parse_json=k.endswith("metadata"))  # OBELICS stores metadata as JSON text
             for k, v in row.items() if k not in _RESERVED and v is not None}
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
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _unreadable(path, "JSONL", e) from e
    with f:
        idx = 0
        lines = iter(f)
        while True:
            try:
                raw = next(lines, None)
            except OSError as e:
                raise _unreadable(path, "JSONL", e) from e
            if raw is None:
                return
            if not raw.strip():
                continue
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            cut = "" if raw.endswith(b"\n") else " (last line has no newline: the file looks truncated)"
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RecordError(f"line is not valid UTF-8 ({e.reason} at byte {e.start}){cut}") from None
                try:
                    obj: Any = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"malformed JSON: {e.msg} at column {e.colno}{cut}") from None
            except RecordError as e:
                obj = e
            yield idx, obj, text
            idx += 1


def list_shards(folder: str | os.PathLike) -> list[Path]:
    """OBELICS shards (``*.parquet``, ``*.jsonl``) directly in ``folder``, sorted by name; hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such shard folder: {folder}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix in SHARD_SUFFIXES)


def iter_obelics(path: str | os.PathLike, rejects: RejectLog | None = None,
                 image_root: str | os.PathLike | None = None, verify_images: bool = False,
                 image_cfg: ImageConfig | None = None, *,
                 url_map: Mapping[str, str] | str | os.PathLike | None = None,
                 bytes_cache: str | os.PathLike | None = None, batch_size: int = 256) -> Iterator[Record]:
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
            yield from iter_obelics(shard, rejects, image_root, verify_images, image_cfg,
                                    url_map=url_map, bytes_cache=bytes_cache, batch_size=batch_size)
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
                raw = _row_summary(row)
            rejects.add(e, raw=raw)
            continue
        seen.add(record.id)
        yield record


def read_obelics(path: str | os.PathLike, rejects: RejectLog | None = None, **kwargs: Any) -> list[Record]:
    return list(iter_obelics(path, rejects, **kwargs))


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


def write_obelics_parquet(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike,
                          compression: str = "zstd", row_group_size: int = 1024) -> int:
    """Write OBELICS rows (dicts with ``texts``/``images`` lists and optional other columns) atomically.

    ``images`` is stored as ``list<string>`` when every entry is a string (path or URL) and as a list of
    ``{bytes, path}`` structs (the Hugging Face image layout) when any entry is bytes. Dict- or list-valued
    extra columns (``metadata``) are stored as JSON strings, like the public dataset. The output is
    deterministic for a given pyarrow version (no timestamps).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(r) for r in rows]
    for i, r in enumerate(rows):
        if not isinstance(r.get("texts"), (list, tuple)) or not isinstance(r.get("images"), (list, tuple)):
            raise ValueError(f"row {i}: 'texts' and 'images' must be lists")
        if len(r["texts"]) != len(r["images"]):
            raise ValueError(f"row {i}: {len(r['texts'])} texts but {len(r['images'])} images")
    has_bytes = any(isinstance(x, (bytes, bytearray, dict)) for r in rows for x in r["images"])
    if has_bytes:
        image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        for r in rows:
            r["images"] = [None if x is None else
                           {"bytes": bytes(x), "path": None} if isinstance(x, (bytes, bytearray)) else
                           {"bytes": x.get("bytes"), "path": x.get("path")} if isinstance(x, dict) else
                           {"bytes": None, "path": x} for x in r["images"]]
    else:
        image_type = pa.list_(pa.string())
    extra_cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in _RESERVED and k not in extra_cols:
                extra_cols.append(k)
    fields = [("id", pa.string())] if any("id" in r for r in rows) else []
    fields += [("texts", pa.list_(pa.string())), ("images", image_type)]
    columns: dict[str, list[Any]] = {name: [] for name, _ in fields}
    for k in extra_cols:
        columns[k] = []
    for r in rows:
        if fields and fields[0][0] == "id":
            columns["id"].append(None if r.get("id") is None else str(r["id"]))
        columns["texts"].append(list(r["texts"]))
        columns["images"].append(list(r["images"]))
        for k in extra_cols:
            v = r.get(k)
            columns[k].append(json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, (dict, list)) else v)
    arrays = {name: pa.array(columns[name], type=typ) for name, typ in fields}
    for k in extra_cols:
        arrays[k] = pa.array(columns[k])
    table = pa.table(arrays)
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f, compression=compression, row_group_size=row_group_size)
    return len(rows)


__all__ = [
    "ImageResolver",
    "iter_obelics",
    "list_shards",
    "read_obelics",
    "row_to_record",
    "url_to_filename",
    "write_obelics_parquet",
]
