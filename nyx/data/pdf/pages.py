"""PDF files -> page records (:func:`iter_pdf`): each page rendered and its text read, the rejects of files and
pages that cannot be used, and the counts (:class:`PdfStats`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nyx.data.images import DEFAULT_IMAGE_CONFIG, ImageConfig
from nyx.data.pdf.opening import open_pdf
from nyx.data.pdf.render import render_page, store_png
from nyx.data.pdf.text import page_text
from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog


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


def iter_pdf(
    path: str | os.PathLike,
    image_dir: str | os.PathLike,
    rejects: RejectLog,
    cfg: ImageConfig | None = None,
    stem: str | None = None,
    stats: PdfStats | None = None,
    source: str | None = None,
    password: str | None = None,
) -> Iterator[Record]:
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
                rejects.add(
                    RecordError(f"unreadable PDF page: {path.name} page {i + 1} ({e})", record_id=rid, location=source)
                )
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
                rejects.add(
                    RecordError(
                        f"unreadable PDF page: {path.name} page {i + 1} ({type(e).__name__}: {e})",
                        record_id=rid,
                        location=source,
                    )
                )
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
