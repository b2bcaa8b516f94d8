"""BEIR folders, qrels and TREC runs: round trips, atomic rewrites, bad lines rejected."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from nyx.data.beir import load_beir, read_qrels, read_trec_run, write_beir, write_qrels, write_trec_run
from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog


def png(path, colour="red"):
    buf = io.BytesIO()
    Image.new("RGB", (30, 30), colour).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture()
def dataset(tmp_path):
    img = png(tmp_path / "elsewhere" / "chart.png")
    corpus = [
        Record("c1", [Part.of_text("Varnholm lies on the River Ouse."), Part.of_image(str(img))]),
        Record("c2", [Part.of_text("The Zentro K7 kettle costs $40.")], {"title": "Kettle"}),
        Record("c3", [Part.of_image(str(img)), Part.of_text("Chart only.")]),
    ]
    queries = [
        Record(
            "q1",
            [Part.of_text("Which river runs through Varnholm?")],
            {"answer": "Ouse", "choices": ["Ouse", "Tees", "Wear", "Eden"], "correct_index": 0, "modality": "image1"},
        ),
        Record("q2", [Part.of_image(str(img)), Part.of_text("What does the chart show?")], {"modality": "text"}),
    ]
    qrels = {"q1": {"c1": 1}, "q2": {"c3": 1, "c1": 0}}
    return corpus, queries, qrels, img


def test_round_trip_keeps_parts_extras_and_qrels(tmp_path, dataset):
    corpus, queries, qrels, img = dataset
    folder = write_beir(tmp_path / "beir", corpus, queries, qrels)
    assert (folder / "qrels.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"
    rejects = RejectLog()
    ds = load_beir(folder, rejects)
    assert len(rejects) == 0
    assert [r.id for r in ds.corpus.values()] == ["c1", "c2", "c3"]
    assert ds.corpus["c1"].content == corpus[0].content
    assert ds.corpus["c2"].extra == {"title": "Kettle"}
    assert ds.queries["q1"].extra == queries[0].extra
    assert ds.queries["q2"].images == [str(img)]
    assert ds.qrels == qrels
    assert len(ds) == 2


def test_copy_mode_makes_a_self_contained_folder(tmp_path, dataset):
    corpus, queries, qrels, img = dataset
    folder = write_beir(tmp_path / "beir", corpus, queries, qrels, images="copy")
    lines = [json.loads(x) for x in (folder / "corpus.jsonl").read_text().splitlines()]
    ref = lines[0]["content"][1]["image"]
    assert ref.startswith("images/") and (folder / ref).read_bytes() == img.read_bytes()
    assert len(list((folder / "images").iterdir())) == 1  # deduplicated by content
    moved = tmp_path / "moved"
    folder.rename(moved)
    img.unlink()
    ds = load_beir(moved)
    assert Image.open(ds.corpus["c1"].images[0]).size == (30, 30)


def test_rewrite_keeps_images_stored_inside_the_folder(tmp_path, dataset):
    corpus, queries, qrels, _ = dataset
    folder = write_beir(tmp_path / "beir", corpus, queries, qrels, images="copy")
    ds = load_beir(folder)
    write_beir(folder, ds.corpus.values(), ds.queries.values(), ds.qrels)  # default 'reference' mode
    again = load_beir(folder)
    assert all(Image.open(p).size == (30, 30) for r in again.corpus.values() for p in r.images)
    assert json.loads((folder / "corpus.jsonl").read_text().splitlines()[0])["content"][1]["image"].startswith(
        "images/"
    )


def test_failed_write_leaves_previous_version(tmp_path, dataset):
    corpus, queries, qrels, _ = dataset
    folder = write_beir(tmp_path / "beir", corpus, queries, qrels)
    before = (folder / "corpus.jsonl").read_text()
    with pytest.raises(ValueError, match="duplicate id"):
        write_beir(folder, corpus + [corpus[0]], queries, qrels)
    assert (folder / "corpus.jsonl").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_qrels_lines_and_unknown_ids_are_rejected(tmp_path, dataset):
    corpus, queries, qrels, _ = dataset
    folder = write_beir(tmp_path / "beir", corpus, queries, qrels)
    with open(folder / "qrels.tsv", "a") as f:
        f.write("q1\tc2\tyes\nq1\tc2\nq9\tc1\t1\nq1\tc404\t1\nq1\tc2\t2.0\n")
    rejects = RejectLog()
    ds = load_beir(folder, rejects)
    assert ds.qrels["q1"] == {"c1": 1, "c2": 2}
    assert rejects.reasons() == {
        "malformed qrels line": 2,
        "qrels name an unknown query": 1,
        "qrels name an unknown document 'c404'": 1,
    }
    with pytest.raises(RecordError, match="malformed qrels line"):
        read_qrels(folder / "qrels.tsv")


def test_text_only_beir_records_and_split_qrels_folder(tmp_path):
    folder = tmp_path / "scifact"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "Body"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "What?"}) + "\n")
    write_qrels({"1": {"d1": 1}}, folder / "qrels" / "test.tsv")
    ds = load_beir(folder)
    assert ds.corpus["d1"].text == "T\nBody" and ds.queries["1"].text == "What?"
    assert ds.qrels == {"1": {"d1": 1}}


def test_trec_run_round_trip_ranks_by_score(tmp_path):
    run = {"q2": {"b": 0.5, "a": 0.5, "c": 0.9}, "q1": {"x": -1.25}}
    path = write_trec_run(run, tmp_path / "run.trec", tag="nyx-test")
    lines = path.read_text().splitlines()
    assert lines == [
        "q1 Q0 x 1 -1.250000 nyx-test",
        "q2 Q0 c 1 0.900000 nyx-test",
        "q2 Q0 a 2 0.500000 nyx-test",
        "q2 Q0 b 3 0.500000 nyx-test",
    ]
    assert read_trec_run(path) == {"q1": {"x": -1.25}, "q2": {"c": 0.9, "a": 0.5, "b": 0.5}}
    with pytest.raises(ValueError):
        write_trec_run(run, tmp_path / "bad.trec", tag="two words")
    (tmp_path / "broken.trec").write_text("q1 Q0 x 1\n")
    with pytest.raises(RecordError, match="malformed run line"):
        read_trec_run(tmp_path / "broken.trec")


def test_a_qrels_row_with_score_zero_is_not_relevant_and_never_counts_as_a_hit(tmp_path):
    from math import log2

    from nyx.eval.retrieval import evaluate_run

    corpus = [Record.from_text(d, f"Document {d}.") for d in ("d0", "d1", "d2")]
    queries = [Record.from_text("q1", "First question?"), Record.from_text("q2", "Second question?")]
    folder = write_beir(tmp_path / "beir", corpus, queries, {})
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t0\nq1\td1\t1\nq2\td0\t0\n")
    # Loading keeps a score-0 judgement as 0 (or drops it): it never becomes relevant.
    assert read_qrels(folder / "qrels.tsv")["q1"] == {"d0": 0, "d1": 1}
    ds = load_beir(folder)
    assert ds.qrels["q1"].get("d0", 0) == 0 and ds.qrels["q1"]["d1"] == 1
    assert all(score == 0 for score in ds.qrels.get("q2", {}).values())
    # The score-0 document is retrieved at rank 1, the relevant one at rank 2.
    run = {"q1": {"d0": 0.9, "d1": 0.8, "d2": 0.1}, "q2": {"d0": 0.9, "d2": 0.5}}
    m = evaluate_run(run, ds.qrels)
    assert set(m.per_query) == {"q1"} and m.n_queries == 1  # q2 has nothing relevant: not scored
    q1 = m.per_query["q1"]
    assert q1["recall@1"] == 0.0 and q1["recall@5"] == 1.0
    assert q1["mrr@10"] == pytest.approx(1 / 2, abs=1e-12)
    assert q1["ndcg@10"] == pytest.approx(1 / log2(3), abs=1e-12)  # one relevant doc at rank 2, ideal DCG 1
    assert m.aggregate["recall@1"] == 0.0 and m.aggregate["mrr@10"] == pytest.approx(1 / 2, abs=1e-12)
