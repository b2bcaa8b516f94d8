"""PDF files -> one record per page: the page rendered within the pixel budget, plus its text layer in reading order.

Rendering and text extraction use PDFium through ``pypdfium2`` (no external programs). For each page:

* the page is rendered at the scale that fills the pixel budget (``ImageConfig.max_pixels``, the profile's
  ``images.max_pixels``), then brought to the exact size Qwen's smart resize gives (both sides multiples of
  ``factor``, within the budget: :func:`nyx.data.images.target_size`), so the model's processor leaves it as it is;
  it is stored as deterministic PNG bytes under a content-addressed name (``sha256[:32].png``, the naming of
  :class:`nyx.data.obelics.ImageResolver`'s byte cache and of ``write_beir(images="copy")``);
* the text layer is read character by character (PDFium's own character list, in content-stream order), cut into
  lines where the position jumps, and the lines are put in reading order by a recursive XY-cut (split the page at
  its widest empty horizontal or vertical band, top before bottom, left before right; lines that cannot be split
  are read row by row, left to right). Content-stream order is what the producer wrote, and is often not the reading
  order (a footer written first, a two-column page written row by row); XY-cut reads single and multi-column pages
  top to bottom and column by column. Lines follow each glyph's own direction (a label drawn at 90 degrees is one
  line, not a column of letters) and the cut is made in the frame of the page's main text direction, so a landscape
  page stored rotated reads as displayed;
* a page without a text layer (a scan, a slide exported as a picture) becomes an image-only record.

A file that cannot be used is a reject naming the file, and the other files go on:

* ``encrypted PDF``: needs a password (PDFium's password error) or uses an unsupported security handler; a PDF
  encrypted with an empty user password opens in every viewer and is read like any other;
* ``truncated PDF``: no ``%%EOF`` marker within the last 1024 bytes (the rule Acrobat applies, PDF Reference 1.7,
  Appendix H): a file cut short, even when PDFium could rebuild part of it (its missing pages would be lost
  silently);
* ``corrupt PDF``: no ``%PDF-`` header within the first 1024 bytes, an empty file, or PDFium cannot parse it;
* ``empty PDF``: zero pages;
* a page that cannot be loaded or rendered is a reject of that page only (``unreadable PDF page``), as is a page
  whose shape the budget cannot hold (``extreme aspect ratio``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from nyx.data.images import DEFAULT_IMAGE_CONFIG, ImageConfig, encode_png, target_size
from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog

PDF_SUFFIX = ".pdf"
_HEAD_WINDOW = 1024  # a %PDF- header must start within the first 1024 bytes ...
_TAIL_WINDOW = 1024  # ... and %%EOF appear within the last 1024 bytes (PDF Reference 1.7, Appendix H)
# PDFium's FPDF_GetLastError codes (fpdfview.h)
_ERR_SUCCESS, _ERR_FILE, _ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 0, 2, 3, 4, 5


@dataclass
class PdfStats:
    files: int = 0  #: PDF files opened (rejected files not counted)
    pages: int = 0  #: page records made
    text_pages: int = 0
    image_only_pages: int = 0
    rejected_files: int = 0
    rejected_pages: int = 0
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)


def page_id(stem: str, page_number: int) -> str:
    """``<stem>__p<page, 1-based, at least 3 digits>``, e.g. ``annual-report__p007``."""
    return f"{stem}__p{page_number:03d}"


# ----------------------------------------------------------------------------------------------------------
# Opening a file
# ----------------------------------------------------------------------------------------------------------


def check_pdf_bytes(path: Path) -> None:
    """Refuse what is not a complete PDF file before PDFium sees it (header and ``%%EOF`` marker)."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_HEAD_WINDOW)
            f.seek(max(0, size - _TAIL_WINDOW - 64))
            tail = f.read()
    except OSError as e:
        raise RecordError(f"unreadable file: {name} ({e.strerror or e})", location=str(path)) from None
    if size == 0:
        raise RecordError(f"corrupt PDF: {name} is an empty file", location=str(path))
    if b"%PDF-" not in head:
        raise RecordError(f"corrupt PDF: {name} is not a PDF (no %PDF- header)", location=str(path))
    # trailing white space or NUL padding (some download tools add it) does not count against the 1024 bytes
    tail = tail.rstrip(b"\x00\r\n\t\f ")[-_TAIL_WINDOW:]
    if b"%%EOF" not in tail:
        raise RecordError(f"truncated PDF: {name} ends without the %%EOF marker (the file was cut short; "
                          f"{size} bytes)", location=str(path))


def open_pdf(path: str | os.PathLike, password: str | None = None):
    """A ``pypdfium2.PdfDocument`` for ``path``; :class:`RecordError` (naming the file) when it cannot be used."""
    import pypdfium2 as pdfium

    path = Path(path)
    check_pdf_bytes(path)
    name = path.name
    try:
        doc = pdfium.PdfDocument(path, password=password)
    except pdfium.PdfiumError as e:
        code = getattr(e, "err_code", None)
        if code == _ERR_PASSWORD:
            reason = f"encrypted PDF: {name} needs a password"
        elif code == _ERR_SECURITY:
            reason = f"encrypted PDF: {name} uses an unsupported security handler"
        elif code == _ERR_SUCCESS:  # PDFium parsed the file and refuses it without an error: no page tree, or 0 pages
            reason = f"empty PDF: {name} has no pages"
        elif code == _ERR_FILE:
            reason = f"unreadable file: {name} ({e})"
        else:
            reason = f"corrupt PDF: {name} cannot be parsed ({e})"
        raise RecordError(reason, location=str(path)) from None
    except OSError as e:
        raise RecordError(f"unreadable file: {name} ({e.strerror or e})", location=str(path)) from None
    try:
        n = len(doc)
    except Exception as e:  # noqa: BLE001 - a broken page tree
        doc.close()
        raise RecordError(f"corrupt PDF: {name} has no readable page tree ({e})", location=str(path)) from None
    if n == 0:
        doc.close()
        raise RecordError(f"empty PDF: {name} has no pages", location=str(path))
    return doc


# ----------------------------------------------------------------------------------------------------------
# Text layer in reading order
# ----------------------------------------------------------------------------------------------------------

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
        yield ch, box, angle  # type: ignore[misc]


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
            same_row = (_v_overlap(last, fbox) >= 0.5 * min(last[3] - last[1], fbox[3] - fbox[1])
                        or _v_overlap(cur.frame_box, fbox) >= 0.5 * min(cur.height, fbox[3] - fbox[1]))
            gap = fbox[0] - last[2]
            # ligatures ("fi") give both characters the same box: starting where the last glyph starts is fine
            if same_row and fbox[0] >= last[0] - 0.5 * h and gap <= 1.0 * h:
                if cur.space or gap > 0.5 * h:
                    cur.text.append(" ")
                cur.text.append(ch)
                cur.box = (min(cur.box[0], box[0]), min(cur.box[1], box[1]),
                           max(cur.box[2], box[2]), max(cur.box[3], box[3]))
                cur.frame_box = (min(cur.frame_box[0], fbox[0]), min(cur.frame_box[1], fbox[1]),
                                 max(cur.frame_box[2], fbox[2]), max(cur.frame_box[3], fbox[3]))
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


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------


def render_page(page, cfg: ImageConfig = DEFAULT_IMAGE_CONFIG, record_id: str | None = None):
    """The page as an RGB ``PIL.Image`` filling the pixel budget, at the exact size smart resize keeps."""
    from PIL import Image

    w, h = page.get_size()  # points, as displayed (rotation applied)
    if w <= 0 or h <= 0:
        raise RecordError(f"empty image: the page has size {w}x{h} pt", record_id=record_id)
    k = (cfg.max_pixels / (w * h)) ** 0.5
    tw, th = target_size(max(1, round(w * k)), max(1, round(h * k)), cfg=cfg, record_id=record_id,
                         what=f"a {w:.0f}x{h:.0f} pt page")
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


# ----------------------------------------------------------------------------------------------------------
# Files -> records
# ----------------------------------------------------------------------------------------------------------


def iter_pdf(path: str | os.PathLike, image_dir: str | os.PathLike, rejects: RejectLog,
             cfg: ImageConfig | None = None, stem: str | None = None, stats: PdfStats | None = None,
             source: str | None = None, password: str | None = None) -> Iterator[Record]:
    """One record per page of the PDF at ``path`` (id ``<stem>__pNNN``): ``[image, text]`` or ``[image]``.

    Page images are written under ``image_dir``. A file that cannot be used adds one reject naming it (and yields
    nothing); a page that cannot be rendered adds a reject for that page, and the other pages go on. Records carry
    ``source`` (the file) and ``page`` (1-based) as extra fields.
    """
    cfg = cfg or DEFAULT_IMAGE_CONFIG
    stats = stats if stats is not None else PdfStats()
    path = Path(path)
    image_dir = Path(image_dir)
    stem = stem or path.stem
    source = source or str(path)
    try:
        doc = open_pdf(path, password=password)
    except RecordError as e:
        e.location = source
        rejects.add(e)
        stats.rejected_files += 1
        return
    stats.files += 1
    mine = stats.per_file.setdefault(source, {"pages": 0, "text_pages": 0, "image_only_pages": 0, "rejected": 0})
    try:
        try:
            doc.init_forms()  # filled-in form fields are drawn on the page image
        except Exception:  # noqa: BLE001 - forms are optional
            pass
        for i in range(len(doc)):
            rid = page_id(stem, i + 1)
            try:
                page = doc[i]
            except Exception as e:  # noqa: BLE001 - PdfiumError and friends
                rejects.add(RecordError(f"unreadable PDF page: {path.name} page {i + 1} ({e})", record_id=rid,
                                        location=source))
                stats.rejected_pages += 1
                mine["rejected"] += 1
                continue
            try:
                img = render_page(page, cfg, record_id=rid)
                text = page_text(page)
            except RecordError as e:
                e.location = e.location or source
                rejects.add(e)
                stats.rejected_pages += 1
                mine["rejected"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - a page PDFium cannot render
                rejects.add(RecordError(f"unreadable PDF page: {path.name} page {i + 1} "
                                        f"({type(e).__name__}: {e})", record_id=rid, location=source))
                stats.rejected_pages += 1
                mine["rejected"] += 1
                continue
            finally:
                page.close()
            parts = [Part.of_image(store_png(img, image_dir))]
            if text.strip():
                parts.append(Part.of_text(text))
                stats.text_pages += 1
                mine["text_pages"] += 1
            else:
                stats.image_only_pages += 1
                mine["image_only_pages"] += 1
            stats.pages += 1
            mine["pages"] += 1
            yield Record(id=rid, content=parts, extra={"source": source, "page": i + 1})
    finally:
        doc.close()


__all__ = ["PDF_SUFFIX", "PdfStats", "check_pdf_bytes", "iter_pdf", "open_pdf", "page_id", "page_text",
           "render_page", "store_png"]
