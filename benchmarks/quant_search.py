"""Quantised Matryoshka search (int8, binary + float rescoring) against float32 flat, and the batched-search backend.

**Data** (``--data mrl``, the default). N seeded vectors (default 100,000) of 2048 dims with a Matryoshka-like
structure, L2-normalised (and every prefix re-normalised by the index): coordinate i has standard deviation
``(1 + i/16)**-0.5``, so the leading coordinates carry most of the variance, as in an embedding trained with a
Matryoshka loss, and documents are drawn around N/10 cluster centres (noise 0.5 x the centres' scale), so that a
document has a handful of close neighbours and the rest of the corpus far behind, as real embeddings do (random
unit vectors have none: every document is at nearly the same distance, the worst case for any quantisation).
Queries are fresh: a random document plus new noise, so their neighbours are that document's cluster. This is
synthetic data: the recall of a real model's embeddings depends on how far apart its neighbours are and must be
read off the index's own build report (``manifest.build_stats[dim]["recall_at_10_vs_flat"]``). ``--data random``:
random unit vectors and random queries instead, the worst case (results in ``quant_search-random.json``).

**Part 1, quantisation** (``IndexConfig.quantize``): for each dim in ``--dims`` and each of float32 flat, int8
(``faiss.IndexScalarQuantizer`` QT_8bit) and binary (sign bits, ``faiss.IndexBinaryFlat``, then the
``rescore_factor·k`` nearest codes rescored with float inner products against the stored vectors):
recall@10 against exact float search over the ``--queries`` fresh queries (and the recall the index recorded on
build, stored vectors as queries), the serialised index bytes per document and per million documents, the stored
vectors every index type also keeps in memory (binary rescoring reads them), and latency through
``EmbeddingIndex.search``: a single query (median of ``--single``) and per query in one batch of ``--queries``.
Latencies run with all threads (FAISS OpenMP and numpy's BLAS at their defaults, one per core).

**Part 2, batched search backend** (``IndexConfig.search_backend``): a flat float32 index at each dim, batches of
``--batches`` queries through ``EmbeddingIndex.search`` with the backend forced to FAISS, to numpy (one BLAS
matrix product + ``np.argpartition``) and left to ``auto``, on one thread and on all threads (``threadpoolctl``
limits both BLAS libraries and OpenMP): ms per query, GFLOP/s (``2·nq·N·d`` flops per batch) and that as a
share of this machine's float32 matmul peak, measured here with numpy (2048 x 2048 x 2048, best of 10, before the
quantised part and again before this one, the better kept) on one thread and on all threads.

Prints rich tables, writes JSON to ``benchmarks/results/quant_search.json`` (``--markdown`` also prints the tables in
Markdown). ``--quick``: a small run (seconds) for smoke tests. Timings on a shared machine are noisy: rerun before
trusting a small difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    PAPER_DIMS_ARG,
    dims_arg,
    machine,
    report_header,
    right_table,
    script_command,
    single_query_ms,
    table_markdown,
    timed,
)
from nyx.index import EmbeddingIndex, IndexConfig, IndexManifest, recall_at_k  # noqa: E402
from nyx.index.search_backend import choose_backend, faiss_blas_threshold  # noqa: E402

console = Console(width=200)
MODES = ("none", "int8", "binary")
MODE_NAMES = {"none": "float32 flat", "int8": "int8", "binary": "binary + rescore"}
#: the issue's targets
TARGET_INT8_RECALL = 0.99
TARGET_PEAK_SHARE = 0.5


def mrl_vectors(
    n: int, dim: int, seed: int, centres: np.ndarray | None = None, chunk: int = 10_000, random: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 rows around ``centres`` (drawn when None: n/10 of them), coordinate scale (1 + i/16)**-0.5;
    ``random``: isotropic Gaussian rows (random unit vectors once normalised), no centres."""
    rng = np.random.default_rng(seed)
    if random:
        return rng.standard_normal((n, dim), dtype=np.float32), np.ones((1, dim), np.float32)
    scale = ((1 + np.arange(dim) / 16) ** -0.5).astype(np.float32)
    if centres is None:
        centres = rng.standard_normal((max(1, n // 10), dim), dtype=np.float32) * scale
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        out[s : s + m] = centres[rng.integers(0, len(centres), m)]
        out[s : s + m] += 0.5 * rng.standard_normal((m, dim), dtype=np.float32) * scale
    return out, centres


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Limit FAISS's OpenMP and every BLAS library to ``n`` threads (None: leave the defaults)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def matmul_peak_gflops(n_threads: int | None, size: int = 2048, repeats: int = 10) -> float:
    """float32 (size x size) @ (size x size) with numpy's BLAS, best of ``repeats`` (main() measures it before and
    after the searches and keeps the best: on a shared machine the least disturbed run is the closest to the peak)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    with threads(n_threads):
        a @ b
        best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def index_with(base: EmbeddingIndex, **config: Any) -> EmbeddingIndex:
    """An index over the same stored vectors (shared, not copied) with another config."""
    m = base.manifest
    manifest = IndexManifest(
        model_id=m.model_id,
        dim=m.dim,
        full_dim=m.full_dim,
        mrl_dims=list(m.mrl_dims),
        config=IndexConfig(**{**m.config.model_dump(), **config}),
        doc_ids=list(m.doc_ids),
    )
    return EmbeddingIndex(manifest, base.stored_vectors)


def bench_quantised(
    base: EmbeddingIndex, queries: np.ndarray, dims: list[int], k: int, n_single: int, rescore_factor: int
) -> list[dict[str, Any]]:
    rows = []
    n = len(base)
    stored_per_doc = base.stored_vectors.nbytes / n
    for dim in dims:
        exact = None
        for mode in MODES:
            index = index_with(base, quantize=mode, rescore_factor=rescore_factor, search_backend="auto")
            t0 = time.perf_counter()
            index.faiss_index(dim)
            build_s = time.perf_counter() - t0
            stats = index.manifest.build_stats[dim]
            single = single_query_ms(index, queries, n_single, k, dim)
            t0 = time.perf_counter()
            result = index.search(queries, k=k, dim=dim)
            batch_ms = (time.perf_counter() - t0) * 1000 / len(queries)
            ids = np.array([[int(d[1:]) for d in row] for row in result.ids])
            if mode == "none":
                exact = ids
            nbytes = stats["bytes"]
            rows.append(
                {
                    "dim": dim,
                    "mode": mode,
                    "n": n,
                    "k": k,
                    "recall_at_10": recall_at_k(ids, exact),
                    "build_recall_at_10": stats["recall_at_10_vs_flat"],
                    "build_before_rescore_recall_at_10": stats.get("before_rescore_recall_at_10_vs_flat"),
                    "index_bytes": nbytes,
                    "bytes_per_doc": nbytes / n,
                    "gb_per_million": nbytes / n * 1e6 / 1e9,
                    "vs_float32_flat": nbytes / (4 * n * dim),
                    "stored_vectors_bytes_per_doc": stored_per_doc,
                    "rescore_reads_stored_vectors": mode == "binary",
                    "single_query_ms_median": statistics.median(single),
                    "single_query_ms_min": min(single),
                    "batch": len(queries),
                    "batched_ms_per_query": batch_ms,
                    "build_s": build_s,
                    "params": stats["params"],
                }
            )
            del index
        console.print(f"  dim {dim}: done", style="dim")
    return rows


def bench_backends(
    base: EmbeddingIndex,
    queries: np.ndarray,
    dims: list[int],
    batches: list[int],
    k: int,
    peaks: dict[str, float],
    thread_counts: list[int | None],
) -> list[dict[str, Any]]:
    rows = []
    n = len(base)
    for dim in dims:
        index = index_with(base)
        index.faiss_index(dim)
        for th in thread_counts:
            label = "1" if th == 1 else "all"
            for nq in batches:
                q = queries[:nq]
                row: dict[str, Any] = {
                    "dim": dim,
                    "n": n,
                    "batch": nq,
                    "threads": label,
                    "auto_picks": choose_backend("auto", nq, dim),
                }
                flop = 2 * nq * n * dim
                results = {}
                with threads(th):
                    for backend in ("faiss", "numpy", "auto"):
                        index.manifest.config.search_backend = backend
                        index.search(q, k=k, dim=dim)  # warm-up
                        reps = 5 if nq * n * dim < 3e10 else 2
                        best = min(
                            timed(lambda: results.__setitem__(backend, index.search(q, k=k, dim=dim)))  # noqa: B023,F821
                            for _ in range(reps)
                        )
                        row[f"{backend}_ms_per_query"] = best * 1000 / nq
                        row[f"{backend}_gflops"] = flop / best / 1e9
                        row[f"{backend}_peak_share"] = flop / best / 1e9 / peaks["1" if th == 1 else "all"]
                index.manifest.config.search_backend = "auto"
                same = sum(a == b for a, b in zip(results["faiss"].ids, results["numpy"].ids))
                row["same_ranking_queries"] = same
                row["max_abs_score_diff"] = float(
                    max(np.abs(a - b).max() for a, b in zip(results["faiss"].scores, results["numpy"].scores))
                )
                faster = "faiss" if row["faiss_ms_per_query"] <= row["numpy_ms_per_query"] else "numpy"
                row["faster"] = faster
                row["auto_vs_faster"] = row["auto_ms_per_query"] / row[f"{faster}_ms_per_query"]
                rows.append(row)
        del index
        console.print(f"  backends at dim {dim}: done", style="dim")
    return rows


# ------------------------------------------------------------------------------------------------ report


def quant_table(rows: list[dict], n: int, n_queries: int) -> Table:
    t = right_table(
        f"Quantised Matryoshka search: {n:,} docs, recall@10 vs exact float over {n_queries} fresh queries",
        (
            "dim",
            "index",
            "recall@10",
            "recall@10 on build",
            "bytes/doc",
            "vs float32",
            "GB per 1M docs",
            "+ stored vectors GB/1M",
            "1 query ms",
            f"batch of {rows[0]['batch']} ms/query",
        ),
    )
    for r in rows:
        build = f"{r['build_recall_at_10']:.3f}" if r["build_recall_at_10"] is not None else "-"
        if r["build_before_rescore_recall_at_10"] is not None:
            build += f" ({r['build_before_rescore_recall_at_10']:.3f} before rescoring)"
        t.add_row(
            str(r["dim"]),
            MODE_NAMES[r["mode"]],
            f"{r['recall_at_10']:.3f}",
            build,
            f"{r['bytes_per_doc']:.0f}",
            f"{r['vs_float32_flat']:.4f}",
            f"{r['gb_per_million']:.3f}",
            f"{r['stored_vectors_bytes_per_doc'] * 1e6 / 1e9:.2f}"
            + (" (read)" if r["rescore_reads_stored_vectors"] else ""),
            f"{r['single_query_ms_median']:.2f}",
            f"{r['batched_ms_per_query']:.3f}",
        )
    return t


def backend_table(rows: list[dict], peaks: dict[str, float]) -> Table:
    t = right_table(
        f"Batched flat search: FAISS vs numpy (BLAS + argpartition) vs auto; matmul peak "
        f"{peaks['1']:.0f} GFLOP/s on 1 thread, {peaks['all']:.0f} on all",
        (
            "dim",
            "threads",
            "batch",
            "auto picks",
            "faiss ms/q (GFLOP/s, % peak)",
            "numpy ms/q (GFLOP/s, % peak)",
            "auto ms/q (% peak)",
            "auto / faster",
            "same ranking",
        ),
    )
    for r in rows:

        def cell(b):
            return f"{r[b + '_ms_per_query']:.3f} ({r[b + '_gflops']:.0f}, {100 * r[b + '_peak_share']:.0f}%)"  # noqa: B023

        t.add_row(
            str(r["dim"]),
            r["threads"],
            str(r["batch"]),
            r["auto_picks"],
            cell("faiss"),
            cell("numpy"),
            f"{r['auto_ms_per_query']:.3f} ({100 * r['auto_peak_share']:.0f}%)",
            f"{r['auto_vs_faster']:.2f}",
            f"{r['same_ranking_queries']}/{r['batch']}",
        )
    return t


def summary(quant: list[dict], backends: list[dict]) -> dict[str, Any]:
    int8 = [r for r in quant if r["mode"] == "int8"]
    best_batched = {}
    for label in ("1", "all"):
        rows = [r for r in backends if r["threads"] == label]
        if rows:
            top = max(rows, key=lambda r: r["auto_peak_share"])
            best_batched[label] = {"dim": top["dim"], "batch": top["batch"], "auto_peak_share": top["auto_peak_share"]}
    return {
        "int8_min_recall_at_10": min(r["recall_at_10"] for r in int8) if int8 else None,
        "int8_max_bytes_vs_float32": max(r["vs_float32_flat"] for r in int8) if int8 else None,
        "int8_meets_target": bool(int8) and all(r["recall_at_10"] >= TARGET_INT8_RECALL for r in int8),
        "batched_best_auto_peak_share": best_batched,
        "batched_meets_target_at_largest_batch": {
            label: all(
                r["auto_peak_share"] >= TARGET_PEAK_SHARE
                for r in backends
                if r["threads"] == label and r["batch"] == max(x["batch"] for x in backends)
            )
            for label in best_batched
        },
        "auto_never_slower_than_1_2x_the_faster": all(r["auto_vs_faster"] <= 1.2 for r in backends),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="documents")
    ap.add_argument("--dims", default=PAPER_DIMS_ARG, help="Matryoshka dims (the largest is stored)")
    ap.add_argument("--queries", type=int, default=256, help="fresh queries: recall and the batched latency")
    ap.add_argument("--single", type=int, default=10, help="single-query searches timed per index")
    ap.add_argument("--batches", default="1,16,64,256", help="batch sizes of the backend comparison")
    ap.add_argument("--backend-dims", default="2048,256", help="dims of the backend comparison")
    ap.add_argument("--rescore-factor", type=int, default=IndexConfig().rescore_factor)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data",
        choices=("mrl", "random"),
        default="mrl",
        help="mrl: clustered Matryoshka-like vectors (default); random: random unit vectors (worst case)",
    )
    ap.add_argument("--skip-backends", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--markdown", action="store_true", help="also print the tables in Markdown")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report [benchmarks/results/quant_search.json; with --data random: quant_search-random.json]",
    )
    args = ap.parse_args(argv)
    if args.out is None:
        name = "quant_search.json" if args.data == "mrl" else f"quant_search-{args.data}.json"
        args.out = REPO / "benchmarks" / "results" / name
    if args.quick:
        args.n, args.dims, args.queries, args.single, args.batches, args.backend_dims = (
            3000,
            "256,64",
            32,
            3,
            "1,32",
            "256",
        )
    from nyx.utils.io import write_json

    t_start = time.perf_counter()
    dims = dims_arg(args.dims)
    full = dims[0]
    console.print(f"data: {args.n:,} x {full} (seed {args.seed}) ...", style="dim")
    docs, centres = mrl_vectors(args.n, full, args.seed, random=args.data == "random")
    base = EmbeddingIndex.create(model_id="mrl-like-vectors", dim=full, mrl_dims=dims)
    base.add([f"d{i}" for i in range(args.n)], docs)
    del docs
    rng = np.random.default_rng(args.seed + 7)
    if args.data == "random":  # fresh random queries
        queries = rng.standard_normal((args.queries, full), dtype=np.float32)
    else:  # a stored document (scaled back to its centre's norm) plus new noise
        scale = ((1 + np.arange(full) / 16) ** -0.5).astype(np.float32)
        queries = base.stored_vectors[rng.integers(0, args.n, args.queries)] * np.linalg.norm(centres, axis=1).mean()
        queries += 0.5 * rng.standard_normal(queries.shape, dtype=np.float32) * scale

    peaks_before = {"1": matmul_peak_gflops(1), "all": matmul_peak_gflops(None)}
    peaks = dict(peaks_before)
    console.print(
        f"matmul peak: {peaks['1']:.0f} GFLOP/s on 1 thread, {peaks['all']:.0f} on all ({os.cpu_count()} cores)",
        style="dim",
    )
    quant = bench_quantised(base, queries, dims, args.k, args.single, args.rescore_factor)
    qt = quant_table(quant, args.n, args.queries)
    console.print(qt)
    backends: list[dict] = []
    bt = None
    if not args.skip_backends:
        # the peak again, before the comparison that is measured against it: the best of both (shares use it)
        peaks_after = {"1": matmul_peak_gflops(1), "all": matmul_peak_gflops(None)}
        peaks = {t: max(peaks_before[t], peaks_after[t]) for t in peaks}
        console.print(
            f"matmul peak again: {peaks_after['1']:.0f} GFLOP/s on 1 thread, {peaks_after['all']:.0f} on "
            f"all; using the best of both",
            style="dim",
        )
        bdims = [d for d in dims_arg(args.backend_dims) if d <= full]
        batches = [int(b) for b in args.batches.split(",")]
        backends = bench_backends(base, queries, bdims, batches, args.k, peaks, [1, None])
        bt = backend_table(backends, peaks)
        console.print(bt)
    if args.markdown:
        print(table_markdown(qt))
        if bt is not None:
            print()
            print(table_markdown(bt))
    summ = summary(quant, backends)
    console.print(
        f"int8: min recall@10 {summ['int8_min_recall_at_10']:.3f} at {summ['int8_max_bytes_vs_float32']:.4f} of the "
        f"float32 index (target >= {TARGET_INT8_RECALL} at 1/4: "
        f"{'met' if summ['int8_meets_target'] else 'NOT met'}); batched search, best share of the matmul peak with "
        f"auto: "
        + ", ".join(
            f"{100 * v['auto_peak_share']:.0f}% on {k} thread(s) (dim {v['dim']}, batch {v['batch']})"
            for k, v in summ["batched_best_auto_peak_share"].items()
        )
        + f" (target {100 * TARGET_PEAK_SHARE:.0f}%)"
    )
    seconds = time.perf_counter() - t_start
    report = {
        **report_header("quant_search"),
        "command": script_command("quant_search.py", argv),
        "machine": machine(
            faiss=faiss.__version__,
            numpy=np.__version__,
            faiss_threads=faiss.omp_get_max_threads(),
            faiss_blas_threshold=faiss_blas_threshold(),
        ),
        "data": (
            "seeded random unit vectors"
            if args.data == "random"
            else "seeded Matryoshka-like clustered unit vectors (see the docstring)"
        ),
        "n": args.n,
        "dims": dims,
        "k": args.k,
        "seed": args.seed,
        "queries": args.queries,
        "rescore_factor": args.rescore_factor,
        "matmul_peak_gflops": peaks,
        "matmul_peak_gflops_measurements": {
            "before": peaks_before,
            "after_quantised": peaks_after if not args.skip_backends else None,
        },
        "quantised": quant,
        "backends": backends,
        "summary": summ,
        "seconds": seconds,
    }
    write_json(report, args.out)
    console.print(f"{seconds:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
