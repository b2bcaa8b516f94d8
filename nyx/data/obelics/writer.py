"""Writing OBELICS rows as a Parquet shard (the public dataset's layout)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from nyx.data.obelics.reader import _RESERVED
from nyx.utils.io import atomic_write


def write_obelics_parquet(
    rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, compression: str = "zstd", row_group_size: int = 1024
) -> int:
    """Write OBELICS rows (dicts with ``texts``/``images`` lists and optional other columns) atomically.

    ``images`` is stored as ``list<string>`` when every entry is a string (path or URL) and as a list of
    ``{bytes, path}`` structs (the Hugging Face image layout) when any entry is bytes. Dict- or list-valued
    extra columns (``metadata``) are stored as JSON strings, like the public dataset. The output is
    deterministic for a given pyarrow version (no timestamps).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    dict_rows: list[dict[str, Any]] = [dict(r) for r in rows]
    for i, r in enumerate(dict_rows):
        if not isinstance(r.get("texts"), (list, tuple)) or not isinstance(r.get("images"), (list, tuple)):
            raise ValueError(f"row {i}: 'texts' and 'images' must be lists")
        if len(r["texts"]) != len(r["images"]):
            raise ValueError(f"row {i}: {len(r['texts'])} texts but {len(r['images'])} images")
    has_bytes = any(isinstance(x, (bytes, bytearray, dict)) for r in dict_rows for x in r["images"])
    if has_bytes:
        image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        for r in dict_rows:
            r["images"] = [
                None
                if x is None
                else {"bytes": bytes(x), "path": None}
                if isinstance(x, (bytes, bytearray))
                else {"bytes": x.get("bytes"), "path": x.get("path")}
                if isinstance(x, dict)
                else {"bytes": None, "path": x}
                for x in r["images"]
            ]
    else:
        image_type = pa.list_(pa.string())
    extra_cols: list[str] = []
    for r in dict_rows:
        for k in r:
            if k not in _RESERVED and k not in extra_cols:
                extra_cols.append(k)
    fields = [("id", pa.string())] if any("id" in r for r in dict_rows) else []
    fields += [("texts", pa.list_(pa.string())), ("images", image_type)]
    columns: dict[str, list[Any]] = {name: [] for name, _ in fields}
    for k in extra_cols:
        columns[k] = []
    for r in dict_rows:
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
    return len(dict_rows)
