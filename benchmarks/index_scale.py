"""Index memory, build time, recall and query time per index type and Matryoshka dimension, per million documents.

Builds, on N seeded random unit vectors of 2048 dims (default 20,000), each index type of
:class:`~nyx.index.EmbeddingIndex` (``flat``, ``hnsw``, ``ivfpq``, at the :class:`~nyx.index.IndexConfig` defaults)
at each Matryoshka prefix (2048, 1024, 512, 256), and reports what the index records on build
(``EmbeddingIndex.build_report()``): build time (training included; wall clock, and CPU seconds of all threads,
which is the work whatever else runs on the machine), memory (the serialised FAISS index,
``faiss.serialize_index`` size, beside the stored vectors, which every type keeps), recall@10 against exact flat
search (200 stored vectors as queries); plus query latency through ``EmbeddingIndex.search`` for fresh random
queries (single queries: median; a batch: ms per query).

Then it extrapolates memory and build time to **one million documents** with a formula per type, checked against
the measurement at N (the table prints formula/measured at N):

* memory, bytes per document and fixed bytes, d = dim:
  flat ``4d``; hnsw ``4d + 4·(2M + M/(M-1)) + 12`` (float32 vector, level-0 links to 2M neighbours and ~M/(M-1)
  upper-level links as int32, level and offset); ivfpq ``m + 8`` (m one-byte codes and an int64 id) plus fixed
  ``4d·nlist`` (coarse centroids) and ``4d·2**nbits`` (PQ codebooks), nlist = min(4·sqrt(N), T/39) where T =
  min(N, train_sample) is the training sample;
* build time (CPU seconds, so core-seconds: divide by the cores for the wall clock, FAISS parallelises HNSW
  insertion, k-means and adding) from the measured one: flat ``∝ N·d`` (a copy); hnsw ``∝ N·log N`` (each
  insertion searches the graph); ivfpq training = coarse k-means ``∝ Tc·nlist`` (timed separately here, on the
  same points) + codebook k-means (the rest of the training) ``∝ Tp``, where FAISS subsamples k-means input to 256
  points per centroid: Tc = min(T, 256·nlist), Tp = min(T, 256·2**nbits) (so beyond 65,536 points the codebooks
  cost the same); adding ``∝ N·(nlist + 2**nbits)`` (assignment to a centroid, encoding against the codebooks).

Random vectors are the worst case for approximate search: in 256+ dims every document is at nearly the same
distance from a random one, so the recall here is a floor for real embeddings (whose neighbours are much nearer
than the rest), not an estimate. FAISS builds with ``--threads`` OpenMP threads (default: one per core) and is
timed on queries with ``--query-threads`` (default 1, as a serving worker per core would run: on a shared machine
a query's OpenMP threads wait at barriers for descheduled siblings, see ``encode_search.py``).

Prints rich tables and writes JSON to ``benchmarks/results/index_scale.json``. ``--quick`` runs a small version
(seconds) for smoke tests.
"""

from __future__ import annotations

import os

# as in encode_search.py: OpenBLAS's own threads inside FAISS's OpenMP loops oversubscribe a few cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    PAPER_DIMS_ARG,
    dims_arg,
    machine,
    markdown_rows,
    report_header,
    right_table,
    script_command,
    single_query_ms,
)
from nyx.index import EmbeddingIndex, IndexConfig  # noqa: E402
from nyx.index.build import ivf_nlist, train_sample  # noqa: E402
from nyx.index.vectors import prefix_vectors  # noqa: E402

MILLION = 1_000_000
TYPES = ("flat", "hnsw", "ivfpq")

console = Console(width=200)


# ------------------------------------------------------------------------------------------------ formulas


def nlist_at(n: int, config: IndexConfig) -> tuple[int, int]:
    """(training points, clusters) that ``EmbeddingIndex`` uses for an IVF-PQ index over ``n`` documents."""
    train = min(n, max(config.train_sample, config.pq_min_train()))
    return train, ivf_nlist(n, train, config.ivf_nlist)


def memory_formula(kind: str, n: int, dim: int, params: dict[str, Any], config: IndexConfig) -> dict[str, float]:
    """Predicted serialised index bytes for ``n`` documents: ``per_document`` and ``fixed`` parts."""
    if kind == "flat":
        per_doc, fixed = 4 * dim, 0.0
    elif kind == "hnsw":
        m = params["M"]
        per_doc, fixed = 4 * dim + 4 * (2 * m + m / (m - 1)) + 12, 0.0
    elif kind == "ivfpq":
        _, nlist = nlist_at(n, config)
        per_doc = params["m"] + 8
        fixed = 4 * dim * nlist + 4 * dim * 2 ** params["nbits"]
    else:
        raise ValueError(kind)
    return {"per_document": per_doc, "fixed": fixed, "total": per_doc * n + fixed}


def build_time_at(kind: str, n_to: int, row: dict[str, Any], config: IndexConfig) -> float:
    """Build CPU seconds at ``n_to`` documents from the measured ``row`` (at ``row['n']``), by the type's cost model."""
    n = row["n"]
    if kind == "flat":
        return row["build_cpu_s"] * n_to / n
    if kind == "hnsw":
        return row["build_cpu_s"] * (n_to * math.log(n_to)) / (n * math.log(n))
    if kind == "ivfpq":
        codes = 2 ** row["params"]["nbits"]
        t_from, nl_from = nlist_at(n, config)
        t_to, nl_to = nlist_at(n_to, config)
        coarse_from, coarse_to = min(t_from, 256 * nl_from) * nl_from, min(t_to, 256 * nl_to) * nl_to
        coarse = row["coarse_train_cpu_s"] * coarse_to / coarse_from
        codebooks = (row["train_cpu_s"] - row["coarse_train_cpu_s"]) * min(t_to, 256 * codes) / min(t_from, 256 * codes)
        train = coarse + max(codebooks, 0.0)
        add = (row["build_cpu_s"] - row["train_cpu_s"]) * (n_to * (nl_to + codes)) / (n * (nl_from + codes))
        return train + add
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------------ benchmark


def random_unit(rng: np.random.Generator, n: int, dim: int, shard: int = 25_000) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, shard):
        m = min(shard, n - s)
        out[s : s + m] = rng.standard_normal((m, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def coarse_train_cpu_seconds(index: EmbeddingIndex, dim: int, config: IndexConfig) -> float:
    """CPU seconds of the coarse k-means alone, as ``IndexIVF.train`` runs it (same points, clusters, iterations)."""
    vecs = prefix_vectors(index.stored_vectors, dim)
    train_points, nlist = nlist_at(len(vecs), config)
    sample = train_sample(vecs, train_points, index.manifest.config.seed)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    clustering = faiss.Clustering(dim, nlist, ivf.cp)
    c0 = time.process_time()
    clustering.train(sample, faiss.IndexFlatIP(dim))
    return time.process_time() - c0


def bench(
    n: int,
    dims: list[int],
    types: list[str],
    n_queries: int,
    n_single: int,
    recall_queries: int,
    k: int,
    seed: int,
    query_threads: int = 1,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    full = max(dims)
    docs = random_unit(rng, n, full)
    queries = random_unit(rng, n_queries, full)
    ids = [f"d{i}" for i in range(n)]
    rows = []
    for kind in types:
        config = IndexConfig(index_type=kind, recall_queries=recall_queries, seed=seed)
        index = EmbeddingIndex.create(model_id="random-vectors", dim=full, mrl_dims=dims, config=config)
        for s in range(0, n, 25_000):  # shard by shard, as an encoder feeds it
            index.add(ids[s : s + 25_000], docs[s : s + 25_000])
        for dim in dims:
            console.print(f"[dim]building {kind} at {dim} dims over {n:,} documents...[/dim]")
            index.faiss_index(dim)
            st = index.build_report()["dims"][str(dim)]
            build_threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(query_threads)
            single = single_query_ms(index, queries, n_single, k, dim)
            t0 = time.perf_counter()
            index.search(queries, k=k, dim=dim)
            batched = (time.perf_counter() - t0) * 1000 / n_queries
            faiss.omp_set_num_threads(build_threads)
            coarse_s = coarse_train_cpu_seconds(index, dim, config) if st["type"] == "ivfpq" else 0.0
            formula = memory_formula(st["type"], n, dim, st["params"], config)
            row = {
                "type": st["type"],
                "dim": dim,
                "n": n,
                "build_s": st["build_seconds"],
                "build_cpu_s": st["build_cpu_seconds"],
                "train_s": st["train_seconds"],
                "train_cpu_s": st["train_cpu_seconds"],
                "train_points": st["train_points"],
                "coarse_train_cpu_s": coarse_s,
                "index_bytes": st["bytes"],
                "index_bytes_per_doc": st["bytes"] / n,
                "vectors_bytes": index.build_report()["vectors_bytes"],
                "recall_at_10_vs_flat": st["recall_at_10_vs_flat"],
                "recall_queries": st["queries"],
                "single_query_ms_median": statistics.median(single),
                "single_query_ms_min": min(single),
                "batched_ms_per_query": batched,
                "params": st["params"],
                "formula_bytes_at_n": formula["total"],
                "formula_vs_measured": formula["total"] / st["bytes"],
            }
            per_m = memory_formula(st["type"], MILLION, dim, st["params"], config)
            row["per_million"] = {
                "index_bytes": per_m["total"],
                "bytes_per_doc": per_m["per_document"],
                "fixed_bytes": per_m["fixed"],
                "build_cpu_s": build_time_at(st["type"], MILLION, row, config),
                "nlist": nlist_at(MILLION, config)[1] if st["type"] == "ivfpq" else None,
            }
            rows.append(row)
            index._indexes.pop(dim, None)  # free it before the next one
        del index
    return rows


# ------------------------------------------------------------------------------------------------ report


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def mb(x: float) -> str:
    return f"{x / 2**20:.1f}"


def print_report(rows: list[dict[str, Any]], n: int, threads: int, query_threads: int) -> None:
    rq = max((r["recall_queries"] for r in rows), default=0)
    t = right_table(
        f"Measured: {n:,} random unit vectors ({max(r['dim'] for r in rows)}-dim, prefixes re-normalised), "
        f"FAISS {threads} thread(s) building, {query_threads} querying; recall@10 vs flat on {rq} stored "
        "vectors as queries",
        (
            "type",
            "dim",
            "docs",
            "build s",
            "build CPU s",
            "train CPU s; coarse",
            "index MiB",
            "B/doc",
            "formula/measured",
            "recall@10",
            "1 query ms med/min",
            "batched ms/q",
            "params",
        ),
    )
    for r in rows:
        p = params_text(r["params"])
        t.add_row(
            r["type"],
            str(r["dim"]),
            f"{r['n']:,}",
            f"{r['build_s']:.2f}",
            f"{r['build_cpu_s']:.2f}",
            f"{r['train_cpu_s']:.2f}; {r['coarse_train_cpu_s']:.2f}",
            mb(r["index_bytes"]),
            f"{r['index_bytes_per_doc']:.0f}",
            f"{r['formula_vs_measured']:.3f}",
            f"{r['recall_at_10_vs_flat']:.3f}",
            f"{r['single_query_ms_median']:.2f}/{r['single_query_ms_min']:.2f}",
            f"{r['batched_ms_per_query']:.3f}",
            p,
        )
    console.print(t)
    vec = rows[0]["vectors_bytes"] / n if rows else 0
    console.print(
        f"stored vectors (vectors.npy, kept in memory by every type, all dims together): {vec:.0f} B/doc "
        f"float32, {vec / 2:.0f} B/doc with store_dtype=float16"
    )
    t = right_table(
        "Per million documents (extrapolated with the formulas in the module docstring)",
        ("type", "dim", "index GB", "bytes/doc", "fixed MB", "build CPU s", "build core-min", "nlist"),
    )
    for r in rows:
        pm = r["per_million"]
        t.add_row(
            r["type"],
            str(r["dim"]),
            gb(pm["index_bytes"]),
            f"{pm['bytes_per_doc']:.0f}",
            f"{pm['fixed_bytes'] / 1e6:.1f}",
            f"{pm['build_cpu_s']:.0f}",
            f"{pm['build_cpu_s'] / 60:.1f}",
            str(pm["nlist"] or ""),
        )
    console.print(t)
    console.print(f"stored vectors per million: {gb(vec * MILLION)} GB float32, {gb(vec * MILLION / 2)} GB float16")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The two tables in Markdown (``--markdown``), for docs/scaling.md."""
    measured = []
    for r in rows:
        train = f" ({r['train_cpu_s']:.2f}; {r['coarse_train_cpu_s']:.2f})" if r["train_cpu_s"] else ""
        measured.append(
            [
                r["type"],
                str(r["dim"]),
                f"{r['n']:,}",
                f"{r['build_s']:.2f}",
                f"{r['build_cpu_s']:.2f}{train}",
                mb(r["index_bytes"]),
                f"{r['index_bytes_per_doc']:.0f} ({r['formula_vs_measured']:.3f})",
                f"{r['recall_at_10_vs_flat']:.3f}",
                f"{r['single_query_ms_median']:.2f}",
                f"{r['batched_ms_per_query']:.3f}",
                params_text(r["params"]),
            ]
        )
    per_million = []
    for r in rows:
        pm = r["per_million"]
        fixed = f" + {pm['fixed_bytes'] / 1e6:.1f} MB (nlist {pm['nlist']})" if pm["fixed_bytes"] else ""
        per_million.append(
            [
                r["type"],
                str(r["dim"]),
                gb(pm["index_bytes"]),
                f"{pm['bytes_per_doc']:.0f}{fixed}",
                f"{pm['build_cpu_s']:.0f}",
                f"{pm['build_cpu_s'] / 60:.1f}",
            ]
        )
    measured_header = (
        "type",
        "dim",
        "docs",
        "build s",
        "build CPU s (train; coarse k-means)",
        "index MiB",
        "bytes/doc measured (formula ÷ measured)",
        "recall@10 vs flat",
        "1 query ms (median)",
        "batched ms/query",
        "params",
    )
    per_million_header = (
        "type",
        "dim",
        "index GB per 1M docs",
        "bytes/doc + fixed MB",
        "build CPU s per 1M",
        "build core-min per 1M",
    )
    return markdown_rows(measured_header, measured) + "\n\n" + markdown_rows(per_million_header, per_million)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="documents (random unit vectors)")
    ap.add_argument("--dims", default=PAPER_DIMS_ARG)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--queries", type=int, default=64, help="queries per batched search")
    ap.add_argument("--single", type=int, default=32, help="single-query searches timed per index")
    ap.add_argument("--recall-queries", type=int, default=200, help="stored vectors used as recall queries")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=0, help="FAISS OpenMP threads for building (0: FAISS's default, one per core)"
    )
    ap.add_argument("--query-threads", type=int, default=1, help="FAISS OpenMP threads while timing queries")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--markdown", action="store_true", help="also print the tables in Markdown")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "index_scale.json")
    args = ap.parse_args(argv)
    if args.quick:  # IVF-PQ needs 39 x 256 = 9,984 points for its codebooks
        args.n, args.dims, args.queries, args.single, args.recall_queries = 10_000, "256,128", 8, 4, 50

    from nyx.utils.io import write_json

    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
    dims = dims_arg(args.dims)
    types = [t for t in args.types.split(",") if t]
    t0 = time.perf_counter()
    rows = bench(
        args.n, dims, types, args.queries, args.single, args.recall_queries, args.k, args.seed, args.query_threads
    )
    print_report(rows, args.n, faiss.omp_get_max_threads(), args.query_threads)
    if args.markdown:
        print(markdown(rows))
    seconds = time.perf_counter() - t0
    report = {
        **report_header("index_scale"),
        "command": script_command("index_scale.py", argv),
        "machine": machine(
            faiss=faiss.__version__,
            faiss_threads=faiss.omp_get_max_threads(),
            faiss_query_threads=args.query_threads,
            openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
        ),
        "n": args.n,
        "dims": dims,
        "types": types,
        "k": args.k,
        "seed": args.seed,
        "rows": rows,
        "seconds": seconds,
    }
    write_json(report, args.out)
    console.print(f"{seconds:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
