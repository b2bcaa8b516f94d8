"""A page's text layer in reading order (:func:`page_text`): PDFium's characters cut into lines along each
glyph's own direction, the lines ordered by a recursive XY-cut in the frame of the page's main text direction."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # left, bottom, right, top (PDF points, y up)


@dataclass
class _Line:
    text: list[str]
    box: Box  # union of the glyph boxes, in page space (what the reading order is computed on)
    last: Box  # the last glyph's box in the line's reading frame (continuity is judged against it)
    frame_box: Box  # union of the glyph boxes in the reading frame
    angle: int  # text direction in page space, quarter turns counter-clockwise: 0, 90, 180, 270
    space: bool = False  # a space is pending before the next glyph
    order_box: Box = (0.0, 0.0, 0.0, 0.0)  # the box in the page's dominant reading frame (set before ordering)

    @property
    def height(self) -> float:
        return self.frame_box[3] - self.frame_box[1]


def _corners(box: Box, fn) -> Box:
    (x1, y1), (x2, y2) = fn(box[0], box[1]), fn(box[2], box[3])
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _to_frame(box: Box, angle: int) -> Box:
    """A page-space box in the reading frame of text running at ``angle`` (its baseline along +x)."""
    if angle == 90:
        return _corners(box, lambda x, y: (y, -x))
    if angle == 180:
        return _corners(box, lambda x, y: (-x, -y))
    if angle == 270:
        return _corners(box, lambda x, y: (-y, x))
    return box


def _v_overlap(a: Box, b: Box) -> float:
    return min(a[3], b[3]) - max(a[1], b[1])


def _chars(textpage) -> Iterator[tuple[str, Box | None, int]]:
    """(character, glyph box or None, text direction) in PDFium's order, in page space."""
    import math

    import pypdfium2.raw as pdfium_c

    for i in range(textpage.count_chars()):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i)
        if code in (0, 0xFFFE, 0xFFFF) or 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        if ch in "\r\n" or ch.isspace():
            yield ch, None, 0
            continue
        if code < 0x20 or 0x7F <= code < 0xA0:  # control characters (PDFium marks some hyphens with 0x02)
            continue
        box = tuple(textpage.get_charbox(i))
        if box[2] - box[0] <= 0 and box[3] - box[1] <= 0:
            yield ch, None, 0
            continue
        # PDFium measures the angle clockwise (text running up the page reads 270 degrees)
        radians = pdfium_c.FPDFText_GetCharAngle(textpage, i)
        degrees = math.degrees(radians) if radians >= 0 else 0.0
        angle = int(round(-degrees / 90.0)) % 4 * 90
        yield ch, box, angle


def _lines(chars: Iterator[tuple[str, Box | None, int]]) -> list[_Line]:
    """Cut the character stream into lines: at PDFium's line breaks, and wherever the next glyph is not on the
    current line (another direction, no vertical overlap with it, a jump back, or a gap wider than the line is
    high), judged along the text's own direction (rotated labels are lines too)."""
    lines: list[_Line] = []
    cur: _Line | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None and "".join(cur.text).strip():
            lines.append(cur)
        cur = None

    for ch, box, angle in chars:
        if ch in "\r\n":
            close()
            continue
        if ch.isspace():
            if cur is not None:
                cur.space = True
            continue
        if box is None:  # a glyph without geometry: keep it with the current line
            if cur is not None:
                cur.text.append(ch)
            continue
        fbox = _to_frame(box, angle)
        if cur is not None and cur.angle == angle:
            last = cur.last
            h = max(cur.height, fbox[3] - fbox[1], 1e-6)
            same_row = _v_overlap(last, fbox) >= 0.5 * min(last[3] - last[1], fbox[3] - fbox[1]) or _v_overlap(
                cur.frame_box, fbox
            ) >= 0.5 * min(cur.height, fbox[3] - fbox[1])
            gap = fbox[0] - last[2]
            # ligatures ("fi") give both characters the same box: starting where the last glyph starts is fine
            if same_row and fbox[0] >= last[0] - 0.5 * h and gap <= 1.0 * h:
                if cur.space or gap > 0.5 * h:
                    cur.text.append(" ")
                cur.text.append(ch)
                cur.box = (
                    min(cur.box[0], box[0]),
                    min(cur.box[1], box[1]),
                    max(cur.box[2], box[2]),
                    max(cur.box[3], box[3]),
                )
                cur.frame_box = (
                    min(cur.frame_box[0], fbox[0]),
                    min(cur.frame_box[1], fbox[1]),
                    max(cur.frame_box[2], fbox[2]),
                    max(cur.frame_box[3], fbox[3]),
                )
                cur.last, cur.space = fbox, False
                continue
        close()
        cur = _Line(text=[ch], box=box, last=fbox, frame_box=fbox, angle=angle)
    close()
    return lines


def _gaps(intervals: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The widest empty band between the intervals' union (``(low, high)`` of the band), or None."""
    best: tuple[float, float] | None = None
    ordered = sorted(intervals)
    reach = ordered[0][1]
    for lo, hi in ordered[1:]:
        if lo > reach and (best is None or lo - reach > best[1] - best[0]):
            best = (reach, lo)
        reach = max(reach, hi)
    return best


def _rows(lines: list[_Line]) -> list[_Line]:
    """Lines no empty band separates: row by row from the top, each row left to right."""
    ordered = sorted(lines, key=lambda ln: -ln.order_box[3])
    rows: list[list[_Line]] = []
    for ln in ordered:
        centre = (ln.order_box[1] + ln.order_box[3]) / 2
        if rows and min(x.order_box[1] for x in rows[-1]) <= centre:
            rows[-1].append(ln)
        else:
            rows.append([ln])
    return [ln for row in rows for ln in sorted(row, key=lambda x: x.order_box[0])]


def _xy_cut(lines: list[_Line], depth: int = 0) -> list[_Line]:
    """Reading order by recursive XY-cut at the widest empty band (top before bottom, left before right)."""
    if len(lines) <= 1:
        return lines
    if depth > 200:  # pathological layouts: stop cutting
        return _rows(lines)
    ygap = _gaps([(ln.order_box[1], ln.order_box[3]) for ln in lines])
    xgap = _gaps([(ln.order_box[0], ln.order_box[2]) for ln in lines])
    ysize = ygap[1] - ygap[0] if ygap else -1.0
    xsize = xgap[1] - xgap[0] if xgap else -1.0
    if ygap is None and xgap is None:
        return _rows(lines)
    if ysize >= xsize:
        cut = ygap[1]  # type: ignore[index]
        first = [ln for ln in lines if ln.order_box[1] >= cut]  # above the band
        second = [ln for ln in lines if ln.order_box[1] < cut]
    else:
        cut = xgap[1]  # type: ignore[index]
        first = [ln for ln in lines if ln.order_box[0] < cut]  # left of the band
        second = [ln for ln in lines if ln.order_box[0] >= cut]
    return _xy_cut(first, depth + 1) + _xy_cut(second, depth + 1)


_SPACES = re.compile(r"[ \t\u00a0]+")


def page_text(page) -> str:
    """The text layer of a ``pypdfium2.PdfPage`` in reading order, one line per line ("" when it has none)."""
    textpage = page.get_textpage()
    try:
        try:
            lines = _lines(_chars(textpage))
        except Exception:  # noqa: BLE001 - a glyph without geometry PDFium refuses: keep the text, stream order
            return _SPACES.sub(" ", textpage.get_text_range().replace("\r\n", "\n")).strip()
    finally:
        textpage.close()
    if not lines:
        return ""
    # order in the frame of the page's main text direction: a landscape page stored rotated (/Rotate, or its text
    # drawn at 90 degrees) reads as displayed, without looking at /Rotate
    weight: dict[int, int] = {}
    for ln in lines:
        weight[ln.angle] = weight.get(ln.angle, 0) + len(ln.text)
    dominant = max(sorted(weight), key=lambda a: weight[a])
    for ln in lines:
        ln.order_box = _to_frame(ln.box, dominant)
    ordered = _xy_cut(lines) if len(lines) <= 5000 else lines
    out: list[str] = []
    prev: _Line | None = None
    for ln in ordered:
        text = _SPACES.sub(" ", "".join(ln.text)).strip()
        if not text:
            continue
        if out and prev is not None and _same_row(prev, ln):
            out[-1] += " " + text  # pieces of one line that a wide gap split (table cells, spaced-out words)
        else:
            out.append(text)
        prev = ln
    return "\n".join(out)


def _same_row(a: _Line, b: _Line) -> bool:
    """``b`` continues ``a``'s row to the right (same direction, overlapping heights)."""
    if a.angle != b.angle:
        return False
    fa, fb = _to_frame(a.box, a.angle), _to_frame(b.box, b.angle)
    return fb[0] >= fa[2] - 1e-6 and _v_overlap(fa, fb) >= 0.5 * min(fa[3] - fa[1], fb[3] - fb[1])
