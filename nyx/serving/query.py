"""A request's ``content`` as a query :class:`~nyx.data.records.Record`: parsed by the JSONL reader's own parser,
every image checked (``data:`` URLs only, within the byte and pixel caps); :class:`ApiError` names the field at
fault."""

from __future__ import annotations

import io
import re
from typing import Any

from nyx.data.records import Record, is_data_url, record_from_json
from nyx.data.rejects import RecordError
from nyx.serving.config import ServeSettings
from nyx.serving.errors import ApiError

_PART = re.compile(r"^part (\d+)\b")


def _part_field(content: list[Any], reason: str) -> str:
    """The request field a ``record_from_json`` reason is about: ``content[i].type``, ``content[i].text``, ..."""
    m = _PART.match(reason)
    if not m:
        return "content"
    i = int(m.group(1))
    part = content[i] if i < len(content) else None
    if not isinstance(part, dict):
        return f"content[{i}]"
    kind = part.get("type")
    if kind not in ("text", "image"):
        return f"content[{i}].type"
    return f"content[{i}].{kind}"


def check_image(ref: str, where: str, settings: ServeSettings) -> None:
    """A query image must be a ``data:`` URL of a decodable image within the byte and pixel caps."""
    from PIL import Image

    from nyx.data.images import ImageConfig, decode_data_url, verify_image

    if not is_data_url(ref):
        raise ApiError(
            422,
            where,
            "query images must be data: URLs (data:image/png;base64,...); the server does not open files or URLs",
        )
    try:
        data = decode_data_url(ref)
    except RecordError as e:
        raise ApiError(422, where, e.reason) from None
    if not data:
        raise ApiError(422, where, "empty image: the data URL holds no bytes")
    if len(data) > settings.max_image_bytes:
        raise ApiError(413, where, f"image of {len(data)} bytes exceeds the limit of {settings.max_image_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise ApiError(413, where, f"image exceeds the limit of {settings.max_image_pixels} pixels") from None
    except Exception:  # noqa: BLE001 - any unreadable header
        raise ApiError(422, where, "undecodable image: not a recognised image format") from None
    if w * h > settings.max_image_pixels:
        raise ApiError(
            413, where, f"image of {w}x{h} = {w * h} pixels exceeds the limit of {settings.max_image_pixels} pixels"
        )
    try:
        verify_image(data, ImageConfig(max_decode_pixels=settings.max_image_pixels))
    except RecordError as e:
        raise ApiError(422, where, e.reason) from None


def parse_query(content: list[Any], choices: Any, settings: ServeSettings) -> Record:
    """The request's content as a :class:`Record` (parsed by ``record_from_json``, the JSONL reader's own parser),
    with every image checked. :class:`ApiError` names the field at fault."""
    if not content:
        raise ApiError(422, "content", "empty content: give at least one text or image part")
    obj: dict[str, Any] = {"id": "query", "content": content}
    if choices not in (None, "", []):
        obj["choices"] = choices
    try:
        record = record_from_json(obj)
    except RecordError as e:
        raise ApiError(422, _part_field(content, e.reason), e.reason) from None
    for i, part in enumerate(record.content):
        if part.type == "image":
            check_image(part.image or "", f"content[{i}].image", settings)
    return record
