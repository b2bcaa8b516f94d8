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

Modules: :mod:`~nyx.data.pdf.opening` (checks and PDFium's errors), :mod:`~nyx.data.pdf.text` (the text layer in
reading order), :mod:`~nyx.data.pdf.render` (page images), :mod:`~nyx.data.pdf.pages` (files to page records).
"""

from nyx.data.pdf.opening import PDF_SUFFIX, check_pdf_bytes, open_pdf
from nyx.data.pdf.pages import PdfStats, iter_pdf, page_id
from nyx.data.pdf.render import render_page, store_png
from nyx.data.pdf.text import page_text

__all__ = [
    "PDF_SUFFIX",
    "PdfStats",
    "check_pdf_bytes",
    "iter_pdf",
    "open_pdf",
    "page_id",
    "page_text",
    "render_page",
    "store_png",
]
