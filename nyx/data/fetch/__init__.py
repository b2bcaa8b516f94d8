"""Fetching the ``http(s)`` images of OBELICS shards into the content-addressed image store.

Public OBELICS rows name their images by URL. :func:`fetch_raw_images` downloads every remote image of the shards of
a raw folder (``data/raw``) into the folder's image store and rewrites each shard so that its rows name the local
files; :mod:`nyx.data.ingest` then reads the shards as if the images had always been there.

**Why httpx and not img2dataset.** img2dataset is the usual tool for bulk image download, but it pulls a large
dependency tree (its own resizer, fsspec, pyspark/ray backends, wandb hooks) and writes its own output layout
(webdataset tars or numbered folders, resized by default, keyed by sample, not by content). The pipeline needs
something else: the project's content-addressed store (one file per distinct image, named by its bytes), a
durable URL index to resume from, the project's reject rules with a reason per URL, and the original bytes (the
pixel budget is applied later, at decoding). ``httpx`` (already a dependency: the OpenAI-compatible clients use it)
gives an async client with connection limits, streaming and timeouts; the rest (rate limit, retries, sniffing,
index, shard rewriting) is this package.

Modules:

* :mod:`~nyx.data.fetch.config`   - :class:`FetchConfig`, :class:`FetchResult`, :func:`is_transient`;
* :mod:`~nyx.data.fetch.store`    - :class:`ImageStore`: the content-addressed store, its URL index and lock;
* :mod:`~nyx.data.fetch.download` - the download pool: rate limit, retries, sniffing (:func:`fetch_urls`);
* :mod:`~nyx.data.fetch.shard_io` - a shard's URLs, and the shard rewritten with local paths;
* :mod:`~nyx.data.fetch.shards`   - :func:`fetch_raw_images`: every shard of a raw folder, with rejects and reports.
"""

from nyx.data.fetch.config import FetchConfig, FetchResult, is_transient
from nyx.data.fetch.download import fetch_into, fetch_urls, sniff_image_file
from nyx.data.fetch.shard_io import entry_url, shard_urls
from nyx.data.fetch.shards import ShardReport, fetch_raw_images
from nyx.data.fetch.store import ImageStore

__all__ = [
    "FetchConfig",
    "FetchResult",
    "ImageStore",
    "ShardReport",
    "entry_url",
    "fetch_into",
    "fetch_raw_images",
    "fetch_urls",
    "is_transient",
    "shard_urls",
    "sniff_image_file",
]
