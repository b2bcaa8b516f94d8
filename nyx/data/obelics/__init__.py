"""Reading and writing OBELICS shards: web documents as interleaved text segments and images.

An OBELICS row holds two parallel lists, ``texts`` and ``images``, of the same length; at each position
exactly one of the two is non-null, and the order is the page's reading order. Optional columns: ``id``,
``url``, ``metadata`` (a JSON string in the public dataset), ``general_metadata`` and anything else; they
are kept in :attr:`Record.extra`.

An image entry may be

* a file path, relative to the shard's folder (or absolute);
* an ``http(s)://`` URL whose file was downloaded beforehand into ``image_root``: the file is found
  through a ``url_map`` (JSON object ``{url: path relative to image_root}``) or, by default, named
  ``sha1(url) + extension`` (see :func:`url_to_filename`);
* raw encoded bytes (``bytes`` or a Hugging Face image struct ``{"bytes": ..., "path": ...}``; in JSONL
  the bytes are base64 text), which become a ``data:`` URL or, with ``bytes_cache``, a content-addressed
  file in that folder;
* a ``data:`` URL.

Shards are Parquet (``*.parquet``, read in row batches with pyarrow) or JSONL (``*.jsonl``). Document ids are
stable: the row's ``id`` when present, otherwise ``<shard stem>-<row index>``. Following the paper,
documents with any image that cannot be resolved (or, with ``verify_images=True``, fully decoded) are
dropped and logged to the :class:`~nyx.data.rejects.RejectLog` with the reason.

A shard that cannot be read at all (a truncated or corrupt Parquet file, an I/O error) raises
:class:`~nyx.data.rejects.ShardError` with the file's name and the reader's message, whether or not a reject
log is given: it is not a bad record, the caller rejects the whole shard (``nyx.data.ingest`` does). A JSONL
shard cut mid-record is not unreadable: its complete lines are read, the cut last line is one rejected record.

Modules: :mod:`~nyx.data.obelics.image_refs` (image entries), :mod:`~nyx.data.obelics.reader` (shards to records),
:mod:`~nyx.data.obelics.writer` (rows to a Parquet shard).
"""

from nyx.data.obelics.image_refs import IMAGE_EXTENSIONS, ImageResolver, url_to_filename
from nyx.data.obelics.reader import SHARD_SUFFIXES, iter_obelics, list_shards, read_obelics, row_to_record
from nyx.data.obelics.writer import write_obelics_parquet

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHARD_SUFFIXES",
    "ImageResolver",
    "iter_obelics",
    "list_shards",
    "read_obelics",
    "row_to_record",
    "url_to_filename",
    "write_obelics_parquet",
]
