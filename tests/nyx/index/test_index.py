"""EmbeddingIndex: exact search at every Matryoshka prefix, save/load round trips, manifest guards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nyx.data.records import Part, Record
from nyx.index import EmbeddingIndex, IndexConfig, IndexMismatchError, corpus_hash
from tests.tolerances import EPS32, assert_within, rounding_tol

DIM = 32
MRL = (32, 16, 8)


def _vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _exact_scores(docs: np.ndarray, queries: np.ndarray, dim: int) -> np.ndarray:
    """Exact cosine scores of the renormalised prefixes, in float64 (the reference for the float32 index)."""
    docs, queries = docs.astype(np.float64), queries.astype(np.float64)
    d = docs[:, :dim] / np.linalg.norm(docs[:, :dim], axis=1, keepdims=True)
    q = queries[:, :dim] / np.linalg.norm(queries[:, :dim], axis=1, keepdims=True)
    return q @ d.T


def _built(index_type: str = "flat", n: int = 200, shards: int = 3) -> tuple[EmbeddingIndex, np.ndarray]:
    x = _vectors(n)
    index = EmbeddingIndex.create(
        model_id="org/model",
        model_revision="abc",
        dim=DIM,
        mrl_dims=MRL,
        config=IndexConfig(index_type=index_type, ivf_nprobe=64, hnsw_ef_search=256),
    )
    for part in np.array_split(np.arange(n), shards):  # built shard by shard
        index.add([f"doc{i}" for i in part], x[part])
    return index, x


@pytest.mark.parametrize("dim", [32, 16, 8, 5])
def test_flat_search_equals_exact_numpy_search_at_every_prefix(dim):
    index, x = _built()
    queries = _vectors(7, seed=1)
    result = index.search(queries, k=10, dim=dim)
    exact = _exact_scores(x, queries, dim)
    want = -np.sort(-exact, axis=1)[:, :10]
    # float32 cosine of unit vectors: a normalisation and a dot product, each a sum of `dim` terms
    tol = rounding_tol(EPS32, dim)
    assert result.dim == dim
    got_idx = np.array([[int(i.removeprefix("doc")) for i in row] for row in result.ids])
    assert all(len(set(row)) == 10 for row in got_idx)
    # the true score of the document at each rank is the true rank-th best score: the exact top 10 in order, up to
    # swaps of documents whose scores tie within rounding (this data has such a pair at dim 32, 1.2e-5 apart)
    assert_within(
        "flat index vs exact float64 search: true score at each rank",
        np.take_along_axis(exact, got_idx, axis=1),
        want,
        tol,
    )
    assert_within("flat index vs exact float64 search: scores", np.stack(result.scores), want, tol)


def test_queries_already_cut_to_the_search_dim_give_the_same_result():
    index, _ = _built()
    queries = _vectors(4, seed=2)
    full = index.search(queries, k=5, dim=8)
    cut = index.search(queries[:, :8], k=5, dim=8)
    assert full.ids == cut.ids


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip_returns_identical_results(tmp_path, index_type):
    index, _ = _built(index_type)
    queries = _vectors(5, seed=3)
    before = {d: index.search(queries, k=10, dim=d) for d in MRL}
    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.doc_ids == index.doc_ids
    for d in MRL:
        after = loaded.search(queries, k=10, dim=d)
        assert after.ids == before[d].ids
        np.testing.assert_array_equal(np.stack(after.scores), np.stack(before[d].scores))


def test_approximate_indexes_find_the_exact_nearest_neighbour_on_a_small_corpus():
    _, x = _built()
    for index_type in ("hnsw", "ivf"):
        index, _ = _built(index_type)
        res = index.search(x[:20], k=1)
        assert [ids[0] for ids in res.ids] == [f"doc{i}" for i in range(20)], index_type


def test_manifest_records_model_dims_documents_and_version(tmp_path):
    index, _ = _built()
    index.manifest.corpus_hash = "deadbeef"
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["model_id"] == "org/model" and manifest["model_revision"] == "abc"
    assert manifest["dim"] == DIM and manifest["full_dim"] == DIM
    assert manifest["mrl_dims"] == [32, 16, 8]
    assert manifest["config"]["index_type"] == "flat"
    assert manifest["doc_ids"][:3] == ["doc0", "doc1", "doc2"] and len(manifest["doc_ids"]) == 200
    assert manifest["corpus_hash"] == "deadbeef"
    assert manifest["created_with"]


def test_shard_of_another_dimension_is_refused():
    index, _ = _built()
    with pytest.raises(IndexMismatchError, match="dimension 16"):
        index.add(["x"], _vectors(1, dim=16))


def test_shard_of_another_model_is_refused():
    index, _ = _built()
    with pytest.raises(IndexMismatchError, match="other/model"):
        index.add(["x"], _vectors(1), model_id="other/model")


def test_loading_with_another_model_or_revision_is_refused(tmp_path):
    index, _ = _built()
    index.save(tmp_path / "idx")
    EmbeddingIndex.load(tmp_path / "idx", model_id="org/model", model_revision="abc")  # matching: fine
    with pytest.raises(IndexMismatchError, match="other/model"):
        EmbeddingIndex.load(tmp_path / "idx", model_id="other/model")
    with pytest.raises(IndexMismatchError, match="revision"):
        EmbeddingIndex.load(tmp_path / "idx", model_id="org/model", model_revision="def")


def test_merging_indexes_of_different_models_is_refused():
    index, _ = _built()
    other = EmbeddingIndex.create(model_id="other/model", dim=DIM)
    other.add(["y"], _vectors(1))
    with pytest.raises(IndexMismatchError):
        index.merge_from(other)
    same = EmbeddingIndex.create(model_id="org/model", model_revision="abc", dim=DIM)
    same.add(["y"], _vectors(1, seed=9))
    index.merge_from(same)
    assert index.doc_ids[-1] == "y" and len(index) == 201


def test_search_dimension_above_the_index_dimension_is_refused():
    index, _ = _built()
    with pytest.raises(IndexMismatchError, match="64"):
        index.search(_vectors(1), k=3, dim=64)
    with pytest.raises(IndexMismatchError, match="query embeddings have dimension 8"):
        index.search(_vectors(1, dim=8), k=3, dim=16)


def test_duplicate_document_ids_are_refused():
    index, _ = _built()
    with pytest.raises(ValueError, match="doc3"):
        index.add(["doc3"], _vectors(1))
    with pytest.raises(ValueError, match="dup"):
        index.add(["dup", "dup"], _vectors(2))


def test_k_larger_than_the_corpus_returns_every_document_once():
    index = EmbeddingIndex.create(model_id="m", dim=4)
    index.add(["a", "b", "c"], np.eye(3, 4, dtype=np.float32))
    res = index.search(np.array([[1, 0.5, 0, 0]], np.float32), k=10)
    assert res.ids == [["a", "b", "c"]]


def test_adding_after_a_search_updates_every_prefix_index():
    index = EmbeddingIndex.create(model_id="m", dim=4, mrl_dims=[2])
    index.add(["a"], np.array([[1, 0, 0, 0]], np.float32))
    index.search(np.array([[1, 0, 0, 0]], np.float32), k=1, dim=2)  # builds the 2-dim index
    index.add(["b"], np.array([[0, 1, 0, 0]], np.float32))
    assert index.search(np.array([[0, 1, 0, 0]], np.float32), k=1, dim=2).ids == [["b"]]


def test_corpus_hash_depends_on_image_bytes_not_image_paths(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    b.parent.mkdir()
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    rec = lambda path: Record(id="d", content=[Part.of_text("t"), Part.of_image(path)])  # noqa: E731
    assert corpus_hash([rec(a)]) == corpus_hash([rec(b)])
    b.write_bytes(b"other bytes")
    assert corpus_hash([rec(a)]) != corpus_hash([rec(b)])
    assert corpus_hash([Record.from_text("d", "x")]) != corpus_hash([Record.from_text("d", "y")])
