"""Load test of ``nyx serve``: QPS and latency percentiles with query batching off and on.

1. Builds a small index on the fly with the tiny model (``NyxRetriever(model="tiny")``): the bundled sample's
   documents chunked like the retrieval corpus (``benchmarks/encode_search.py``'s ``sample_chunks``), or the
   corpus of a BEIR folder (``--beir``).
2. Queries: the BEIR folder's queries, or for the sample twelve words of a random chunk; a share of them
   (``--image-share``, default 25%) is drawn from chunks with images and carries the chunk's first image as a
   ``data:`` URL, so the load is mixed-modal. The queries are cycled until ``--requests`` have been sent.
3. For each batching window (``--windows``, default ``0,5``: off, then 5 ms), starts ``nyx serve INDEX --port P
   --batch-window-ms W`` in a subprocess bound to 127.0.0.1, waits for ``/health``, sends ``--warmup`` untimed
   requests, then ``--requests`` timed ``POST /search`` requests from ``--clients`` concurrent httpx clients
   (asyncio, one connection each). Client-side latency per request; QPS = requests / wall-clock time.
4. Prints a table (window, QPS, p50/p95/p99 latency, mean batch size from ``/health``, errors: must be 0) and
   whether each mode returned the same top-k ids as the first mode for every query, and writes JSON to
   ``benchmarks/results/serve_load.json``. Exit code 1 on any error.

The clients run in this process, on the same CPUs as the server: on a small machine they take part of its time.
``--quick`` runs a small version (a smoke test, seconds).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see encode_search.py: FAISS + OpenBLAS oversubscribe

import argparse
import asyncio
import base64
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, report_header, right_table  # noqa: E402
from nyx.data.records import Record, read_jsonl, write_jsonl  # noqa: E402

console = Console(width=140)


# ------------------------------------------------------------------------------------------------ data


def build_corpus(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[Record], str]:
    """``(corpus JSONL, query records, description)``."""
    if args.beir is not None:
        from nyx.data.beir import CORPUS_FILE, QUERIES_FILE

        return args.beir / CORPUS_FILE, read_jsonl(args.beir / QUERIES_FILE), f"BEIR folder {args.beir}"
    from benchmarks.encode_search import sample_chunks
    from nyx.model.tiny import ensure_tiny_model

    chunks = sample_chunks(args.n_docs, ensure_tiny_model(), tmp / "sample")
    corpus = tmp / "corpus.jsonl"
    write_jsonl(chunks, corpus)
    rng = random.Random(args.seed)
    queries = []
    with_images = [c for c in chunks if c.images]
    for i in range(args.n_queries):
        image = bool(with_images) and rng.random() < args.image_share
        chunk = rng.choice(with_images if image else chunks)
        words = chunk.text.split()
        start = rng.randrange(max(1, len(words) - 12))
        text = " ".join(words[start : start + 12]) or "a page of the sample"
        content: list[dict[str, str]] = [{"type": "text", "text": text}]
        if image:
            content.append({"type": "image", "image": chunk.images[0]})
        queries.append(_record(f"q{i}", content))
    return corpus, queries, f"nyx.data.sample (n_docs={args.n_docs}) chunked, {len(chunks)} chunks"


def _record(rid: str, content: list[dict[str, str]]) -> Record:
    from nyx.data.records import record_from_json

    return record_from_json({"id": rid, "content": content})


def request_body(q: Record, k: int) -> dict[str, Any]:
    """A query as an API client sends it: images as data: URLs."""
    content = []
    for p in q.content:
        if p.type == "text":
            content.append({"type": "text", "text": p.text})
        elif p.image and p.image.startswith("data:"):
            content.append({"type": "image", "image": p.image})
        else:
            data = Path(p.image).read_bytes()
            mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
            content.append({"type": "image", "image": f"data:{mime};base64,{base64.b64encode(data).decode()}"})
    body: dict[str, Any] = {"content": content, "k": k}
    if q.extra.get("choices"):
        body["choices"] = q.extra["choices"]
    return body


def build_index(corpus: Path, out: Path, batch_size: int) -> dict[str, Any]:
    from nyx.data.records import iter_jsonl
    from nyx.data.rejects import RejectLog
    from nyx.retrieval import DenseConfig, NyxRetriever

    t0 = time.perf_counter()
    r = NyxRetriever(model="tiny", config=DenseConfig(batch_size=batch_size))
    n = r.index(iter_jsonl(corpus, RejectLog(stage="bench")))
    r.save(out)
    return {"documents": n, "dims": r.dims, "seconds": round(time.perf_counter() - t0, 2)}


# ------------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    index: Path, window_ms: float, max_batch: int, threads: int, log: Path
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ}
    env.pop("NYX_API_KEY", None)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [
        sys.executable,
        "-m",
        "nyx.cli",
        "serve",
        str(index),
        "--port",
        str(port),
        "--batch-window-ms",
        str(window_ms),
        "--max-batch",
        str(max_batch),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"nyx serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("nyx serve did not answer /health within 180 s")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------------------ load


async def run_load(url: str, bodies: list[dict[str, Any]], n_requests: int, clients: int) -> dict[str, Any]:
    """``n_requests`` POST /search from ``clients`` concurrent workers; per-request latency and top-k ids."""
    latencies: list[float] = []
    errors: list[str] = []
    hits: dict[int, list[str]] = {}
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < n_requests:
                i = next_i
                next_i += 1
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    res = await client.post("/search", json=body)
                    ms = (time.perf_counter() - t0) * 1000
                    if res.status_code != 200:
                        errors.append(f"{res.status_code}: {res.text[:200]}")
                        continue
                    latencies.append(ms)
                    hits.setdefault(i % len(bodies), [h["id"] for h in res.json()["hits"]])
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        health = (await client.get("/health")).json()
    return {"wall_s": wall, "latencies_ms": latencies, "errors": errors, "hits": hits, "health": health}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def bench_mode(
    index: Path, bodies: list[dict[str, Any]], window_ms: float, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    proc, url = start_server(
        index, window_ms, args.max_batch, args.server_threads, logs / f"serve-window-{window_ms:g}.log"
    )
    try:
        asyncio.run(run_load(url, bodies, args.warmup, args.clients))  # untimed: builds kernels, fills caches
        before = httpx.get(f"{url}/health").json()["batching"]
        out = asyncio.run(run_load(url, bodies, args.requests, args.clients))
    finally:
        stop_server(proc)
    after = out["health"]["batching"]
    batches, items = after["batches"] - before["batches"], after["items"] - before["items"]
    lat = out["latencies_ms"]
    return {
        "batching": "off" if window_ms == 0 else "on",
        "window_ms": window_ms,
        "max_batch": args.max_batch if window_ms > 0 else 1,
        "clients": args.clients,
        "requests": args.requests,
        "ok": len(lat),
        "errors": len(out["errors"]),
        "error_samples": out["errors"][:5],
        "wall_s": round(out["wall_s"], 3),
        "qps": round(len(lat) / out["wall_s"], 2) if out["wall_s"] > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 2),
        "p95_ms": round(percentile(lat, 95), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "mean_batch": round(items / batches, 2) if batches else 0.0,
        "encoder_batches": batches,
        "hits": out["hits"],
    }


def print_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    t = right_table(
        f"nyx serve /search: {meta['requests']} requests from {meta['clients']} concurrent clients "
        f"({meta['corpus']}, {meta['index']['documents']} docs, tiny model, CPU)",
        ("batching", "window ms", "QPS", "p50 ms", "p95 ms", "p99 ms", "mean batch", "same top-k", "errors"),
    )
    for r in rows:
        t.add_row(
            r["batching"],
            f"{r['window_ms']:g}",
            f"{r['qps']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['mean_batch']:.2f}",
            f"{r['same_topk_as_first']:.0%}",
            str(r["errors"]),
        )
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beir", type=Path, help="a BEIR folder (corpus.jsonl, queries.jsonl) instead of the sample")
    ap.add_argument("--n-docs", type=int, default=100, help="sample documents to chunk and index")
    ap.add_argument("--n-queries", type=int, default=200, help="distinct sample queries (cycled)")
    ap.add_argument("--image-share", type=float, default=0.25, help="share of sample queries with an image")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per mode")
    ap.add_argument("--warmup", type=int, default=64, help="untimed requests per mode first")
    ap.add_argument("--windows", default="0,5", help="batching windows in ms to compare (0: batching off)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument(
        "--server-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of the server (0: torch default, one per core; 1: see encode_search.py)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_docs, args.n_queries, args.requests, args.warmup, args.clients = 12, 20, 40, 8, 4
    windows = [float(w) for w in args.windows.split(",")]

    from nyx.utils.io import write_json

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="nyx-serve-bench-"))
    logs = args.out.parent / "serve_load-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        corpus, queries, what = build_corpus(args, tmp)
        index_info = build_index(corpus, tmp / "index", batch_size=16)
        console.print(f"indexed {index_info['documents']} documents in {index_info['seconds']} s ({what})")
        bodies = [request_body(q, args.k) for q in queries]
        rows = []
        for w in windows:
            console.print(f"window {w:g} ms: {args.requests} requests, {args.clients} clients ...")
            rows.append(bench_mode(tmp / "index", bodies, w, args, logs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = rows[0]["hits"]
    for r in rows:
        common = [i for i in r["hits"] if i in first]
        r["same_topk_as_first"] = sum(r["hits"][i] == first[i] for i in common) / len(common) if common else 1.0
        r["hits_compared"] = len(common)
        del r["hits"]
    meta = {
        "corpus": what,
        "index": index_info,
        "clients": args.clients,
        "requests": args.requests,
        "k": args.k,
        "queries": len(bodies),
        "image_queries": sum(len(b["content"]) > 1 for b in bodies),
    }
    print_report(rows, meta)
    errors = sum(r["errors"] for r in rows)
    report = {
        **report_header("serve_load"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        **meta,
        "rows": rows,
        "errors": errors,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(report, args.out)
    console.print(f"errors: {errors} (must be 0); wrote {args.out}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
