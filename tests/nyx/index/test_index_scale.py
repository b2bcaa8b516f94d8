"""Index types for scale: flat below a size, HNSW / IVF-PQ above it, recall@10 against flat measured on build and
kept in the manifest, saved approximate indexes reused without retraining, float16 vector storage."""

from __future__ import annotations

import json
import logging

import faiss
import numpy as np
import pytest

from nyx.index import EmbeddingIndex, IndexConfig, IndexManifest
from tests.tolerances import EPS32, assert_within, rounding_tol

EPS16 = float(np.finfo(np.float16).eps)  # 9.77e-4
DIM = 64

#: Recall floor on the clustered data below. Every document's 10 nearest neighbours are its own cluster (itself and
#: 9 others, cosine ~0.999 to each other), while any document of another cluster scores <= ~0.6 (random unit
#: centres in 64 dims: cosine ~ N(0, 1/64), max over ~1000 centres ~0.45). That gap is far above HNSW's search
#: error and IVF-PQ's reconstruction error at 8 sub-quantisers (measured: recall 1.0 at dims 64 and 32, >= 0.99
#: at 16), so a working index returns the whole cluster; 0.9 leaves room for FAISS's k-means and graph
#: construction to differ across CPUs and versions, while an index that returns wrong or misaligned ids (recall
#: ~0), or one as weak as IVF-PQ on structureless random vectors (see the last check below, ~0.4), fails.
RECALL_FLOOR = 0.9


def clustered(n_clusters: int, size: int = 10, dim: int = DIM, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """``n_clusters`` tight clusters of ``size`` points around random unit centres, rows shuffled (so that a document's
    neighbours are not the rows next to it: an index whose ids are off by a few rows cannot look right)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, size, axis=0) + noise * rng.standard_normal((n_clusters * size, dim)) / np.sqrt(dim)
    return x[rng.permutation(len(x))].astype(np.float32)


def make_index(x: np.ndarray, config: IndexConfig, mrl=(DIM, 32, 16)) -> EmbeddingIndex:
    index = EmbeddingIndex.create(model_id="org/model", dim=x.shape[1], mrl_dims=mrl, config=config)
    for part in np.array_split(np.arange(len(x)), 3):  # shard by shard, as the encoder feeds it
        index.add([f"doc{i}" for i in part], x[part])
    return index


def exact_top(x: np.ndarray, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (indices, scores) of the re-normalised ``dim``-prefixes, in float64."""
    d = x[:, :dim].astype(np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = queries[:, :dim].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s = q @ d.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def measured_recall(index: EmbeddingIndex, x: np.ndarray, dim: int, n_queries: int = 100) -> float:
    """Recall@10 of ``index.search`` against exact numpy search, with the first ``n_queries`` documents as queries
    (a check independent of the recall the index records on build)."""
    got = index.search(x[:n_queries], k=10, dim=dim)
    want, _ = exact_top(x, x[:n_queries], dim, 10)
    return float(
        np.mean(
            [len({int(i.removeprefix("doc")) for i in ids} & set(w.tolist())) / 10 for ids, w in zip(got.ids, want)]
        )
    )


# ------------------------------------------------------------------------------------------------ data, built once


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads wait at barriers for descheduled siblings on a shared machine (see
    benchmarks/encode_search.py): one thread is faster and steadier here, and the results are the same."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def ivfpq_data() -> np.ndarray:
    return clustered(1024)  # 10,240 documents: IVF-PQ's codebooks need 39 x 256 = 9,984 training points


@pytest.fixture(scope="module")
def ivfpq_index(ivfpq_data) -> EmbeddingIndex:
    index = make_index(ivfpq_data, IndexConfig(index_type="ivfpq", approximate_from=5_000))
    index.build([DIM, 32, 16])
    return index


@pytest.fixture(scope="module")
def hnsw_data() -> np.ndarray:
    return clustered(200, seed=1)


@pytest.fixture(scope="module")
def hnsw_index(hnsw_data) -> EmbeddingIndex:
    index = make_index(hnsw_data, IndexConfig(index_type="hnsw", approximate_from=1_000))
    index.build([DIM, 32, 16])
    return index


# ------------------------------------------------------------------------------------------------ size switch


def test_the_index_type_switches_from_flat_at_approximate_from():
    x = clustered(20)  # 200 documents
    config = IndexConfig(index_type="hnsw", approximate_from=200)
    assert config.resolve_type(199) == "flat" and config.resolve_type(200) == "hnsw"
    assert IndexConfig(index_type="hnsw").resolve_type(1) == "hnsw"  # no threshold: the type at any size

    below = make_index(x[:199], config)
    assert isinstance(below.faiss_index(32), faiss.IndexFlatIP)
    stats = below.build_report()["dims"]["32"]
    assert stats["type"] == "flat" and stats["requested_type"] == "hnsw" and stats["documents"] == 199
    assert stats["recall_at_10_vs_flat"] == 1.0 and stats["queries"] == 0  # exact: nothing to measure

    # one more document crosses the threshold: the flat index and its stats are dropped and rebuilt as HNSW
    below.add(["doc199"], x[199:])
    assert below.build_report()["dims"] == {}
    assert isinstance(below.faiss_index(32), faiss.IndexHNSWFlat)
    stats = below.build_report()["dims"]["32"]
    assert stats["type"] == "hnsw" and stats["documents"] == 200 and stats["queries"] == 200

    with pytest.raises(ValueError, match="approximate_from needs an approximate index_type"):
        IndexConfig(approximate_from=10)


def test_ivfpq_on_a_corpus_too_small_to_train_falls_back_to_flat_and_says_so(caplog):
    x = clustered(50)  # 500 documents, under the 9,984 points the PQ codebooks need
    index = make_index(x, IndexConfig(index_type="ivfpq"))
    with caplog.at_level(logging.WARNING, logger="nyx.index.build"):
        res = index.search(x[:5], k=3, dim=32)
    assert [ids[0] for ids in res.ids] == [f"doc{i}" for i in range(5)]
    assert isinstance(index.faiss_index(32), faiss.IndexFlatIP)
    stats = index.build_report()["dims"]["32"]
    assert stats["type"] == "flat" and stats["requested_type"] == "ivfpq"
    assert "too few to train IVF-PQ" in stats["fallback"] and "9984" in stats["fallback"]
    assert any("too few to train IVF-PQ" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ recall on build


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_approximate_indexes_record_recall_against_flat_above_the_floor(kind, request):
    index: EmbeddingIndex = request.getfixturevalue(f"{kind}_index")
    x = request.getfixturevalue(f"{kind}_data")
    faiss_type = faiss.IndexIVFPQ if kind == "ivfpq" else faiss.IndexHNSWFlat
    report = index.build_report()
    json.dumps(report)  # JSON-able, for asset metadata
    assert report["documents"] == len(x) and report["store_dtype"] == "float32"
    assert report["vectors_bytes"] == len(x) * DIM * 4
    assert set(report["dims"]) == {"64", "32", "16"}
    for d in (DIM, 32, 16):
        stats = report["dims"][str(d)]
        assert isinstance(index.faiss_index(d), faiss_type)
        assert stats["type"] == kind and stats["fallback"] is None and stats["documents"] == len(x)
        assert stats["queries"] == 200 and stats["recall_k"] == 10
        assert stats["recall_at_10_vs_flat"] >= RECALL_FLOOR, (d, stats)
        assert stats["build_seconds"] > 0 and stats["search_ms_per_query"] > 0
        assert stats["bytes"] == len(faiss.serialize_index(index.faiss_index(d)))
        # the recorded figure agrees with an independent measurement through the public search
        assert measured_recall(index, x, d) >= RECALL_FLOOR
    if kind == "ivfpq":
        params = report["dims"]["64"]["params"]
        assert params["m"] == 8 and params["nbits"] == 8 and DIM % params["m"] == 0
        assert params["nlist"] == min(round(4 * np.sqrt(len(x))), len(x) // 39)
        assert report["dims"]["64"]["train_points"] == len(x)  # train_sample 100k > n: all of them
        assert report["dims"]["64"]["bytes_per_document"] < DIM * 4 / 4  # codes, not vectors
    # the manifest carries the same stats, and survives JSON
    again = IndexManifest.model_validate(json.loads(json.dumps(index.manifest.model_dump(mode="json"))))
    assert again.build_stats == index.manifest.build_stats


def test_recall_measured_on_build_reflects_a_weak_index():
    """The same IVF-PQ settings on structureless random vectors (no neighbour is much nearer than the others): the
    recorded recall falls well below the floor, so the measurement is a measurement."""
    x = np.random.default_rng(3).standard_normal((10_240, DIM)).astype(np.float32)
    index = make_index(x, IndexConfig(index_type="ivfpq", train_sample=10_000, recall_queries=100))
    index.build([DIM])
    stats = index.build_report()["dims"]["64"]
    assert stats["train_points"] == 10_000 and stats["queries"] == 100
    assert stats["recall_at_10_vs_flat"] < 0.7
    assert stats["recall_at_10_vs_flat"] == pytest.approx(measured_recall(index, x, DIM), abs=0.2)


# ------------------------------------------------------------------------------------------------ persistence


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_save_load_reuses_the_approximate_index_and_its_stats_without_retraining(kind, request, tmp_path, monkeypatch):
    index: EmbeddingIndex = request.getfixturevalue(f"{kind}_index")
    x = request.getfixturevalue(f"{kind}_data")
    before = {d: index.search(x[:20], k=10, dim=d) for d in (DIM, 32, 16)}
    index.save(tmp_path / "idx")
    files = sorted(p.name for p in (tmp_path / "idx").glob("faiss-*.index"))
    assert files == [f"faiss-{kind}-16.index", f"faiss-{kind}-32.index", f"faiss-{kind}-64.index"]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["format"] == 3 and set(manifest["build_stats"]) == {"64", "32", "16"}

    def no_build(self, dim):
        raise AssertionError(f"the {kind} index at dim {dim} was rebuilt on load")

    monkeypatch.setattr(EmbeddingIndex, "_build", no_build)
    monkeypatch.setattr(faiss.IndexIVFPQ, "train", no_build)  # and nothing is trained
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.build_report() == index.build_report()
    for d in (DIM, 32, 16):
        after = loaded.search(x[:20], k=10, dim=d)
        assert after.ids == before[d].ids
        np.testing.assert_array_equal(np.stack(after.scores), np.stack(before[d].scores))
    monkeypatch.undo()

    # an index file that is missing or does not match the vectors is not used: its stale stats are dropped, and the
    # index is rebuilt (and re-measured) on first use
    (tmp_path / "idx" / f"faiss-{kind}-16.index").unlink()
    faiss.write_index(faiss.IndexHNSWFlat(32, 8), str(tmp_path / "idx" / f"faiss-{kind}-32.index"))  # 0 vectors
    reloaded = EmbeddingIndex.load(tmp_path / "idx")
    assert set(reloaded.build_report()["dims"]) == {"64"}


def test_a_format_1_manifest_without_the_new_fields_loads(tmp_path):
    """A folder written before build stats and float16 storage: its manifest has none of the new fields, and its
    saved HNSW index is reused as before."""
    x = clustered(20)
    folder = tmp_path / "old"
    folder.mkdir()
    vecs = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.save(folder / "vectors.npy", vecs.astype(np.float32))
    old = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    old.add(np.ascontiguousarray(vecs))
    faiss.write_index(old, str(folder / "faiss-hnsw-64.index"))
    (folder / "manifest.json").write_text(
        json.dumps(
            {  # as nyx wrote it before index types for scale
                "format": 1,
                "model_id": "org/model",
                "model_revision": "abc",
                "mlflow_model_version": None,
                "dim": DIM,
                "full_dim": DIM,
                "mrl_dims": [DIM],
                "config": {
                    "index_type": "hnsw",
                    "hnsw_m": 32,
                    "hnsw_ef_construction": 200,
                    "hnsw_ef_search": 128,
                    "ivf_nlist": 1024,
                    "ivf_nprobe": 32,
                    "search_batch_size": 1024,
                },
                "doc_ids": [f"doc{i}" for i in range(len(x))],
                "corpus_hash": None,
                "created_with": "0.1.0",
                "created_at": "2024-01-01T00:00:00+00:00",
            }
        )
    )
    loaded = EmbeddingIndex.load(folder)
    cfg = loaded.manifest.config
    assert loaded.manifest.format == 1 and loaded.manifest.build_stats == {}
    assert cfg.store_dtype == "float32" and cfg.approximate_from is None and cfg.ivf_nlist == 1024
    assert loaded.stored_vectors.dtype == np.float32
    assert loaded.faiss_index(DIM) is not None and isinstance(loaded.faiss_index(DIM), faiss.IndexHNSWFlat)
    assert loaded.build_report()["dims"] == {}  # reused as saved: built before stats were recorded
    res = loaded.search(x[:3], k=1)
    assert [ids[0] for ids in res.ids] == ["doc0", "doc1", "doc2"]
    loaded.save(tmp_path / "new")  # written back in the current format
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["format"] == 3


# ------------------------------------------------------------------------------------------------ float16 storage


def separated(n_queries: int = 4, per_query: int = 20, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Queries e_0..e_3 and, for each, ``per_query`` documents whose cosine with it is spaced 0.05 apart (0.98 down
    to 0.03) and 0 with the other queries. The rest of each document is split evenly (in squared norm) between
    coordinates 4..15 and 16..63, so that at the 16-dim prefix the cosine s / sqrt(s² + (1 - s²)/2) keeps the
    order and stays >= 0.027 apart: every top-10 is well separated, at the full dim and at the prefix."""
    rng = np.random.default_rng(seed)
    docs = []
    for j in range(n_queries):
        for s in np.linspace(0.98, 0.03, per_query):
            v = np.zeros(dim)
            for lo, hi in ((n_queries, 16), (16, dim)):
                part = rng.standard_normal(hi - lo)
                v[lo:hi] = np.sqrt((1 - s * s) / 2) * part / np.linalg.norm(part)
            v[j] = s
            docs.append(v)
    queries = np.eye(n_queries, dim)
    return np.asarray(docs, np.float32), queries.astype(np.float32)


@pytest.mark.parametrize("dim", [DIM, 16])
def test_float16_storage_gives_the_float32_ranking_with_scores_within_float16_rounding(tmp_path, dim):
    x, queries = separated()
    k = 10
    # float16 keeps 11 significant bits: each stored coordinate moves by <= u16 = eps16/2 relative, so a cosine moves
    # by <= u16 * sum|q_i x_i| <= u16 (Cauchy-Schwarz; ~2 u16 after a prefix is re-normalised), whatever the
    # dimension: n = 1 in the rounding bound, plus the float32 rounding of FAISS's dot products of `dim` terms
    tol = rounding_tol(EPS16, 1) + rounding_tol(EPS32, dim)
    _, exact = exact_top(x, queries, dim, k + 1)
    assert np.diff(exact, axis=1).max() < -2 * tol  # premise: consecutive ranks differ by more than 2 tol

    f32 = make_index(x, IndexConfig(), mrl=(DIM, 16))
    f16 = make_index(x, IndexConfig(store_dtype="float16"), mrl=(DIM, 16))
    assert f16.stored_vectors.dtype == np.float16 and f16.vectors.dtype == np.float32
    assert f16.stored_vectors.nbytes * 2 == f32.stored_vectors.nbytes
    f16.save(tmp_path / "f16")
    assert np.load(tmp_path / "f16" / "vectors.npy").dtype == np.float16
    assert json.loads((tmp_path / "f16" / "manifest.json").read_text())["config"]["store_dtype"] == "float16"
    loaded = EmbeddingIndex.load(tmp_path / "f16")
    assert loaded.stored_vectors.dtype == np.float16 and loaded.build_report()["store_dtype"] == "float16"

    want = f32.search(queries, k=k, dim=dim)
    for index in (f16, loaded):
        got = index.search(queries, k=k, dim=dim)
        assert got.ids == want.ids
        assert_within(
            f"float16 vs float32 storage: scores at dim {dim}", np.stack(got.scores), np.stack(want.scores), tol
        )
