"""Opening a PDF file, or refusing it with a reject that names the file: the header and ``%%EOF`` checks
made before PDFium sees the bytes (:func:`check_pdf_bytes`), then PDFium's own errors mapped to ``encrypted PDF``,
``corrupt PDF``, ``empty PDF`` or ``unreadable file`` (:func:`open_pdf`)."""

from __future__ import annotations

import os
from pathlib import Path

from nyx.data.rejects import RecordError

PDF_SUFFIX = ".pdf"
_HEAD_WINDOW = 1024  # a %PDF- header must start within the first 1024 bytes ...
_TAIL_WINDOW = 1024  # ... and %%EOF appear within the last 1024 bytes (PDF Reference 1.7, Appendix H)
# PDFium's FPDF_GetLastError codes (fpdfview.h)
_ERR_SUCCESS, _ERR_FILE, _ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 0, 2, 3, 4, 5


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
        raise RecordError(
            f"truncated PDF: {name} ends without the %%EOF marker (the file was cut short; {size} bytes)",
            location=str(path),
        )


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
