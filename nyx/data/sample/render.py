"""Drawing the sample's images with PIL only and its bundled default font (no download): bar charts, signs and
posters, flags, devices, score cards, birds, eggs, counted shapes and barns. :data:`RENDERERS` maps an
:class:`~nyx.data.sample.spec.ImageSpec` kind to its function."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

from nyx.data.sample.vocabulary import COLOURS


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font (FreeType build): no download


def _fit_font(draw: ImageDraw.ImageDraw, text: str, max_width: int, size: int, min_size: int = 9):
    while size > min_size and draw.textlength(text, font=_font(size)) > max_width:
        size -= 1
    return _font(size)


def _canvas(w: int, h: int, bg: tuple[int, int, int] = (255, 255, 255)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("RGB", (w, h), bg)
    return im, ImageDraw.Draw(im)


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return (20, 20, 20) if sum(colour) > 500 else (255, 255, 255)


def render_bar_chart(title: str, labels: list[str], values: list[int], colour: str) -> Image.Image:
    w, h = 336, 224
    im, d = _canvas(w, h)
    d.text((w // 2, 14), title, fill=(20, 20, 20), font=_fit_font(d, title, w - 16, 14), anchor="mm")
    left, right, top, bottom = 28, w - 12, 40, h - 28
    d.line([(left, top - 6), (left, bottom), (right, bottom)], fill=(60, 60, 60), width=1)
    vmax = max(values)
    slot = (right - left) / len(values)
    bar_w = max(6, int(slot * 0.6))
    for i, (lab, v) in enumerate(zip(labels, values)):
        x0 = int(left + slot * i + (slot - bar_w) / 2)
        y0 = int(bottom - (bottom - top - 14) * v / vmax)
        d.rectangle([x0, y0, x0 + bar_w, bottom - 1], fill=COLOURS[colour])
        d.text((x0 + bar_w // 2, y0 - 8), str(v), fill=(20, 20, 20), font=_font(11), anchor="mm")
        d.text(
            (x0 + bar_w // 2, bottom + 11),
            lab,
            fill=(40, 40, 40),
            font=_fit_font(d, lab, int(slot) - 2, 11),
            anchor="mm",
        )
    return im


def render_sign(lines: list[str], colour: str) -> Image.Image:
    w, h = 320, 200
    im, d = _canvas(w, h, (186, 214, 236))
    d.rectangle([0, 150, w, h], fill=(110, 150, 90))
    d.rectangle([152, 120, 168, 190], fill=(90, 90, 90))
    board = COLOURS[colour]
    d.rounded_rectangle([20, 16, w - 20, 140], radius=12, fill=board, outline=(240, 240, 240), width=3)
    ink = _ink(board)
    sizes = [20] + [15] * (len(lines) - 1)
    y = 16 + (124 - sum(s + 8 for s in sizes)) // 2 + 10
    for line, s in zip(lines, sizes):
        d.text((w // 2, y), line, fill=ink, font=_fit_font(d, line, w - 60, s), anchor="mm")
        y += s + 8
    return im


def render_flag(colours: list[str], layout: str) -> Image.Image:
    w, h = 240, 160
    im, d = _canvas(w, h, (230, 236, 240))
    x0, y0, x1, y1 = 30, 20, 210, 140
    a, b = COLOURS[colours[0]], COLOURS[colours[1]]
    if layout == "horizontal":
        d.rectangle([x0, y0, x1, (y0 + y1) // 2], fill=a)
        d.rectangle([x0, (y0 + y1) // 2, x1, y1], fill=b)
    elif layout == "vertical":
        d.rectangle([x0, y0, (x0 + x1) // 2, y1], fill=a)
        d.rectangle([(x0 + x1) // 2, y0, x1, y1], fill=b)
    else:
        d.rectangle([x0, y0, x1, y1], fill=a)
        d.rectangle([x0 + 60, y0, x0 + 84, y1], fill=b)
        d.rectangle([x0, (y0 + y1) // 2 - 12, x1, (y0 + y1) // 2 + 12], fill=b)
    d.rectangle([x0, y0, x1, y1], outline=(60, 60, 60), width=1)
    d.line([(x0 - 4, y0 - 6), (x0 - 4, h - 4)], fill=(80, 80, 80), width=4)
    return im


def render_device(colour: str, label: str, shape: int) -> Image.Image:
    w, h = 280, 196
    im, d = _canvas(w, h, (236, 236, 232))
    d.rectangle([0, 160, w, h], fill=(200, 190, 176))
    body = COLOURS[colour]
    if shape == 0:
        d.rounded_rectangle([80, 30, 200, 166], radius=18, fill=body, outline=(60, 60, 60), width=2)
    elif shape == 1:
        d.ellipse([70, 30, 210, 170], fill=body, outline=(60, 60, 60), width=2)
    else:
        d.polygon([(140, 24), (214, 166), (66, 166)], fill=body, outline=(60, 60, 60))
    d.rectangle([98, 118, 182, 138], fill=(245, 245, 245), outline=(60, 60, 60))
    d.text((140, 128), label, fill=(20, 20, 20), font=_fit_font(d, label, 80, 12), anchor="mm")
    d.ellipse([134, 90, 146, 102], fill=(60, 220, 90))
    return im


def render_scorecard(big: str, small: str, colour: str) -> Image.Image:
    w, h = 224, 168
    im, d = _canvas(w, h, COLOURS[colour])
    ink = _ink(COLOURS[colour])
    d.text((w // 2, 72), big, fill=ink, font=_font(56), anchor="mm")
    d.text((w // 2, 136), small, fill=ink, font=_font(14), anchor="mm")
    return im


def render_bird(colour: str, accent: str, facing: str) -> Image.Image:
    w, h = 280, 196
    im, d = _canvas(w, h, (214, 232, 244))
    d.rectangle([0, 150, w, h], fill=(120, 100, 70))  # branch
    body, acc = COLOURS[colour], COLOURS[accent]
    d.ellipse([80, 70, 200, 146], fill=body, outline=(40, 40, 40))
    hx = 190 if facing == "right" else 90
    d.ellipse([hx - 30, 40, hx + 30, 100], fill=body, outline=(40, 40, 40))
    d.ellipse(
        [hx - 6 + (8 if facing == "right" else -8), 58, hx + 6 + (8 if facing == "right" else -8), 70],
        fill=(10, 10, 10),
    )
    tip = hx + 56 if facing == "right" else hx - 56
    base = hx + 26 if facing == "right" else hx - 26
    d.polygon([(base, 66), (tip, 76), (base, 86)], fill=acc, outline=(40, 40, 40))
    tail = [(84, 100), (30, 86), (40, 120)] if facing == "right" else [(196, 100), (250, 86), (240, 120)]
    d.polygon(tail, fill=body, outline=(40, 40, 40))
    d.line([(130, 146), (126, 160)], fill=(60, 40, 20), width=3)
    d.line([(150, 146), (154, 160)], fill=(60, 40, 20), width=3)
    return im


def render_eggs(n: int, colour: str) -> Image.Image:
    w, h = 280, 168
    im, d = _canvas(w, h, (170, 190, 140))
    d.ellipse([20, 40, 260, 150], fill=(140, 110, 70), outline=(90, 70, 40), width=3)
    d.ellipse([40, 54, 240, 136], fill=(110, 84, 50))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    for k in range(n):
        r, c = divmod(k, cols)
        in_row = cols if r < rows - 1 else n - cols * (rows - 1)
        cx = w // 2 + int((c - (in_row - 1) / 2) * 44)
        cy = 95 + int((r - (rows - 1) / 2) * 34)
        d.ellipse([cx - 16, cy - 13, cx + 16, cy + 13], fill=COLOURS[colour], outline=(60, 60, 60))
    return im


def render_shapes(n: int, shape: str, colour: str, caption: str) -> Image.Image:
    w, h = 240, 180
    im, d = _canvas(w, h, (245, 240, 230))
    for k in range(n):
        cx = w // 2 + int((k - (n - 1) / 2) * 60)
        if shape == "circle":
            d.ellipse([cx - 48, 22, cx + 48, 118], fill=COLOURS[colour], outline=(40, 40, 40), width=2)
            d.ellipse([cx - 22, 52, cx - 10, 64], fill=(255, 255, 255))
            d.ellipse([cx + 10, 52, cx + 22, 64], fill=(255, 255, 255))
        else:
            d.rectangle([cx - 40, 30, cx + 40, 110], fill=COLOURS[colour], outline=(40, 40, 40), width=2)
    d.text((w // 2, 150), caption, fill=(30, 30, 30), font=_font(18), anchor="mm")
    return im


def render_barn(colour: str) -> Image.Image:
    w, h = 280, 196
    im, d = _canvas(w, h, (200, 222, 240))
    d.rectangle([0, 150, w, h], fill=(104, 160, 80))
    c = COLOURS[colour]
    d.polygon([(70, 80), (140, 30), (210, 80)], fill=(70, 60, 60))
    d.rectangle([76, 80, 204, 156], fill=c, outline=(40, 40, 40))
    d.rectangle([122, 104, 158, 156], fill=(240, 240, 240), outline=(40, 40, 40))
    d.line([(122, 104), (158, 156)], fill=(40, 40, 40), width=2)
    d.line([(158, 104), (122, 156)], fill=(40, 40, 40), width=2)
    return im


RENDERERS: dict[str, Callable[..., Image.Image]] = {
    "bar_chart": render_bar_chart,
    "sign": render_sign,
    "flag": render_flag,
    "device": render_device,
    "scorecard": render_scorecard,
    "bird": render_bird,
    "eggs": render_eggs,
    "shapes": render_shapes,
    "barn": render_barn,
}
