"""The embedding store (nyx.index.store) and corpus indexes (nyx.index.corpus): a model encodes a corpus once; a new
shard encodes only itself; a retrained model, an edited record or a replaced image encode again; a killed writer
leaves nothing that fools the next; an index built for another model version or corpus is refused by name."""

import os
import shutil
import time

import numpy as np
import pytest

from nyx.data.records import Part, Record
from nyx.index import IndexMismatchError
from nyx.index.corpus import build_corpus_index, open_corpus_index
from nyx.index.store import EmbeddingStore, folder_weights_id, record_key
from tests.tolerances import F32_OUTPUT_TOL, assert_within, rounding_tol

EPS16 = float(np.finfo(np.float16).eps)


def _corpus(n: int, prefix: str = "d") -> list[Record]:
    return [
        Record(id=f"{prefix}{i}", content=[Part.of_text(f"document {i} about the topic number {i % 5}")])
        for i in range(n)
    ]


class CountingEncoder:
    """Wraps a retriever's encoder and counts the documents it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.documents = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_documents(self, records, **kw):
        self.documents += len(records)
        return self.inner.encode_documents(records, **kw)


def _retriever(model, encoder=None, **kw):
    from nyx.retrieval import DenseConfig, NyxRetriever

    r = NyxRetriever(model=str(model), config=DenseConfig(shard_size=8), **kw)
    if encoder is not None:
        r._encoder = encoder
    return r


@pytest.fixture(scope="module")
def tiny_encoder(tiny_dir):
    from nyx.model.encoder import NyxEncoder

    return NyxEncoder.from_pretrained(tiny_dir, device="cpu", show_progress=False)


def test_second_index_of_the_same_corpus_encodes_nothing_and_returns_the_stored_vectors(
    tmp_path, tiny_dir, tiny_encoder
):
    store = EmbeddingStore(tmp_path / "emb")
    corpus = _corpus(20)
    first = CountingEncoder(tiny_encoder)
    r1 = _retriever(tiny_dir, first)
    r1.index(corpus, store=store)
    assert first.documents == 20 and r1.last_encode.encoded == 20 and r1.last_encode.reused == 0

    again = CountingEncoder(tiny_encoder)
    r2 = _retriever(tiny_dir, again)
    r2.index(corpus, store=store)
    assert again.documents == 0 and r2.last_encode.reused == 20 and r2.last_encode.encoded == 0
    assert np.array_equal(r1.embedding_index.vectors, r2.embedding_index.vectors)  # float32 stored, bit for bit
    assert r1.embedding_index.doc_ids == r2.embedding_index.doc_ids
    assert store.duplicates(r2.embedding_identity()) == 0


def test_a_new_shard_encodes_only_its_own_records(tmp_path, tiny_dir, tiny_encoder):
    store = EmbeddingStore(tmp_path / "emb")
    old, new = _corpus(12, "a"), _corpus(5, "b")
    r = _retriever(tiny_dir, CountingEncoder(tiny_encoder))
    r.embed_into(old, store, source="shard-00000")
    counting = CountingEncoder(tiny_encoder)
    r2 = _retriever(tiny_dir, counting)
    stats = r2.embed_into(old + new, store, source="shard-00001")
    assert counting.documents == 5 and stats.encoded == 5 and stats.reused == 12
    log = store.model(r2.embedding_identity()).encode_log()
    # shard_size 8: the old shard as 8 + 4; then batches a0-a7 (all stored), a8-a11 + b0-b3, b4: two segments
    assert [(e["source"], e["count"]) for e in log] == [
        ("shard-00000", 8),
        ("shard-00000", 4),
        ("shard-00001", 4),
        ("shard-00001", 1),
    ]
    assert sum(e["count"] for e in log) == 17


def test_an_edited_record_or_a_replaced_image_is_encoded_again(tmp_path, tiny_dir, tiny_encoder):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (56, 56), (200, 10, 10)).save(img)
    docs = [Record(id="img", content=[Part.of_text("a red square"), Part.of_image(str(img))]), *_corpus(3)]
    store = EmbeddingStore(tmp_path / "emb")
    _retriever(tiny_dir, CountingEncoder(tiny_encoder)).index(docs, store=store)
    key_before = record_key(docs[0])
    Image.new("RGB", (56, 56), (10, 10, 200)).save(img)  # same path, other pixels
    edited = [docs[0], Record(id="d0", content=[Part.of_text("document 0, now about something else")]), *docs[2:]]
    counting = CountingEncoder(tiny_encoder)
    r = _retriever(tiny_dir, counting)
    r.index(edited, store=store)
    assert record_key(docs[0]) != key_before
    assert counting.documents == 2 and r.last_encode.reused == 2


def test_a_retrained_model_has_a_new_key_and_encodes_everything(tmp_path, tiny_dir):
    from safetensors.torch import load_file, save_file

    from nyx.utils.integrity import write_manifest

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    write_manifest(model)
    store = EmbeddingStore(tmp_path / "emb")
    corpus = _corpus(10)
    r1 = _retriever(model)
    r1.index(corpus, store=store)
    weights_before = folder_weights_id(model)
    # "retrain": other weights in the same folder, manifest rewritten as the trainer does
    f = next(model.glob("*.safetensors"))
    tensors = load_file(f)
    name = next(k for k, v in tensors.items() if v.dtype.is_floating_point and v.numel() > 1)
    tensors[name] = tensors[name] * 1.5
    save_file(tensors, f, metadata={"format": "pt"})
    write_manifest(model)
    assert folder_weights_id(model) != weights_before
    r2 = _retriever(model)
    r2.index(corpus, store=store)
    assert r2.last_encode.encoded == 10 and r2.last_encode.reused == 0
    assert len(store.models()) == 2


def test_a_segment_left_half_written_by_a_killed_writer_is_ignored_then_cleaned(tmp_path, tiny_dir, tiny_encoder):
    store = EmbeddingStore(tmp_path / "emb")
    r = _retriever(tiny_dir, tiny_encoder)
    r.index(_corpus(4), store=store)
    seg_dir = store.model(r.embedding_identity()).segments_dir
    # what atomic_dir leaves when the process dies mid-write: a hidden temp folder with partial files
    dead = seg_dir / ".shard-00009-deadbeef.abc123.tmp"
    dead.mkdir()
    np.save(dead / "embeddings.npy", np.zeros((3, 128), np.float32))
    (dead / "keys.json").write_text('{"ids": ["x"], "keys": ["k"]}')
    old = time.time() - 3600
    os.utime(dead, (old, old))
    fresh = EmbeddingStore(tmp_path / "emb")
    counting = CountingEncoder(tiny_encoder)
    r2 = _retriever(tiny_dir, counting)
    r2.index(_corpus(4), store=fresh)
    assert counting.documents == 0 and len(fresh.model(r2.embedding_identity())) == 4
    assert fresh.clean() == [dead] and not dead.exists()


def test_float16_store_keeps_vectors_within_float16_rounding(tmp_path, tiny_dir, tiny_encoder):
    store = EmbeddingStore(tmp_path / "emb", dtype="float16")
    corpus = _corpus(6)
    r1 = _retriever(tiny_dir, tiny_encoder)
    r1.index(corpus, store=store)
    seg = next(p for p in store.model(r1.embedding_identity()).segments_dir.iterdir() if not p.name.startswith("."))
    assert np.load(seg / "embeddings.npy").dtype == np.float16
    r2 = _retriever(tiny_dir, tiny_encoder)
    r2.index(corpus, store=store)
    a = r1.embedding_index.vectors.astype(np.float64)
    b = r2.embedding_index.vectors.astype(np.float64)
    # float16 rounds each unit-norm coordinate to half an ulp (|x| <= 1), then the row is re-normalised
    assert_within("float16 store round trip", b, a, rounding_tol(EPS16, 2, 1.0))


def test_corpus_index_is_refused_for_another_model_version_or_another_corpus(tmp_path, tiny_dir, tiny_encoder):
    corpus = _corpus(8)
    r = _retriever(tiny_dir, tiny_encoder, mlflow_model_version="3")
    report = build_corpus_index(r, corpus, tmp_path / "idx", store=EmbeddingStore(tmp_path / "emb"))
    assert report["documents"] == 8 and report["mlflow_model_version"] == "3"
    assert len(open_corpus_index(tmp_path / "idx", model_version="3", corpus=corpus).embedding_index) == 8
    with pytest.raises(IndexMismatchError, match=r"built by model version 3, not 4"):
        open_corpus_index(tmp_path / "idx", model_version="4", corpus=corpus)
    changed = [*corpus[:-1], Record(id="d7", content=[Part.of_text("an edited last document")])]
    with pytest.raises(IndexMismatchError, match=r"another corpus .*8 documents"):
        open_corpus_index(tmp_path / "idx", model_version="3", corpus=changed)
    grown = [*corpus, *_corpus(2, "new")]
    with pytest.raises(IndexMismatchError, match=r"2 of them not in the index"):
        open_corpus_index(tmp_path / "idx", corpus=grown)


def test_graph_layers_run_every_asset_after_its_parents(definitions):
    from orchestration.pipeline import graph_layers

    graph = definitions.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    layers = graph_layers(graph, keys)
    position = {k: i for i, (_, layer) in enumerate(layers) for k in layer}
    assert set(position) == set(keys)
    for k in keys:
        for p in graph.get(k).parent_keys:
            assert position[p] <= position[k], (p, k)
            if position[p] == position[k]:  # same layer: same kind (one run, or one run per shard)
                assert (graph.get(p).partitions_def is None) == (graph.get(k).partitions_def is None)
    names = {k.to_user_string(): i for k, i in position.items()}
    assert (
        names["stage1_checkpoint"] < names["stage1_embeddings"] < names["stage1_index"] <= names["feedback_preferences"]
    )
    assert [part for part, _ in layers] == [i % 2 == 1 for i in range(len(layers))]


def test_index_report_counts_records_whose_images_were_shrunk_to_fit(tmp_path, tiny_dir):
    from PIL import Image

    page = tmp_path / "page.png"
    Image.new("RGB", (1024, 1400), (250, 250, 250)).save(page)
    docs = [
        Record(id="page", content=[Part.of_text("annual report, page 7 " * 40), Part.of_image(str(page))]),
        *_corpus(3),
    ]
    store = EmbeddingStore(tmp_path / "emb")
    r = _retriever(tiny_dir, encoder_overrides={"max_length": 320})
    report = build_corpus_index(r, docs, tmp_path / "idx", store=store)
    assert report["documents"] == 4
    assert report["inputs"]["images_shrunk"] == 1 and report["inputs"]["images_dropped"] == 0
    assert store.models()[0]["inputs"]["records_with_shrunk_images"] == 1
    # a second build reuses the embeddings and still reports what the stored ones went through
    again = build_corpus_index(
        _retriever(tiny_dir, encoder_overrides={"max_length": 320}), docs, tmp_path / "idx", store=store
    )
    assert again["encoded"] == 0 and again["inputs"]["images_shrunk"] == 1


def test_a_record_that_cannot_be_encoded_is_rejected_by_name_and_its_neighbours_are_stored(
    tmp_path, tiny_dir, tiny_encoder
):
    from nyx.data.rejects import RejectLog

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    docs = _corpus(5)
    records = docs[:3] + [Record(id="bad", content=[Part.of_image(str(bad))])] + docs[3:]
    store = EmbeddingStore(tmp_path / "emb")
    rejects = RejectLog(stage="embed")
    r = _retriever(tiny_dir, tiny_encoder)
    stats = r.embed_into(records, store, source="shard-00000", rejects=rejects)
    assert (stats.encoded, stats.rejected) == (5, 1)
    assert len(rejects) == 1 and rejects.items[0]["record_id"] == "bad"
    stored = store.model(r.embedding_identity())
    assert len(stored) == 5 and record_key(records[3]) not in stored
    # the stored rows are the encoder's embeddings of those records
    want = tiny_encoder.encode_documents(docs)
    assert_within(
        "stored vs direct encode",
        stored.get([record_key(d) for d in docs]).astype(np.float64),
        want.astype(np.float64),
        F32_OUTPUT_TOL,
    )


_KILLED_ENCODE = """
import sys, time
from nyx.data.records import Part, Record
from nyx.index.store import EmbeddingStore
from nyx.retrieval import DenseConfig, NyxRetriever

model, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = NyxRetriever(model=model, config=DenseConfig(shard_size=8, batch_size=4))
enc = r.encoder
slow = enc.encode_documents
def encode_documents(records, **kw):  # slow enough that the kill lands mid-corpus
    time.sleep(0.4)
    return slow(records, **kw)
enc.encode_documents = encode_documents
corpus = [Record(id=f"d{i}", content=[Part.of_text(f"document {i} about the topic number {i % 5}")]) for i in range(n)]
print("ready", flush=True)
r.embed_into(corpus, EmbeddingStore(root), source="shard-00000")
print("done", flush=True)
"""


@pytest.mark.slow
def test_an_encode_killed_mid_corpus_resumes_with_nothing_encoded_twice(tmp_path, tiny_dir, tiny_encoder):
    """A real SIGKILL of a process filling the store: the next run encodes only what the killed one had not stored
    (finished segments are kept, the half-written one is never read) and no record is stored twice."""
    import signal
    import subprocess
    import sys

    n, root = 64, tmp_path / "emb"
    script = tmp_path / "encode.py"
    script.write_text(_KILLED_ENCODE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tiny_dir), str(root), str(n)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    store = EmbeddingStore(root)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for at least two finished segments, then kill
        segs = list(root.glob("*/segments/[!.]*"))
        if len(segs) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    corpus = _corpus(n)
    r = _retriever(tiny_dir, tiny_encoder)
    stored_before = len(store.model(r.embedding_identity()))
    assert 16 <= stored_before < n, stored_before  # killed mid-corpus, after two segments
    counting = CountingEncoder(tiny_encoder)
    r2 = _retriever(tiny_dir, counting)
    stats = r2.embed_into(corpus, store, source="shard-00000")
    assert stats.reused == stored_before and stats.encoded == counting.documents == n - stored_before
    assert len(store.model(r2.embedding_identity())) == n and store.duplicates(r2.embedding_identity()) == 0
