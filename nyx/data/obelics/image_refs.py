"""OBELICS image entries: a path, a downloaded URL, embedded bytes or a ``data:`` URL, resolved to an image reference.

:class:`ImageResolver` turns one entry of a row's ``images`` list into what a :class:`~nyx.data.records.Part` holds
(an absolute path or a ``data:`` URL), or a :class:`~nyx.data.rejects.RecordError` saying why it cannot
(see :mod:`nyx.data.obelics` for the entry forms).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import posixpath
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx.data.images import bytes_to_data_url, sniff_mime
from nyx.data.rejects import RecordError
from nyx.utils.io import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
MIME_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
}


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
    def create(
        cls,
        image_root: str | os.PathLike | None = None,
        url_map: Mapping[str, str] | str | os.PathLike | None = None,
        bytes_cache: str | os.PathLike | None = None,
    ) -> ImageResolver:
        if url_map is not None and not isinstance(url_map, Mapping):
            with open(url_map, encoding="utf-8") as f:
                url_map = json.load(f)
            if not isinstance(url_map, dict):
                raise ValueError(f"url_map file must hold a JSON object {{url: path}}, got {type(url_map).__name__}")
        return cls(
            image_root=Path(image_root) if image_root is not None else None,
            url_map=url_map,
            bytes_cache=Path(bytes_cache) if bytes_cache is not None else None,
        )

    def resolve(self, entry: Any, base_dir: Path, record_id: str, position: int, from_json: bool = False) -> str:
        """Path or ``data:`` URL for one image entry; :class:`RecordError` when it cannot be found."""
        if isinstance(entry, dict):
            raw = entry.get("bytes")
            if raw is not None:
                return self._from_bytes(self._as_bytes(raw, record_id, position, from_json), record_id, position)
            entry = entry.get("path") or entry.get("url") or entry.get("src")
            if entry is None:
                raise RecordError(
                    f"malformed image entry: position {position} has neither bytes nor path", record_id=record_id
                )
        if isinstance(entry, (bytes, bytearray)):
            return self._from_bytes(bytes(entry), record_id, position)
        if not isinstance(entry, str) or not entry.strip():
            raise RecordError(
                f"malformed image entry: position {position} is {type(entry).__name__}", record_id=record_id
            )
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
                raise RecordError(
                    f"malformed image entry: position {position} has bytes that are not base64", record_id=record_id
                ) from None
        raise RecordError(
            f"malformed image entry: position {position} has bytes of type {type(raw).__name__}", record_id=record_id
        )

    def _from_bytes(self, data: bytes, record_id: str, position: int) -> str:
        if not data:
            raise RecordError(f"empty image file: position {position} has zero bytes", record_id=record_id)
        mime = sniff_mime(data)
        if self.bytes_cache is None:
            return bytes_to_data_url(data, mime)
        name = hashlib.sha256(data).hexdigest()[:32] + MIME_EXTENSIONS.get(mime or "", ".bin")
        path = self.bytes_cache / name
        if not path.exists():
            with atomic_write(path, "wb") as f:
                f.write(data)
        return os.fspath(path.absolute())

    def _from_url(self, url: str, record_id: str) -> Path:
        if self.image_root is None:
            raise RecordError(f"image not downloaded: {url} (no image_root given for URL images)", record_id=record_id)
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
