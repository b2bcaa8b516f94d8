"""Quantised Matryoshka indexes (int8, binary + float rescoring), the batched search backend (FAISS or numpy), the
manifest that records them, and `nyx index --quantize`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from nyx.index import EmbeddingIndex, IndexConfig, IndexManifest
from nyx.index.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from nyx.index.search_backend import choose_backend, faiss_blas_threshold, numpy_topk
from nyx.index.vectors import prefix_vectors
from tests.paths import REPO
from tests.tolerances import EPS32, assert_within, rounding_tol

DIMS = [256, 128, 64]


def mrl_data(n: int, dim: int, seed: int = 0, clusters: int = 300, noise: float = 0.5) -> np.ndarray:
    """Seeded Matryoshka-like vectors: coordinate i scaled by (1 + i/16)**-0.5 (leading coordinates carry most of the
    variance), drawn around ``clusters`` centres (about n/clusters documents each), not normalised."""
    rng = np.random.default_rng(seed)
    scale = (1 + np.arange(dim) / 16) ** -0.5
    centres = rng.standard_normal((clusters, dim)) * scale
    return (centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)) * scale).astype(np.float32)


def build(x: np.ndarray, dims=DIMS, **config) -> EmbeddingIndex:
    index = EmbeddingIndex.create(model_id="m", dim=x.shape[1], mrl_dims=dims, config=IndexConfig(**config))
    index.add([f"d{i}" for i in range(len(x))], x)
    index.build(dims)
    return index


def exact_top(index: EmbeddingIndex, q: np.ndarray, k: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k in float64 over the index's own float32 prefix vectors (the reference every search is held to)."""
    docs = prefix_vectors(index.stored_vectors, dim).astype(np.float64)
    scores = q.astype(np.float64) @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


def ids_of(result) -> np.ndarray:
    return np.array([[int(d[1:]) for d in row] for row in result.ids])


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)]))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return mrl_data(3000, 256)


@pytest.fixture(scope="module")
def queries(data) -> np.ndarray:
    """Fresh queries: stored documents plus new noise (not stored vectors)."""
    rng = np.random.default_rng(5)
    scale = (1 + np.arange(data.shape[1]) / 16) ** -0.5
    return (data[rng.integers(0, len(data), 100)] + 0.3 * rng.standard_normal((100, data.shape[1])) * scale).astype(
        np.float32
    )


# --------------------------------------------------------------------------- int8


def test_int8_reaches_099_recall_at_a_quarter_of_the_float_index(data, queries):
    index = build(data, quantize="int8")
    for dim in DIMS:
        st = index.manifest.build_stats[dim]
        assert st["type"] == "flat" and st["quantize"] == "int8" and st["params"]["qtype"] == "QT_8bit"
        # the index records recall@10 against exact float search on build (stored vectors as queries) ...
        assert st["queries"] == 200 and st["recall_at_10_vs_flat"] >= 0.99, (dim, st["recall_at_10_vs_flat"])
        # ... and fresh queries agree, against float64 exact search
        q, _ = index.prepare_queries(queries, dim)
        want, _ = exact_top(index, q, 10, dim)
        got = index.search(queries, k=10, dim=dim)
        assert recall(ids_of(got), want) >= 0.99, dim
        # one byte per dimension plus the trained ranges (2 floats per dim) and a header: ~1/4 of float32 flat
        assert st["float32_flat_bytes"] == 4 * len(data) * dim
        assert 0.25 <= st["bytes_vs_float32_flat"] <= 0.25 + (8 * dim + 200) / (4 * len(data) * dim)
        assert 0 <= st["bytes"] - len(data) * dim - 8 * dim < 200  # codes + ranges + a header


def test_int8_rescore_gives_exact_float_scores(data, queries):
    index = build(data, dims=[128], quantize="int8", int8_rescore=True, rescore_factor=4)
    st = index.manifest.build_stats[128]
    assert st["recall_at_10_vs_flat"] >= st["before_rescore_recall_at_10_vs_flat"]
    assert st["rescore_vectors_bytes"] == data.nbytes
    q, _ = index.prepare_queries(queries, 128)
    got = index.search(queries, k=10, dim=128)
    _, want_scores = exact_top(index, q, 10, 128)
    # rescored scores are float32 inner products of unit vectors: a 128-term sum, compared with float64
    rows = [np.asarray(s, np.float64) for s in got.scores]
    docs = prefix_vectors(index.stored_vectors, 128).astype(np.float64)
    recomputed = [q[i].astype(np.float64) @ docs[ids_of(got)[i]].T for i in range(len(q))]
    assert_within(
        "int8 rescore: returned scores vs float64 of the same ids",
        np.stack(rows),
        np.stack(recomputed),
        rounding_tol(EPS32, 128),
    )


# --------------------------------------------------------------------------- binary


def test_binary_rescore_recall_bytes_and_exact_scores(data, queries):
    index = build(data, quantize="binary", rescore_factor=10)
    for dim in DIMS:
        st = index.manifest.build_stats[dim]
        assert st["quantize"] == "binary" and st["params"]["bits"] == dim
        # sign bits alone find fewer of the exact top 10; rescoring 10 x k candidates with float vectors recovers
        # most (0.95-0.96 measured on this data at every dim; random vectors do much worse, docs/scaling.md)
        assert st["before_rescore_recall_at_10_vs_flat"] < st["recall_at_10_vs_flat"]
        assert st["recall_at_10_vs_flat"] >= 0.9, (dim, st["recall_at_10_vs_flat"])
        # one bit per dimension plus a header: ~1/32 of float32 flat; rescoring reads the stored vectors
        assert 1 / 32 <= st["bytes_vs_float32_flat"] <= 1 / 32 + 100 / (4 * len(data) * dim)
        assert st["rescore_vectors_bytes"] == data.nbytes
        q, _ = index.prepare_queries(queries, dim)
        want, _ = exact_top(index, q, 10, dim)
        got = index.search(queries, k=10, dim=dim)
        assert recall(ids_of(got), want) >= 0.9, dim
        # the returned scores are the float inner products of the returned documents, in descending order
        docs = prefix_vectors(index.stored_vectors, dim).astype(np.float64)
        ids = ids_of(got)
        recomputed = np.stack([q[i].astype(np.float64) @ docs[ids[i]].T for i in range(len(q))])
        assert_within(
            f"binary rescore at dim {dim}: scores vs float64",
            np.stack(got.scores),
            recomputed,
            rounding_tol(EPS32, dim),
        )
        assert all(np.all(np.diff(s) <= 0) for s in got.scores)


def test_binary_handles_a_dim_that_is_not_a_multiple_of_8(data):
    index = build(data[:500, :100], dims=[100, 20], quantize="binary")
    assert index.manifest.build_stats[20]["params"]["code_bytes"] == 3
    res = index.search(data[:3, :100], k=5, dim=20)
    assert [row[0] for row in res.ids] == ["d0", "d1", "d2"]


def test_quantize_is_refused_with_approximate_index_types():
    for kind in ("hnsw", "ivf", "ivfpq"):
        with pytest.raises(ValueError, match="applies to index_type 'flat' only"):
            IndexConfig(index_type=kind, quantize="int8")
    with pytest.raises(ValueError):
        IndexConfig(quantize="int4")


# --------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("mode", ["int8", "binary"])
def test_save_load_keeps_the_quantised_index_and_the_manifest_records_it(data, queries, tmp_path, mode):
    index = build(data[:1000], quantize=mode)
    before = index.search(queries[:20], k=10, dim=128)
    index.save(tmp_path / "i")
    saved = json.loads((tmp_path / "i" / MANIFEST_NAME).read_text())
    assert saved["format"] == MANIFEST_FORMAT == 3
    assert saved["config"]["quantize"] == mode and saved["config"]["rescore_factor"] == 10
    assert {int(d): s["quantize"] for d, s in saved["build_stats"].items()} == {d: mode for d in DIMS}
    assert sorted(p.name for p in (tmp_path / "i").glob("faiss-*.index")) == sorted(
        f"faiss-{mode}-{d}.index" for d in DIMS
    )

    loaded = EmbeddingIndex.load(tmp_path / "i")
    assert loaded.manifest.config.quantize == mode
    assert sorted(loaded._indexes) == sorted(DIMS)  # read from disk, not rebuilt
    assert (
        loaded.manifest.build_stats[128]["recall_at_10_vs_flat"]
        == index.manifest.build_stats[128]["recall_at_10_vs_flat"]
    )
    after = loaded.search(queries[:20], k=10, dim=128)
    assert after.ids == before.ids
    assert (np.stack(after.scores) == np.stack(before.scores)).all()  # the same codes, searched the same way
    assert loaded.backend_for(5, 128) == mode


def test_a_manifest_written_before_quantisation_loads_unchanged(data, tmp_path):
    index = build(data[:500], dims=[256, 64])
    index.save(tmp_path / "old")
    mpath = tmp_path / "old" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    # what a format-2 manifest holds: no quantisation or backend fields in its config or stats
    for key in ("quantize", "rescore_factor", "int8_rescore", "search_backend"):
        del manifest["config"][key]
    for stats in manifest["build_stats"].values():
        del stats["quantize"]
    manifest["format"] = 2
    mpath.write_text(json.dumps(manifest))
    loaded = EmbeddingIndex.load(tmp_path / "old")
    cfg = loaded.manifest.config
    assert (cfg.quantize, cfg.rescore_factor, cfg.int8_rescore, cfg.search_backend) == ("none", 10, False, "auto")
    assert loaded._built_kind(64) == "flat" and set(loaded.manifest.build_stats) == {256, 64}
    res = loaded.search(data[:3], k=3, dim=64)
    assert [row[0] for row in res.ids] == ["d0", "d1", "d2"]
    # a format-1 manifest (no build stats, no float16 or approximate fields) too
    IndexManifest.model_validate(
        {"model_id": "m", "dim": 8, "full_dim": 8, "config": {"index_type": "flat"}, "format": 1}
    )


# --------------------------------------------------------------------------- batched search backend


def gaussian(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def distinct_score_queries(index: EmbeddingIndex, n: int, k: int, dims: list[int], seed: int) -> np.ndarray:
    """``n`` random queries whose exact (float64) top-(k+1) scores are pairwise farther apart than 4x the float32
    rounding tolerance at every dim in ``dims``: the data with distinct scores that two exact backends must rank
    identically."""
    cand = gaussian(3 * n + 50, index.dim, seed)
    ok = np.ones(len(cand), bool)
    for d in dims:
        qd, _ = index.prepare_queries(cand, d)
        _, s = exact_top(index, qd, k + 1, d)
        ok &= np.diff(-s, axis=1).min(axis=1) > 4 * rounding_tol(EPS32, d)
    assert ok.sum() >= n
    return cand[ok][:n]


@pytest.mark.parametrize("n_queries", [1, 7, 300, 2100])
def test_numpy_and_faiss_backends_return_the_same_top_k(n_queries):
    dim, k = 64, 10
    index = build(gaussian(4000, dim, 1), dims=[dim, 32])
    q = distinct_score_queries(index, n_queries, k, [dim, 32], seed=2)
    results = {}
    for backend in ("faiss", "numpy", "auto"):
        index.manifest.config.search_backend = backend
        for d in (dim, 32):
            results[backend, d] = index.search(q, k=k, dim=d)
    for d in (dim, 32):
        qd, _ = index.prepare_queries(q, d)
        want_ids, want_scores = exact_top(index, qd, k + 1, d)
        tol = rounding_tol(EPS32, d)
        # precondition: the data have distinct scores, farther apart than rounding, down to the (k+1)-th
        assert np.diff(-want_scores, axis=1).min() > 4 * tol
        for backend in ("faiss", "numpy", "auto"):
            res = results[backend, d]
            assert (ids_of(res) == want_ids[:, :k]).all(), (backend, d)
            assert_within(
                f"{backend} search scores at dim {d} vs float64", np.stack(res.scores), want_scores[:, :k], tol
            )
    index.manifest.config.search_backend = "auto"
    for d in (dim, 32):  # 2100 x 64 is past FAISS's BLAS switch (128,000 in FAISS 1.15): auto runs FAISS there
        assert index.backend_for(n_queries, d) == ("numpy" if n_queries * d < faiss_blas_threshold() else "faiss")


def test_auto_backend_rule_and_forced_settings():
    t = faiss_blas_threshold()
    assert t > 0
    assert choose_backend("auto", 1, 2048) == "numpy"
    assert choose_backend("auto", (t - 1) // 256, 256) == "numpy"
    assert choose_backend("auto", -(-t // 256), 256) == "faiss"
    assert choose_backend("faiss", 1, 8) == "faiss" and choose_backend("numpy", 10**6, 2048) == "numpy"


def test_numpy_topk_blocks_and_exact_ties_match_faiss():
    # one-hot documents: a score is one query coordinate times 1, exact in any summation order, so duplicates tie
    # exactly in both backends and distinct documents never do
    eye = np.eye(16, dtype=np.float32)
    x = np.concatenate([eye, eye, eye[:8]])  # ids 16..31 and 32..39 duplicate 0..15 and 0..7
    index = build(x, dims=[16])
    q = gaussian(50, 16, 4)
    results = {}
    for backend in ("faiss", "numpy"):
        index.manifest.config.search_backend = backend
        # k = every document, so no group of tied documents straddles the k-th place: which member of such a group
        # is kept is an arbitrary choice in either backend ("identical up to ties")
        results[backend] = index.search(q, k=len(x), dim=16)
    assert results["numpy"].ids == results["faiss"].ids  # ties: the larger id first, as FAISS's heaps order them
    assert (np.stack(results["numpy"].scores) == np.stack(results["faiss"].scores)).all()
    top = int(np.argmax(q[0]))
    expected = [f"d{i}" for i in (top + 32, top + 16, top) if i < 40]
    assert results["numpy"].ids[0][: len(expected)] == expected
    # scored in blocks of 5 documents and merged: the same as in one block (distinct exact scores: no duplicates)
    qd, _ = index.prepare_queries(q, 16)
    whole = numpy_topk(qd, eye, 5)
    blocked = numpy_topk(qd, eye, 5, block_bytes=4 * len(qd) * 3)
    assert (whole[1] == blocked[1]).all() and (whole[0] == blocked[0]).all()
    assert (whole[1][:, 0] == np.argmax(qd, axis=1)).all()


# --------------------------------------------------------------------------- CLI and benchmark


@pytest.mark.slow
def test_cli_index_quantize_int8_then_search(tmp_path):
    from nyx.cli import app
    from tests.nyx.cli.test_cli import _write_beir

    beir = _write_beir(tmp_path / "beir")
    runner = CliRunner()
    out = tmp_path / "index"
    res = runner.invoke(
        app, ["index", str(beir / "corpus.jsonl"), "--out", str(out), "--retriever", "minilm", "--quantize", "int8"]
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "index" / MANIFEST_NAME).read_text())
    assert manifest["config"]["quantize"] == "int8" and manifest["format"] == MANIFEST_FORMAT
    res = runner.invoke(app, ["search", str(out), "--text", "who climbed the lighthouse stairs", "-k", "3"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    assert found["results"][0]["id"] == "lighthouse" and len(found["results"]) == 3

    res = runner.invoke(
        app,
        [
            "index",
            str(beir / "corpus.jsonl"),
            "--out",
            str(tmp_path / "x"),
            "--retriever",
            "minilm",
            "--quantize",
            "binary",
            "--index-type",
            "hnsw",
        ],
    )
    assert res.exit_code == 2 and "--quantize" in res.output


@pytest.mark.slow
def test_quant_search_benchmark_quick(tmp_path):
    out = tmp_path / "quant_search.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "quant_search.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["dim"], r["mode"]): r for r in report["quantised"]}
    assert set(rows) == {(d, m) for d in report["dims"] for m in ("none", "int8", "binary")}
    for (dim, mode), r in rows.items():
        assert r["recall_at_10"] == 1.0 if mode == "none" else 0.0 <= r["recall_at_10"] <= 1.0
        assert r["bytes_per_doc"] >= {"none": 4 * dim, "int8": dim, "binary": dim / 8}[mode]
    assert report["matmul_peak_gflops"]["1"] > 0 and report["backends"]
    for r in report["backends"]:
        assert r["same_ranking_queries"] <= r["batch"] and 0 < r["auto_peak_share"]


def test_a_loaded_quantised_index_keeps_its_vectors_on_disk_and_searches_the_same(tmp_path):
    """int8/binary: the stored float vectors are memory-mapped on load, not read into memory; results unchanged."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 64)).astype(np.float32)
    for quantize in ("int8", "binary"):
        idx = EmbeddingIndex.create(model_id="m", dim=64, config=IndexConfig(quantize=quantize))
        idx.add([f"d{i}" for i in range(len(x))], x)
        idx.build([64])
        before = idx.search(x[:5], k=10, dim=64)
        idx.save(tmp_path / quantize)
        loaded = EmbeddingIndex.load(tmp_path / quantize)
        assert isinstance(loaded.stored_vectors.base, np.memmap) or isinstance(loaded.stored_vectors, np.memmap)
        after = loaded.search(x[:5], k=10, dim=64)
        assert after.ids == before.ids
    flat = EmbeddingIndex.create(model_id="m", dim=64)
    flat.add([f"d{i}" for i in range(len(x))], x)
    flat.save(tmp_path / "flat")
    assert not isinstance(EmbeddingIndex.load(tmp_path / "flat").stored_vectors, np.memmap)
