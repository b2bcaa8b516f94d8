"""A page rendered to fill the pixel budget at the exact size Qwen's smart resize keeps (:func:`render_page`),
and stored as PNG under its content address (:func:`store_png`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nyx.data.images import DEFAULT_IMAGE_CONFIG, ImageConfig, encode_png, target_size
from nyx.data.rejects import RecordError


def render_page(page, cfg: ImageConfig = DEFAULT_IMAGE_CONFIG, record_id: str | None = None):
    """The page as an RGB ``PIL.Image`` filling the pixel budget, at the exact size smart resize keeps."""
    from PIL import Image

    w, h = page.get_size()  # points, as displayed (rotation applied)
    if w <= 0 or h <= 0:
        raise RecordError(f"empty image: the page has size {w}x{h} pt", record_id=record_id)
    k = (cfg.max_pixels / (w * h)) ** 0.5
    tw, th = target_size(
        max(1, round(w * k)), max(1, round(h * k)), cfg=cfg, record_id=record_id, what=f"a {w:.0f}x{h:.0f} pt page"
    )
    scale = max(tw / w, th / h)
    bitmap = page.render(scale=scale)
    try:
        img = bitmap.to_pil()
        img = img.convert("RGB") if img.mode != "RGB" else img.copy()
    finally:
        bitmap.close()
    if img.size != (tw, th):
        img = img.resize((tw, th), resample=Image.Resampling.LANCZOS)
    return img


def store_png(img, image_dir: Path) -> Path:
    """Write ``img`` as PNG under its content address in ``image_dir`` (once); the absolute path."""
    from nyx.utils.io import atomic_write

    data = encode_png(img, compress_level=6)
    path = image_dir / (hashlib.sha256(data).hexdigest()[:32] + ".png")
    if not path.exists():
        with atomic_write(path, "wb") as f:
            f.write(data)
    return path.absolute()
