"""What ``nyx ingest`` writes: a BEIR corpus folder (``corpus.jsonl``) or an OBELICS shard (``texts``/``images`` rows)
that ``raw_documents`` reads like any downloaded shard."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from nyx.data.images import decode_data_url, sniff_mime
from nyx.data.obelics.image_refs import MIME_EXTENSIONS
from nyx.data.records import Record, is_data_url
from nyx.data.sources import BEIR_CORPUS
from nyx.utils.io import atomic_write


def write_corpus_folder(records: list[Record], final: Path, tmp: Path) -> Path:
    """Write ``corpus.jsonl`` into ``tmp`` (the folder that becomes ``final``), images copied under ``images/``
    (content-addressed) and referenced relative to the folder: ``write_beir(images="copy")``'s placement."""
    from nyx.data.beir import place_images, write_records

    placed = place_images(records, final, tmp, "copy", {})
    write_records(placed, tmp / BEIR_CORPUS, final.absolute())
    return final / BEIR_CORPUS


def obelics_row(record: Record, image_name: dict[str, str]) -> dict[str, Any]:
    """A record as an OBELICS row: ``texts``/``images`` of the same length, one of the two set at each position."""
    texts: list[str | None] = []
    images: list[str | None] = []
    for p in record.content:
        if p.type == "text":
            texts.append(p.text)
            images.append(None)
        else:
            texts.append(None)
            images.append(image_name[p.image])  # type: ignore[index]
    row: dict[str, Any] = {"id": record.id, "texts": texts, "images": images}
    row.update({k: v for k, v in record.extra.items() if k not in row})
    return row


def write_obelics_shard(records: list[Record], raw_dir: str | os.PathLike, name: str) -> Path:
    """Write ``<raw_dir>/<name>.jsonl``, an OBELICS JSONL shard that ``raw_documents`` and the shard sensor read,
    with its images copied to ``<raw_dir>/images/<sha256[:32]><ext>`` (relative paths). Images are written first and
    the shard last, atomically (its temporary file is hidden, so the sensor never sees a partial shard)."""
    raw_dir = Path(raw_dir)
    image_name: dict[str, str] = {}
    for r in records:
        for ref in r.images:
            if ref in image_name:
                continue
            data = decode_data_url(ref, r.id) if is_data_url(ref) else Path(ref).read_bytes()
            suffix = Path(ref).suffix.lower() if not is_data_url(ref) else ""
            if not suffix:
                suffix = MIME_EXTENSIONS.get(sniff_mime(data) or "", ".bin")
            rel = f"images/{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
            dest = raw_dir / rel
            if not dest.exists():
                with atomic_write(dest, "wb") as f:
                    f.write(data)
            image_name[ref] = rel
    shard = raw_dir / f"{name}.jsonl"
    with atomic_write(shard, "w") as f:
        for r in records:
            f.write(json.dumps(obelics_row(r, image_name), ensure_ascii=False) + "\n")
    return shard


__all__ = ["obelics_row", "write_corpus_folder", "write_obelics_shard"]
