"""Loading images safely: one function that turns any image reference into a model-ready RGB picture.

Every image that enters Nyx (corpus chunks, queries, training batches, the generator's context) goes
through :func:`load_image`, so the same rules hold everywhere:

* a reference is a file path, a ``data:`` URL (base64 or percent-encoded) or raw encoded bytes;
* the size declared in the header is checked *before* decoding (decompression bombs are refused);
* the image is decoded completely, so truncated or corrupt files fail here and not inside a batch
  (``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is kept off);
* EXIF orientation is applied, then the picture is converted to 8-bit RGB (palette with transparency,
  RGBA/LA composited over white, CMYK, 16-bit and 32-bit greyscale scaled to 8 bits, 1-bit, float);
* finally Qwen's smart-resize rule (``smart_resize`` from transformers' Qwen2-VL image processor) brings it
  to a pixel budget with both sides multiples of ``factor`` (28 = patch 14 x merge 2), so the model's own
  processor leaves it as it is.

Every failure raises :class:`~nyx.data.rejects.RecordError` naming the record and the reason; callers put it
into a :class:`~nyx.data.rejects.RejectLog` and go on with the batch.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import logging
import math
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import ConfigDict, model_validator

from nyx.data.rejects import RecordError
from nyx.utils.config import ConfigModel

log = logging.getLogger(__name__)

ImageRef = str | bytes | bytearray | os.PathLike

# Truncated files must fail: never let PIL pad them with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


#: The paper's visual budget, in pixels: between 4 and 400 merged 28x28 tokens per image. The one definition: the
#: pipeline settings (``images``), :class:`ImageConfig`, the encoder's and the processor's defaults all read it.
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 400 * 28 * 28


class ImageConfig(ConfigModel):
    """How images are checked and sized.

    ``max_pixels``/``min_pixels`` are the paper's visual budget (400 and 4 merged 28x28 tokens);
    ``max_decode_pixels`` refuses any image whose header declares more pixels than that, before decoding.
    """

    model_config = ConfigDict(frozen=True)

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_pixels: int = DEFAULT_MIN_PIXELS
    factor: int = 28
    max_decode_pixels: int = 64_000_000
    resize: bool = True
    background: tuple[int, int, int] = (255, 255, 255)
    resample: int = Image.Resampling.BICUBIC  # what Qwen's image processor uses

    @model_validator(mode="after")
    def _check(self) -> ImageConfig:
        if self.factor <= 0 or self.min_pixels <= 0 or self.max_decode_pixels <= 0:
            raise ValueError("factor, min_pixels and max_decode_pixels must be positive")
        if self.max_pixels < self.factor * self.factor:
            raise ValueError(f"max_pixels={self.max_pixels} is below one {self.factor}x{self.factor} tile")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} exceeds max_pixels={self.max_pixels}")
        return self


DEFAULT_IMAGE_CONFIG = ImageConfig()


# ----------------------------------------------------------------------------------------------------------
# Smart resize
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _qwen_smart_resize() -> Callable[..., tuple[int, int]]:
    """transformers' ``smart_resize`` (imported lazily: the import costs seconds).

    The torchvision-backed module cannot be imported without torchvision (never installed here), so the
    PIL-backed processor's copy of the same function is preferred.
    """
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
    except ImportError:  # older transformers: only the original module exists
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    return smart_resize


def target_size(
    width: int, height: int, cfg: ImageConfig = DEFAULT_IMAGE_CONFIG, record_id: str | None = None, what: str = "image"
) -> tuple[int, int]:
    """``(width, height)`` after Qwen's smart resize, guaranteed within ``cfg.max_pixels``.

    Qwen's rule raises on aspect ratios above 200 and, for very thin images under a small budget, can end
    above the budget (each side is at least ``factor``); both become a :class:`RecordError` or a further
    shrink of the long side, so the budget always holds.
    """
    if width <= 0 or height <= 0:
        raise RecordError(f"empty image: {what} has size {width}x{height}", record_id=record_id)
    try:
        h, w = _qwen_smart_resize()(
            height, width, factor=cfg.factor, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels
        )
    except ValueError as e:
        raise RecordError(f"extreme aspect ratio: {what} is {width}x{height} ({e})", record_id=record_id) from None
    f = cfg.factor
    while h * w > cfg.max_pixels:  # only reachable when one side was clamped up to `factor`
        if h >= w and h > f:
            h -= f
        elif w > f:
            w -= f
        else:  # pragma: no cover - excluded by ImageConfig's own check
            raise RecordError(f"image budget too small: {what}", record_id=record_id)
    return w, h


# ----------------------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------------------


def describe_ref(ref: ImageRef) -> str:
    """A short printable name for an image reference (never a whole data URL)."""
    if isinstance(ref, (bytes, bytearray)):
        return f"<{len(ref)} bytes>"
    s = os.fspath(ref)
    if s.startswith("data:"):
        return f"<data URL, {len(s)} chars>"
    return s


def decode_data_url(url: str, record_id: str | None = None) -> bytes:
    """The bytes of a ``data:[<mediatype>][;base64],<data>`` URL."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise RecordError("invalid data URL: no ',' separating header and data", record_id=record_id)
    try:
        if head.endswith(";base64"):
            return base64.b64decode(payload.strip(), validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as e:
        raise RecordError(f"invalid data URL: bad base64 ({e})", record_id=record_id) from None


def bytes_to_data_url(data: bytes, mime: str | None = None) -> str:
    """Encode image bytes as a base64 ``data:`` URL; the MIME type is sniffed from the header if not given."""
    if mime is None:
        mime = sniff_mime(data) or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of encoded image bytes, read from the header only (no decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return Image.MIME.get(im.format or "")
    except Exception:  # noqa: BLE001 - any unreadable header simply has no type
        return None


def _read_source(ref: ImageRef, what: str, record_id: str | None) -> bytes:
    if isinstance(ref, (bytes, bytearray)):
        data = bytes(ref)
    else:
        s = os.fspath(ref)
        if isinstance(s, bytes):  # pragma: no cover - bytes paths
            s = os.fsdecode(s)
        if s.startswith("data:"):
            data = decode_data_url(s, record_id)
        else:
            p = Path(s)
            if not p.exists():
                raise RecordError(f"image not found: {s}", record_id=record_id)
            if not p.is_file():
                raise RecordError(f"image is not a file: {s}", record_id=record_id)
            try:
                data = p.read_bytes()
            except OSError as e:
                raise RecordError(f"image unreadable: {s} ({e.strerror or e})", record_id=record_id) from None
    if not data:
        raise RecordError(f"empty image file: {what} has zero bytes", record_id=record_id)
    return data


def _open_checked(data: bytes, cfg: ImageConfig, what: str, record_id: str | None) -> Image.Image:
    """Open (header only) and refuse bombs before any pixel is decoded."""
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise RecordError(f"decompression bomb: {what} ({e})", record_id=record_id) from None
    except UnidentifiedImageError:
        raise RecordError(f"undecodable image: {what} (not a recognised image format)", record_id=record_id) from None
    except Exception as e:  # noqa: BLE001 - corrupt headers raise anything (SyntaxError, struct.error, ...)
        raise RecordError(f"undecodable image: {what} ({type(e).__name__}: {e})", record_id=record_id) from None
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise RecordError(f"empty image: {what} declares size {w}x{h}", record_id=record_id)
    if w * h > cfg.max_decode_pixels:
        im.close()
        raise RecordError(
            f"decompression bomb: {what} declares {w}x{h} = {w * h} pixels (limit {cfg.max_decode_pixels})",
            record_id=record_id,
        )
    return im


def _decode_fully(im: Image.Image, what: str, record_id: str | None) -> Image.Image:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone switched it on: truncated files would pass silently
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was enabled elsewhere; Nyx switches it off again")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise RecordError(f"decompression bomb: {what} ({e})", record_id=record_id) from None
    except OSError as e:
        msg = str(e)
        kind = "truncated image" if "truncated" in msg.lower() else "undecodable image"
        raise RecordError(f"{kind}: {what} ({msg})", record_id=record_id) from None
    except Exception as e:  # noqa: BLE001 - decoders raise ValueError, SyntaxError, struct.error, ...
        raise RecordError(f"undecodable image: {what} ({type(e).__name__}: {e})", record_id=record_id) from None
    return im


# ----------------------------------------------------------------------------------------------------------
# Conversion to 8-bit RGB
# ----------------------------------------------------------------------------------------------------------


def _over_background(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    base = Image.new("RGBA", rgba.size, background + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _scale_to_uint8(arr: np.ndarray, full_scale: float | None) -> Image.Image:
    """Greyscale array of any depth -> 8-bit 'L' image, then RGB."""
    a = arr.astype(np.float64)
    if full_scale is None:  # unknown range: stretch what is there
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    else:
        a = a * (255.0 / full_scale)
    out = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L").convert("RGB")


def to_rgb(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited over ``background``.

    16-bit greyscale (``I;16*``) maps 0..65535 to 0..255; 32-bit ``I`` is treated as 16-bit data when its
    values fit 0..65535 (what PNG and TIFF decoders produce), otherwise stretched; ``F`` is read as 0..1
    when it fits that range, otherwise stretched.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        if "transparency" in im.info:
            return _over_background(im.convert("RGBA"), background)
        return im.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _over_background(im.convert("RGBA"), background)
    if mode.startswith("I;16"):
        return _scale_to_uint8(np.asarray(im), 65535.0)
    if mode == "I":
        arr = np.asarray(im)
        fits16 = arr.size and arr.min() >= 0 and arr.max() <= 65535
        return _scale_to_uint8(arr, 65535.0 if fits16 else None)
    if mode == "F":
        arr = np.asarray(im)
        finite = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        fits01 = finite.size and finite.min() >= 0.0 and finite.max() <= 1.0
        return _scale_to_uint8(finite, 1.0 if fits01 else None)
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return im.convert("RGB")
    return im.convert("RGB")  # anything else PIL knows; unknown modes raise and are reported by the caller


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def _decode(ref: ImageRef, cfg: ImageConfig, record_id: str | None) -> Image.Image:
    """Read, check, fully decode, orient and convert one image to RGB (no resizing)."""
    what = describe_ref(ref)
    data = _read_source(ref, what, record_id)
    im = _open_checked(data, cfg, what, record_id)
    try:
        _decode_fully(im, what, record_id)
        try:
            oriented = ImageOps.exif_transpose(im)  # always a new image
            rgb = to_rgb(oriented, cfg.background)
        except Exception as e:  # noqa: BLE001 - broken EXIF, unknown modes, ...
            raise RecordError(f"unsupported image: {what} ({type(e).__name__}: {e})", record_id=record_id) from None
    finally:
        im.close()
    return rgb


def load_image(ref: ImageRef, cfg: ImageConfig | None = None, record_id: str | None = None) -> Image.Image:
    """Load an image reference as a fully decoded, oriented 8-bit RGB image, smart-resized to the budget.

    ``ref`` is a path, a ``data:`` URL or raw encoded bytes. Raises :class:`RecordError` (with
    ``record_id`` and the reason) for a missing, empty, corrupt, truncated, oversized or unsupported image.
    """
    cfg = cfg or DEFAULT_IMAGE_CONFIG
    rgb = _decode(ref, cfg, record_id)
    if not cfg.resize:
        return rgb
    w, h = target_size(*rgb.size, cfg=cfg, record_id=record_id, what=describe_ref(ref))
    if (w, h) != rgb.size:
        rgb = rgb.resize((w, h), resample=cfg.resample)
    return rgb


def verify_image(ref: ImageRef, cfg: ImageConfig | None = None, record_id: str | None = None) -> tuple[int, int]:
    """Check that :func:`load_image` will succeed; return the decoded ``(width, height)`` (after EXIF rotation).

    Decodes every pixel (so truncation is caught) and checks that smart-resize accepts the shape.
    """
    cfg = cfg or DEFAULT_IMAGE_CONFIG
    rgb = _decode(ref, cfg, record_id)
    target_size(*rgb.size, cfg=cfg, record_id=record_id, what=describe_ref(ref))
    return rgb.size


def encode_png(img: Image.Image, compress_level: int = 9) -> bytes:
    """Deterministic PNG bytes: no metadata chunks, fixed compression settings."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=compress_level)
    return buf.getvalue()


def image_to_data_url(img: Image.Image, format: str = "PNG", quality: int = 90) -> str:
    """Encode an in-memory image as a base64 ``data:`` URL (PNG by default, lossless and deterministic)."""
    fmt = format.upper()
    if fmt == "PNG":
        data = encode_png(img)
    else:
        buf = io.BytesIO()
        out = img.convert("RGB") if fmt == "JPEG" and img.mode != "RGB" else img
        out.save(buf, format=fmt, quality=quality)
        data = buf.getvalue()
    return bytes_to_data_url(data, Image.MIME.get(fmt, "application/octet-stream"))


def merged_tokens(width: int, height: int, cfg: ImageConfig = DEFAULT_IMAGE_CONFIG) -> int:
    """How many merged visual tokens an image of this (already resized) size costs."""
    return math.prod((width // cfg.factor, height // cfg.factor))


__all__ = [
    "DEFAULT_IMAGE_CONFIG",
    "ImageConfig",
    "ImageRef",
    "bytes_to_data_url",
    "decode_data_url",
    "describe_ref",
    "encode_png",
    "image_to_data_url",
    "load_image",
    "merged_tokens",
    "sniff_mime",
    "target_size",
    "to_rgb",
    "verify_image",
]
