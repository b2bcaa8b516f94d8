"""Fingerprints of the tiny model's embeddings: run it before and after a change that must not change them (a
refactor, a new collator path) and compare.

Encodes fixed mixed-modal inputs with the tiny offline Qwen2.5-VL (built on first use): documents that are text only,
image first, interleaved text and images of three sizes (one above the pixel budget, shrunk), image only and a text
over the token limit (cut); queries plain and with a task template; at batch sizes 2 and 3, with and without
background prefetching, in full and at a Matryoshka prefix. For each set it prints the shape and the SHA-256 of the
float32 bytes, and a combined digest; ``--out`` writes them as JSON, ``--save`` the embeddings.

Equal digests mean bit-identical embeddings. They hold on one machine and thread count only: float32 sums differ
between CPUs and thread counts, so compare runs made on the same machine, never against a stored one. Even there an
occasional run differs in the last bits (seen: 1 run in about 10, one record, 7e-8 absolute: a kernel path that
varies from run to run, at any commit), so ``--against`` gives the largest difference beside the verdict:
``python benchmarks/embedding_fingerprint.py --save before.npz``, change, then
``python benchmarks/embedding_fingerprint.py --against before.npz`` (rerun once if only the last bits differ).
About 6 s on 2 cores, model build aside. It uses only ``Record``/``Part`` and ``NyxEncoder.from_pretrained`` /
``encode_*``, so a copy of it runs against older commits too (``PYTHONPATH=<old checkout> python <copy>``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nyx.data.records import Part, Record  # noqa: E402

console = Console(width=160)

#: (width, height) of the drawn images: small, mid-size, above the 400x28x28 pixel budget, one 28x28 tile
IMAGE_SIZES = ((64, 48), (300, 200), (900, 700), (28, 28))


def draw_images(folder: Path) -> list[str]:
    """Deterministic PNGs (a coloured background and a rectangle) of :data:`IMAGE_SIZES`."""
    paths = []
    for i, (w, h) in enumerate(IMAGE_SIZES):
        im = Image.new("RGB", (w, h), (20 * i, 100, 200 - 30 * i))
        ImageDraw.Draw(im).rectangle([w // 4, h // 4, w // 2, h // 2], fill=(255, 255 - 40 * i, 0))
        path = folder / f"image{i}.png"
        im.save(path)
        paths.append(str(path))
    return paths


def inputs(images: list[str]) -> tuple[list[Record], list[Record]]:
    """The documents and queries every fingerprint encodes."""
    docs = [
        Record("text", [Part.of_text("The Eiffel tower is in Paris and was built in 1889.")]),
        Record("image_first", [Part.of_image(images[0]), Part.of_text("A small picture of a square.")]),
        Record(
            "interleaved",
            [Part.of_text("Before."), Part.of_image(images[1]), Part.of_text("After."), Part.of_image(images[2])],
        ),
        Record("image_only", [Part.of_image(images[3])]),
        Record("long_text", [Part.of_text(" ".join(["long text"] * 400))]),
    ]
    queries = [
        Record("plain", [Part.of_text("Where is the Eiffel tower?")]),
        Record("task", [Part.of_image(images[1]), Part.of_text("What colour?")], extra={"task": "vqa"}),
    ]
    return docs, queries


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def encode_sets(model: str = "tiny") -> dict[str, np.ndarray]:
    """The embeddings of every set, by name."""
    from nyx.model.encoder import NyxEncoder

    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        docs, queries = inputs(draw_images(Path(tmp)))
        settings = {
            "batch 2": {"batch_size": 2},
            "batch 3, no prefetch, dim 64": {"batch_size": 3, "prefetch_batches": 0, "dim": 64},
        }
        for label, overrides in settings.items():
            enc = NyxEncoder.from_pretrained(model, device="cpu", show_progress=False, **overrides)
            sets[f"documents, {label}"] = enc.encode_documents(docs)
            sets[f"queries, {label}"] = enc.encode_queries(queries)
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="model profile or folder (default: the tiny offline model)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    ap.add_argument("--save", type=Path, default=None, help="save the embeddings (.npz), for a later --against")
    ap.add_argument("--against", type=Path, default=None, help="compare with embeddings saved by --save")
    args = ap.parse_args(argv)

    import torch

    sets = encode_sets(args.model)
    before = dict(np.load(args.against)) if args.against is not None else {}
    rows = []
    for name, emb in sets.items():
        row: dict[str, Any] = {"set": name, "shape": list(emb.shape), "sha256": digest(emb)}
        if args.against is not None:
            old = before.get(name)
            row["identical"] = old is not None and old.shape == emb.shape and digest(old) == row["sha256"]
            row["max_abs_diff"] = (
                float(np.abs(old.astype(np.float64) - emb).max())
                if old is not None and old.shape == emb.shape
                else None
            )
        rows.append(row)
    combined = hashlib.sha256("".join(r["sha256"] for r in rows).encode()).hexdigest()
    table = Table(title=f"Embedding fingerprints ({args.model})")
    columns = ["set", "shape", "sha256"] + (["bit-identical", "max |diff|"] if args.against is not None else [])
    for column in columns:
        table.add_column(column)
    for r in rows:
        cells = [r["set"], "x".join(map(str, r["shape"])), r["sha256"][:16]]
        if args.against is not None:
            diff = r["max_abs_diff"]
            cells += ["yes" if r["identical"] else "NO", "missing" if diff is None else f"{diff:.1e}"]
        table.add_row(*cells)
    console.print(table)
    console.print(f"digest {combined}")
    if args.out is not None:
        report = {
            "benchmark": "embedding_fingerprint",
            "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()},
            "model": args.model,
            "rows": rows,
            "digest": combined,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.save is not None:
        np.savez(args.save, **sets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
