"""Training triples: NyxQA + hard negatives, Nyx triples, the research-format converter, negatives, mixing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nyx.data.records import Record
from nyx.data.rejects import RejectLog
from nyx.train.config import SourceConfig
from nyx.train.dataset import (
    TrainingExample,
    apply_cap_and_weight,
    batch_records,
    build_training_set,
    content_key,
    convert_research_file,
    fill_negatives,
    global_batches,
    in_batch_false_negatives,
    load_nyxqa,
    load_research,
    load_triples,
    local_slice,
    research_to_triple,
)


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _text(t: str) -> dict:
    return {"content": [{"type": "text", "text": t}]}


# ----------------------------------------------------------------------------------------------------------
# Research format
# ----------------------------------------------------------------------------------------------------------


def test_research_record_places_images_at_their_placeholders(tmp_path):
    obj = {
        "qry": "<|image|>\nWhat is shown here and here <|image|>?",
        "qry_image_path": ["a.jpg", "b.jpg"],
        "pos_text": "A cat. <|image|> It sleeps.",
        "pos_image_path": "c.jpg",
        "neg_text": ["A dog.", "Birds <|image|>"],
        "neg_image_path": ["", "d.jpg"],
    }
    t = research_to_triple(obj, image_root=tmp_path)
    assert t["query"]["content"] == [
        {"type": "image", "image": str(tmp_path / "a.jpg")},
        {"type": "text", "text": "What is shown here and here"},
        {"type": "image", "image": str(tmp_path / "b.jpg")},
        {"type": "text", "text": "?"},
    ]
    assert t["positive"]["content"] == [
        {"type": "text", "text": "A cat."},
        {"type": "image", "image": str(tmp_path / "c.jpg")},
        {"type": "text", "text": "It sleeps."},
    ]
    assert t["negatives"] == [
        {"content": [{"type": "text", "text": "A dog."}]},
        {"content": [{"type": "text", "text": "Birds"}, {"type": "image", "image": str(tmp_path / "d.jpg")}]},
    ]


def test_research_record_without_placeholder_puts_images_first_and_mismatch_is_rejected(tmp_path):
    t = research_to_triple({"qry": "find it", "qry_image_path": "x.png", "pos_text": "doc"}, tmp_path)
    assert [p["type"] for p in t["query"]["content"]] == ["image", "text"]
    assert t["negatives"] == []
    bad = tmp_path / "research.jsonl"
    _write_jsonl(
        bad,
        [
            {"qry": "two <|image|> <|image|>", "qry_image_path": "only-one.png", "pos_text": "doc"},
            {"qry": "q", "pos_text": "", "pos_image_path": ""},
            {"qry": "ok", "pos_text": "fine", "neg_text": "<|image|>", "neg_image_path": ""},
            "{not json",
        ],
    )
    rejects = RejectLog()
    out = tmp_path / "out" / "triples.jsonl"
    assert convert_research_file(bad, out, rejects=rejects) == 1
    reasons = " | ".join(i["reason"] for i in rejects.items)
    assert "2 image placeholder(s) but 1 image path(s)" in reasons
    assert "positive: no text and no image" in reasons
    assert "broken negative dropped: negative 0" in reasons
    assert "malformed JSON" in reasons
    assert len(rejects) == 4


def test_converted_research_file_loads_as_nyx_triples_with_relative_images(tmp_path):
    (tmp_path / "imgs").mkdir()
    src = _write_jsonl(
        tmp_path / "research.jsonl",
        [
            {
                "qry": "<|image|> what?",
                "qry_image_path": "imgs/q.png",
                "pos_text": "answer <|image|>",
                "pos_image_path": "imgs/p.png",
                "neg_text": "wrong",
                "neg_image_path": "",
            },
        ],
    )
    out = tmp_path / "triples.jsonl"
    convert_research_file(src, out)
    raw = json.loads(out.read_text())
    assert raw["query"]["content"][0] == {"type": "image", "image": "imgs/q.png"}  # relative to the output file
    examples = load_triples(out, "research", RejectLog())
    assert examples[0].query.images == [str(tmp_path / "imgs" / "q.png")]
    direct = load_research(src, "research", RejectLog())
    assert content_key(direct[0].positive) == content_key(examples[0].positive)
    assert [content_key(n) for n in direct[0].negatives] == [content_key(n) for n in examples[0].negatives]


# ----------------------------------------------------------------------------------------------------------
# Negatives
# ----------------------------------------------------------------------------------------------------------


def _ex(i: int, negs: list[Record], pos_text: str | None = None) -> TrainingExample:
    return TrainingExample(
        Record.from_text(f"q{i}", f"question {i}"), Record.from_text(f"p{i}", pos_text or f"doc {i}"), tuple(negs), "s"
    )


def test_broken_negatives_are_replaced_from_the_pool_never_by_the_positive():
    pool_doc = Record.from_text("n-shared", "a real negative")
    examples = [
        _ex(0, [Record.from_text("dup-of-pos", "doc 0")]),  # same content as its own positive
        _ex(1, [pool_doc, Record.from_text("p0", "doc 0")]),
        _ex(2, []),  # none mined
        _ex(3, [Record.from_text("n3", "doc 3 neighbour")], pos_text="a real negative"),  # positive == pool doc
    ]
    rejects = RejectLog()
    out = fill_negatives(examples, 2, random.Random(0), rejects)
    assert len(out) == 4
    for ex in out:
        assert len(ex.negatives) == 2
        assert len({content_key(n) for n in ex.negatives}) == 2
        assert content_key(ex.positive) not in {content_key(n) for n in ex.negatives}
        assert ex.positive.id not in {n.id for n in ex.negatives}
    assert "equals the positive" in rejects.items[0]["reason"]


def test_example_that_cannot_be_filled_is_rejected_not_padded():
    examples = [_ex(0, [Record.from_text("n0", "only negative")])]
    rejects = RejectLog()
    assert fill_negatives(examples, 3, random.Random(0), rejects) == []
    assert "only 1 usable negatives for 3 required" in rejects.items[-1]["reason"]


def test_own_negatives_are_subsampled_deterministically():
    negs = [Record.from_text(f"n{k}", f"neg {k}") for k in range(5)]
    a = fill_negatives([_ex(0, negs)], 1, random.Random(3), RejectLog())
    b = fill_negatives([_ex(0, negs)], 1, random.Random(3), RejectLog())
    assert a[0].negatives == b[0].negatives and a[0].negatives[0] in negs


# ----------------------------------------------------------------------------------------------------------
# NyxQA
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture()
def nyxqa(tmp_path):
    folder = tmp_path / "nyxqa"
    folder.mkdir()
    _write_jsonl(folder / "corpus.jsonl", [{"id": f"c{i}", **_text(f"chunk {i}")} for i in range(6)])
    _write_jsonl(
        folder / "queries.jsonl",
        [
            {"id": "q1", **_text("what is in chunk 1?"), "answer": "one", "choices": ["one", "two", "three", "four"]},
            {"id": "q2", **_text("and chunk 2?"), "answer": "two"},
            {"id": "q3", **_text("chunk 3?"), "answer": "three"},
        ],
    )
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc1\t1\nq1\tc5\t1\nq2\tc2\t1\nq3\tc3\t1\n")
    hn = _write_jsonl(
        tmp_path / "hard_negatives.jsonl",
        [
            {"query_id": "q1", "positive_id": "c1", "negative_ids": ["c5", "c4", "missing"]},  # c5 is relevant
            {"query_id": "q2", "positive_id": "c2", "negative_ids": ["c0"]},
            {"query_id": "ghost", "positive_id": "c1", "negative_ids": []},
        ],
    )
    return folder, hn


def test_nyxqa_with_hard_negatives_keeps_extra_fields_and_drops_relevant_or_missing_negatives(nyxqa):
    folder, hn = nyxqa
    rejects = RejectLog()
    examples = {e.query.id: e for e in load_nyxqa(folder, hn, "nyxqa", rejects)}
    assert set(examples) == {"q1", "q2", "q3"}
    q1 = examples["q1"]
    assert q1.query.extra["choices"] == ["one", "two", "three", "four"]
    assert q1.positive.id == "c1" and [n.id for n in q1.negatives] == ["c4"]
    assert q1.exclude == {"c1", "c5"}
    assert examples["q3"].positive.id == "c3" and examples["q3"].negatives == ()  # qrels positive, no line
    reasons = " | ".join(i["reason"] for i in rejects.items)
    assert "'c5' is relevant to the query" in reasons
    assert "'missing' not in the corpus" in reasons
    assert "unknown query" in reasons

    filled = fill_negatives(list(examples.values()), 1, random.Random(0), rejects)
    q3 = next(e for e in filled if e.query.id == "q3")
    assert q3.negatives[0].id in {"c4", "c0"}  # drawn from the mined pool, not the positive


def test_build_training_set_mixes_sources_with_caps_and_weights(nyxqa, tmp_path):
    folder, hn = nyxqa
    triples = _write_jsonl(
        tmp_path / "extra.jsonl",
        [
            {"query": _text(f"extra q{i}"), "positive": _text(f"extra d{i}"), "negatives": [_text(f"extra n{i}")]}
            for i in range(10)
        ]
        + [{"query": {"content": []}, "positive": _text("x")}],
    )
    sources = [
        SourceConfig(name="nyxqa", kind="nyxqa", path=str(folder), hard_negatives=str(hn), weight=2.0),
        SourceConfig(name="extra", kind="triples", path=str(triples), cap=4, weight=0.5),
    ]
    rejects = RejectLog()
    ts = build_training_set(sources, n_negatives=1, seed=0, rejects=rejects)
    assert ts.counts["nyxqa"] == {"loaded": 3, "usable": 3, "mixed": 6}
    assert ts.counts["extra"] == {"loaded": 10, "usable": 10, "mixed": 2}
    assert len(ts) == 8 and all(len(e.negatives) == 1 for e in ts.examples)
    again = build_training_set(sources, n_negatives=1, seed=0, rejects=RejectLog())
    assert [(e.query.id, e.negatives[0].id) for e in again.examples] == [
        (e.query.id, e.negatives[0].id) for e in ts.examples
    ]
    assert any("unusable triple" in i["reason"] for i in rejects.items)


def test_cap_and_weight_semantics():
    items = [_ex(i, []) for i in range(10)]
    rng = random.Random(0)
    assert len(apply_cap_and_weight(items, 4, 1.0, rng)) == 4
    assert len(apply_cap_and_weight(items, None, 2.5, rng)) == 25
    assert len(apply_cap_and_weight(items, None, 0.3, rng)) == 3


# ----------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------


def test_global_batches_are_seeded_full_and_sliced_contiguously_per_rank():
    a = global_batches(10, 4, seed=1, epoch=0)
    assert a == global_batches(10, 4, seed=1, epoch=0)
    assert a != global_batches(10, 4, seed=1, epoch=1)
    assert len(a) == 2 and all(len(b) == 4 for b in a)
    assert len({i for b in a for i in b}) == 8
    assert list(local_slice(a[0], 0, 2)) + list(local_slice(a[0], 1, 2)) == a[0]


def test_batch_records_lays_out_positives_then_negatives_by_query():
    n = [Record.from_text(f"n{i}{k}", f"neg {i}{k}") for i in range(2) for k in range(2)]
    exs = [_ex(0, n[:2]), _ex(1, n[2:])]
    queries, docs = batch_records(exs)
    assert [q.id for q in queries] == ["q0", "q1"]
    assert [d.id for d in docs] == ["p0", "p1", "n00", "n01", "n10", "n11"]


def test_in_batch_false_negatives_marks_shared_and_relevant_positives_only():
    same_chunk = Record.from_text("p0", "The bridge is red.")
    copy_of_chunk = Record.from_text("p0-copy", "The bridge is red.")
    other = Record.from_text("p2", "The station is old.")
    relevant_to_q3 = Record.from_text("p4", "The harbour is deep.")
    q = [Record.from_text(f"q{i}", f"question {i}") for i in range(5)]
    exs = [
        TrainingExample(q[0], same_chunk, (), "s"),
        TrainingExample(q[1], same_chunk, (), "s"),  # another question on the same chunk
        TrainingExample(q[2], other, (), "s"),
        TrainingExample(q[3], copy_of_chunk, (), "s", exclude=frozenset({"p4"})),  # same content, other id
        TrainingExample(q[4], relevant_to_q3, (), "s"),
    ]
    mask = in_batch_false_negatives(exs)
    expected = {(0, 1), (1, 0), (0, 3), (3, 0), (1, 3), (3, 1), (3, 4)}
    assert {(i, j) for i, j in zip(*mask.nonzero(as_tuple=True)) for i, j in [(int(i), int(j))]} == expected
    assert not mask.diagonal().any()
