"""Peak memory of one contrastive training step, plain vs gradient cache, as the batch grows.

Each (mode, batch size) runs in a fresh subprocess, so peaks do not mix: the model is loaded and the batch
collated first, then the step runs; the figure is the step's extra peak memory
(``ru_maxrss`` after the step minus RSS before it on the CPU; ``torch.cuda.max_memory_allocated`` on a GPU).
Queries are short, documents long (``--doc-words``), one hard negative per query, so documents dominate.

    .venv/bin/python benchmarks/gradcache_memory.py                       # tiny model, CPU, batches 4 16 64 256
    .venv/bin/python benchmarks/gradcache_memory.py --batches 8 16 32 --chunk 4 --model tiny

Prints a table and writes ``benchmarks/results/gradcache_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = (
    "river stone light garden window paper music bridge forest market winter engine silver harbour "
    "letter mountain candle station island thunder"
).split()


def _records(batch: int, doc_words: int):
    from nyx.data.records import Record
    from nyx.train.dataset import TrainingExample, batch_records

    examples = []
    for i in range(batch):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(doc_words)]
        neg = [WORDS[(i * 5 + k * 11) % len(WORDS)] for k in range(doc_words)]
        examples.append(
            TrainingExample(
                Record.from_text(f"q{i}", f"which text mentions {WORDS[i % len(WORDS)]} {i}?"),
                Record.from_text(f"d{i}", " ".join(words)),
                (Record.from_text(f"n{i}", " ".join(neg)),),
                "bench",
            )
        )
    return batch_records(examples)


def child(mode: str, batch: int, chunk: int, doc_words: int, model: str) -> dict:
    """Runs in the subprocess: one training step, returns its peak memory and time."""
    import psutil
    import torch

    from nyx.model.encoder import NyxEncoder
    from nyx.train.gradcache import cached_step, plain_step
    from nyx.train.loss import MatryoshkaInfoNCE
    from nyx.utils.batches import chunked

    torch.manual_seed(0)
    enc = NyxEncoder.from_pretrained(model, show_progress=False)
    enc.module.train()
    loss_fn = MatryoshkaInfoNCE()
    queries, docs = _records(batch, doc_words)
    if mode == "plain":
        q_in, d_in = enc.collate(queries, True), enc.collate(docs, False)
    else:
        q_in = [enc.collate(c, True) for c in chunked(queries, chunk)]
        d_in = [enc.collate(c, False) for c in chunked(docs, chunk)]
    n_tokens = int(sum(x["attention_mask"].sum() for x in ([q_in, d_in] if mode == "plain" else q_in + d_in)))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if mode == "plain":
        out = plain_step(enc.embed, q_in, d_in, batch, loss_fn)
    else:
        out = cached_step(enc.embed, q_in, d_in, batch, loss_fn)
    seconds = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "mode": mode,
        "batch": batch,
        "chunk": chunk if mode == "gradcache" else None,
        "tokens": n_tokens,
        "peak_mib": max(peak, 0) / 2**20,
        "seconds": seconds,
        "loss": float(out.loss.total),
        "device": "cuda" if cuda else "cpu",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 16, 64, 256])
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--doc-words", type=int, default=300)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = child(args.child[0], int(args.child[1]), args.chunk, args.doc_words, args.model)
        print("RESULT " + json.dumps(res))
        return

    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for batch in args.batches:
        for mode in ("plain", "gradcache"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                mode,
                str(batch),
                "--chunk",
                str(args.chunk),
                "--doc-words",
                str(args.doc_words),
                "--model",
                args.model,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{mode} batch {batch} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[len("RESULT ") :]))
            r = rows[-1]
            print(f"  {mode:9s} batch {batch:3d}: {r['peak_mib']:8.1f} MiB  {r['seconds']:6.2f} s", flush=True)

    print(
        f"\nPeak extra memory of one step ({rows[0]['device']}, model {args.model}, "
        f"{args.doc_words}-word documents, 1 negative/query, gradcache chunk {args.chunk})"
    )
    print(
        f"{'batch':>6} {'tokens':>8} {'plain MiB':>10} {'gradcache MiB':>14} {'ratio':>6} "
        f"{'plain s':>8} {'gradcache s':>12} {'loss diff':>10}"
    )
    for batch in args.batches:
        p = next(r for r in rows if r["batch"] == batch and r["mode"] == "plain")
        g = next(r for r in rows if r["batch"] == batch and r["mode"] == "gradcache")
        ratio = g["peak_mib"] / p["peak_mib"] if p["peak_mib"] > 0 else float("nan")
        print(
            f"{batch:6d} {p['tokens']:8d} {p['peak_mib']:10.1f} {g['peak_mib']:14.1f} {ratio:6.2f} "
            f"{p['seconds']:8.2f} {g['seconds']:12.2f} {abs(p['loss'] - g['loss']):10.2e}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "gradcache_memory.json"
    out.write_text(
        json.dumps({"args": {k: v for k, v in vars(args).items() if k != "child"}, "rows": rows}, indent=2) + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
