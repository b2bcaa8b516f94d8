"""Metadata for the Dagster UI (valid JSON, rounded for reading, tables typed, images inlined) and the values asset
runs record beside it (the data snapshot's md5 for MLflow tags)."""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

#: shown for a number that has no value (NaN, infinity) where a missing value would read as zero or blank
NOT_AVAILABLE = "n/a"


def _round(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def readable(value: Any, digits: int = 4, missing: Any = None) -> Any:
    """``value`` made valid JSON and rounded for reading, recursively: a float to ``digits`` significant digits, a
    NaN or infinity (or pandas' missing values) to ``missing``, numpy scalars and arrays to Python numbers and
    lists, mappings to dicts with string keys, tuples and sets to lists. Anything else is left as it is."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return _round(value, digits) if math.isfinite(value) else missing
    if isinstance(value, Mapping):
        return {str(k): readable(v, digits, missing) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [readable(v, digits, missing) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return readable(value.tolist(), digits, missing)
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return missing
    except ImportError:  # pragma: no cover
        pass
    return value


def _column_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def table_metadata(rows: Sequence[Mapping[str, Any]], digits: int = 4) -> dg.TableMetadataValue:
    """A Dagster table of ``rows`` (e.g. ``DataFrame.to_dict("records")``): cells :func:`readable` (a missing
    number is an empty cell, not NaN, which the UI cannot parse), anything but str/int/float/bool as text, and a
    schema typed from every row (not only the first)."""
    cells = []
    for row in rows:
        out = {}
        for k, v in row.items():
            v = readable(v, digits)
            out[str(k)] = v if v is None or isinstance(v, (str, int, float, bool)) else str(v)
        cells.append(out)
    columns = list(dict.fromkeys(k for r in cells for k in r))
    schema = dg.TableSchema(columns=[dg.TableColumn(c, _column_type([r.get(c) for r in cells])) for c in columns])
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: r.get(c) for c in columns}) for r in cells], schema=schema
    )


def readable_metadata(meta: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    """An asset's metadata with every number :func:`readable`: raw floats and ``MetadataValue.float`` rounded (a NaN
    or infinity becomes the text ``n/a``), JSON values and table cells cleaned inside (missing: ``null``). Other
    values (Markdown, URLs, paths, ints, text) are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, dg.FloatMetadataValue):
            value = value.value
        if isinstance(value, float) or (
            hasattr(value, "dtype") and getattr(value, "ndim", None) == 0 and value.dtype.kind == "f"
        ):
            value = float(value)
            out[key] = _round(value, digits) if math.isfinite(value) else NOT_AVAILABLE
        elif isinstance(value, dg.JsonMetadataValue):
            out[key] = dg.MetadataValue.json(readable(value.data, digits))
        elif isinstance(value, dg.TableMetadataValue):
            out[key] = dg.MetadataValue.table(
                records=[dg.TableRecord(readable(r.data, digits)) for r in value.records], schema=value.schema
            )
        elif isinstance(value, (Mapping, list, tuple)) and not isinstance(value, dg.MetadataValue):
            out[key] = dg.MetadataValue.json(readable(value, digits))
        else:
            out[key] = value
    return out


def md_image(
    source: Any, alt: str, caption: str | None = None, max_bytes: int | None = None
) -> dg.MarkdownMetadataValue:
    """Markdown metadata showing a PNG (a matplotlib figure, PNG bytes or a PNG file) inlined as a base64 ``data:``
    URL, so that the Dagster UI renders it (it cannot follow a file path); downscaled to at most ``max_bytes``
    (default :data:`nyx.eval.plots.MAX_INLINE_BYTES`)."""
    from nyx.eval.plots import MAX_INLINE_BYTES, png_data_url

    md = f"![{alt}]({png_data_url(source, max_bytes=max_bytes or MAX_INLINE_BYTES)})"
    return dg.MetadataValue.md(md + (f"\n\n{caption}" if caption else ""))


def jsonable(obj):
    """``obj`` as plain JSON values: anything JSON cannot hold written as its ``str``."""
    return json.loads(json.dumps(obj, default=str))


def data_snapshot_md5(dvc) -> str | None:
    """The md5 ``data.dvc`` names now (the data version of the workspace), ``None`` when the data is unversioned or
    DVC cannot say (the ``dvc.data_md5`` tag of MLflow runs)."""
    try:
        return dvc.dvc().tracked_md5("data")
    except Exception:
        return None
