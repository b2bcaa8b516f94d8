"""Retrievers: BM25, MiniLM and Nyx (tiny) behind one interface; save/load; bad records; model guards."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import pytest
from PIL import Image

from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.index import IndexMismatchError
from nyx.retrieval import (
    BM25Retriever,
    DenseConfig,
    DenseRetriever,
    MiniLMRetriever,
    NyxRetriever,
    Retriever,
    available_retrievers,
    create_retriever,
    load_retriever,
    register_retriever,
)
from tests.tolerances import EPS32, assert_within, rounding_tol

DOCS = [
    Record.from_text("cats", "The cat sat on the warm mat and purred."),
    Record.from_text("whales", "Blue whales are the largest animals in the ocean."),
    Record.from_text("trains", "The night train to Vienna leaves at nine."),
]


# --------------------------------------------------------------------------- a fast, deterministic fake encoder


class HashingEncoder:
    """Bag of hashed words -> 64 dims; records with a missing image fail like a real encoder would."""

    dim = 64

    def __init__(self, model_id: str = "test/hashing"):
        self.model_id = model_id
        self.calls: list[int] = []

    def _embed(self, records):
        self.calls.append(len(records))
        out = np.zeros((len(records), self.dim), np.float32)
        for i, r in enumerate(records):
            for p in r.content:
                if p.type == "image" and not os.path.exists(p.image):
                    raise RecordError(f"image not found: {p.image}", record_id=r.id)
            for w in re.findall(r"\w+", r.text.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i, -1] += 0.01
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_documents(self, records, batch_size=8):
        return self._embed(records)

    def encode_queries(self, records, batch_size=8):
        return self._embed(records)


@register_retriever
class HashingRetriever(DenseRetriever):
    name = "test-hashing"
    default_mrl_dims = (64, 32)
    model_id = "test/hashing"

    def _build_encoder(self):
        return HashingEncoder(type(self).model_id)

    def encoder_config(self):
        return {}

    @classmethod
    def _from_saved_config(cls, config):
        return cls()


def _q(qid: str, text: str) -> Record:
    return Record.from_text(qid, text)


# --------------------------------------------------------------------------- registry


def test_registry_knows_every_retriever_by_name():
    assert {"bm25", "minilm", "nyx"} <= set(available_retrievers())
    assert isinstance(create_retriever("bm25"), BM25Retriever)
    with pytest.raises(ValueError, match="available"):
        create_retriever("nope")


# --------------------------------------------------------------------------- BM25


def test_bm25_ranks_the_lexical_match_first_and_ignores_images(tmp_path):
    img = tmp_path / "whale.png"
    Image.new("RGB", (8, 8), "blue").save(img)
    bm25 = BM25Retriever()
    n = bm25.index(DOCS + [Record(id="picture", content=[Part.of_image(str(img))])])
    assert n == 4
    run = bm25.search([_q("q1", "whales in the ocean"), _q("q2", "zeppelin")], k=10)
    assert next(iter(run["q1"])) == "whales" and "picture" not in run["q1"]
    assert run["q2"] == {}  # no query term in any document: nothing matches


def test_bm25_save_load_round_trip_gives_the_same_run(tmp_path):
    bm25 = BM25Retriever()
    bm25.index(DOCS)
    queries = [_q("q1", "cat mat"), _q("q2", "train Vienna")]
    before = bm25.search(queries, k=3)
    bm25.save(tmp_path / "bm25")
    loaded = load_retriever(tmp_path / "bm25")
    assert isinstance(loaded, BM25Retriever) and loaded.search(queries, k=3) == before


def test_bm25_refuses_a_dimension_and_rejects_duplicate_ids():
    bm25 = BM25Retriever()
    rejects = RejectLog()
    assert bm25.index(DOCS + [Record.from_text("cats", "again")], rejects=rejects) == 3
    assert rejects.items[0]["record_id"] == "cats" and "duplicate" in rejects.items[0]["reason"]
    with pytest.raises(ValueError, match="dimension"):
        bm25.search([_q("q", "cat")], dim=128)


# --------------------------------------------------------------------------- dense (fake encoder)


def test_dense_retriever_isolates_a_bad_record_and_keeps_its_neighbours(tmp_path):
    bad = Record(id="bad", content=[Part.of_text("broken"), Part.of_image(str(tmp_path / "missing.png"))])
    r = HashingRetriever(DenseConfig(batch_size=2, shard_size=4))
    rejects = RejectLog()
    n = r.index(DOCS[:2] + [bad] + DOCS[2:], rejects=rejects)
    assert n == 3 and r.embedding_index.doc_ids == ["cats", "whales", "trains"]
    assert [i["record_id"] for i in rejects.items] == ["bad"] and "missing.png" in rejects.items[0]["reason"]


def test_dense_retriever_encodes_whole_shards_in_one_call_when_nothing_fails():
    r = HashingRetriever(DenseConfig(batch_size=2, shard_size=3))
    r.index(DOCS * 1 + [Record.from_text(f"x{i}", f"word{i}") for i in range(4)])
    assert r.encoder.calls == [3, 3, 1]


def test_dense_round_trip_and_matryoshka_dims(tmp_path):
    r = HashingRetriever()
    r.index(DOCS)
    queries = [_q("q1", "whales ocean"), _q("q2", "cat")]
    assert r.dims == [64, 32]
    before = {d: r.search(queries, k=3, dim=d) for d in (64, 32)}
    assert next(iter(before[64]["q1"])) == "whales"
    r.save(tmp_path / "dense")
    loaded = load_retriever(tmp_path / "dense")
    for d in (64, 32):
        assert loaded.search(queries, k=3, dim=d) == before[d]
    with pytest.raises(IndexMismatchError, match="128"):
        loaded.search(queries, k=3, dim=128)


def test_dense_index_at_a_matryoshka_prefix_stores_only_that_prefix():
    r = HashingRetriever(DenseConfig(index_dim=32))
    r.index(DOCS)
    assert r.embedding_index.vectors.shape == (3, 32) and r.dims == [32]
    assert r.embedding_index.manifest.full_dim == 64
    assert list(r.search([_q("q", "night train Vienna")], k=1)["q"]) == ["trains"]


def test_reopening_an_index_with_another_model_is_refused(tmp_path, monkeypatch):
    r = HashingRetriever()
    r.index(DOCS)
    r.save(tmp_path / "dense")
    monkeypatch.setattr(HashingRetriever, "model_id", "test/another-model")
    loaded = load_retriever(tmp_path / "dense")
    with pytest.raises(IndexMismatchError, match="another-model"):
        loaded.search([_q("q", "cat")], k=1)


def test_every_retriever_implements_the_interface():
    for cls in (BM25Retriever, MiniLMRetriever, NyxRetriever, HashingRetriever):
        assert issubclass(cls, Retriever) and not getattr(cls, "__abstractmethods__", None), cls


# --------------------------------------------------------------------------- MiniLM (real pretrained weights)


@pytest.mark.slow
def test_minilm_finds_the_paraphrased_document_and_round_trips(tmp_path):
    r = MiniLMRetriever()
    r.index(DOCS)
    queries = [_q("q1", "a kitten resting on a rug"), _q("q2", "railway journey to Austria")]
    run = r.search(queries, k=3)
    assert next(iter(run["q1"])) == "cats" and next(iter(run["q2"])) == "trains"
    assert r.dims == [384]
    r.save(tmp_path / "minilm")
    again = load_retriever(tmp_path / "minilm").search(queries, k=3)
    assert again.keys() == run.keys()
    for qid in run:
        assert list(again[qid]) == list(run[qid])
        # the same float32 model on the same CPU: cosine scores (384-term sums) agree to rounding
        assert_within(
            "MiniLM saved and loaded: scores",
            list(again[qid].values()),
            list(run[qid].values()),
            rounding_tol(EPS32, 384),
        )


# --------------------------------------------------------------------------- Nyx (tiny offline model)


@pytest.mark.slow
def test_nyx_tiny_indexes_mixed_modal_records_and_rejects_a_broken_image(tmp_path):
    img = tmp_path / "red.png"
    Image.new("RGB", (64, 48), "red").save(img)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    corpus = DOCS + [
        Record(id="mixed", content=[Part.of_text("A red square:"), Part.of_image(str(img))]),
        Record(id="broken", content=[Part.of_text("oops"), Part.of_image(str(broken))]),
    ]
    r = NyxRetriever(model="tiny", config=DenseConfig(batch_size=4))
    rejects = RejectLog()
    assert r.index(corpus, rejects=rejects) == 4
    assert [i["record_id"] for i in rejects.items] == ["broken"]
    full_dim = r.embedding_index.manifest.full_dim
    assert r.dims[0] == full_dim and r.dims == sorted(r.dims, reverse=True) and len(r.dims) > 1

    queries = [_q("q1", "red square"), Record(id="q2", content=[Part.of_image(str(img))])]
    run = r.search(queries, k=10)
    assert set(run["q1"]) == {"cats", "whales", "trains", "mixed"}
    assert all(-1.0001 <= s <= 1.0001 for s in run["q1"].values())
    small = r.search(queries, k=2, dim=r.dims[-1])
    assert all(len(v) == 2 for v in small.values())

    r.save(tmp_path / "nyx")
    again = load_retriever(tmp_path / "nyx").search(queries, k=10)
    for qid in run:
        assert list(again[qid]) == list(run[qid])
        assert_within(
            "Nyx saved and loaded: scores",
            list(again[qid].values()),
            list(run[qid].values()),
            rounding_tol(EPS32, full_dim),
        )
