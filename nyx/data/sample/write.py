"""Writing the sample: the corpus rendered into OBELICS-layout Parquet shards and PNG files, replaced as a whole
(:func:`generate_sample`), its summary and digest, and the command line (``python -m nyx.data.sample``)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nyx.data.sample.corpus import DEFAULT_N_DOCS, build_corpus
from nyx.data.sample.spec import DocSpec

DEFAULT_SHARDS = 3
SHARD_NAME = "shard-{:05d}.parquet"
IMAGES_DIR = "images"


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that holds anything but a previous sample (the folder is swapped whole)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    foreign = [
        p.name
        for p in out_dir.iterdir()
        if not (p.name == IMAGES_DIR or (p.name.startswith("shard-") and p.suffix == ".parquet"))
    ]
    if foreign:
        raise FileExistsError(
            f"{out_dir} holds files that are not part of a sample corpus ({sorted(foreign)[:5]}); "
            "choose an empty or new folder"
        )


def tree_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over the sorted relative paths and contents of every file under ``folder``."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def generate_sample(
    out_dir: str | os.PathLike, n_docs: int = DEFAULT_N_DOCS, seed: int = 0, n_shards: int = DEFAULT_SHARDS
) -> dict[str, Any]:
    """Write the synthetic OBELICS-format sample to ``out_dir`` (replaced as a whole); return a summary.

    ``out_dir`` gets ``shard-00000.parquet`` ... and ``images/<doc id>-<k>.png``. Same arguments, same bytes.
    """
    from nyx.data.images import encode_png
    from nyx.data.obelics import write_obelics_parquet
    from nyx.utils.io import atomic_dir

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    if n_shards < 1:
        raise ValueError("n_shards must be at least 1")
    docs = build_corpus(seed, n_docs)
    with atomic_dir(out_dir) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        rows = []
        for doc in docs:
            texts: list[str | None] = []
            images: list[str | None] = []
            k = 0
            for item in doc.items:
                if isinstance(item, str):
                    texts.append(item)
                    images.append(None)
                else:
                    rel = f"{IMAGES_DIR}/{doc.id}-{k}.png"
                    (tmp / rel).write_bytes(encode_png(item.render()))
                    texts.append(None)
                    images.append(rel)
                    k += 1
            rows.append(
                {
                    "id": doc.id,
                    "url": doc.url,
                    "texts": texts,
                    "images": images,
                    "metadata": {"synthetic": True, "family": doc.family, "title": doc.title, "facts": doc.facts},
                }
            )
        per = math.ceil(len(rows) / n_shards)
        for s in range(n_shards):
            write_obelics_parquet(rows[s * per : (s + 1) * per], tmp / SHARD_NAME.format(s))
    summary = summarize(docs)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    summary.update(
        {
            "out_dir": str(out_dir),
            "seed": seed,
            "n_shards": n_shards,
            "n_files": len(files),
            "total_bytes": sum(p.stat().st_size for p in files),
            "digest": tree_digest(out_dir),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
    return summary


def summarize(docs: list[DocSpec]) -> dict[str, Any]:
    """Counts that show the corpus mix (documents, images, modality groups, families, fact placement)."""

    def modality(d: DocSpec) -> str:
        n = len(d.images)
        return "text" if n == 0 else ("image1" if n == 1 else "image2+")

    return {
        "n_docs": len(docs),
        "n_images": sum(len(d.images) for d in docs),
        "n_text_segments": sum(len(d.texts) for d in docs),
        "n_words": sum(len(t.split()) for d in docs for t in d.texts),
        "modality": dict(sorted(Counter(modality(d) for d in docs).items())),
        "families": dict(sorted(Counter(d.family for d in docs).items())),
        "image_kinds": dict(sorted(Counter(i.kind for d in docs for i in d.images).items())),
        "facts_by_where": dict(sorted(Counter(f["where"] for d in docs for f in d.facts).items())),
        "n_facts": sum(len(d.facts) for d in docs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nyx.data.sample", description="Write the synthetic OBELICS-format sample corpus."
    )
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="output folder (replaced as a whole)")
    parser.add_argument("--n-docs", type=int, default=DEFAULT_N_DOCS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    args = parser.parse_args(argv)
    summary = generate_sample(args.out, n_docs=args.n_docs, seed=args.seed, n_shards=args.shards)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
