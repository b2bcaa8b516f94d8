"""NyxQA construction: stratified QA synthesis, rule filters, options, leakage-free splits, BEIR export."""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import pytest
from PIL import Image

from nyx.data.beir import load_beir
from nyx.data.records import Part, Record
from nyx.data.rejects import RejectLog
from nyx.synth.generators import ClozeGenerator
from nyx.synth.nyxqa import NyxQAConfig, build_nyxqa, export_beir, filter_reason
from nyx.synth.qa import qa_record, stratified_sample, synthesize_qa
from nyx.synth.generators.base import QAPair
from nyx.synth.text import normalize_answer

TOWNS = ["Varholm", "Ostmere", "Belford", "Corwick", "Dunby", "Elmstead", "Fenbridge", "Galhaven", "Haldale",
         "Ivrthorpe", "Jorburgh", "Kelfield", "Lunmoor", "Marport", "Norton", "Pelcombe", "Quenley", "Roswell",
         "Selholm", "Tormere", "Ulford", "Venwick", "Wesby", "Yarstead", "Zelbridge", "Ashhaven", "Bramdale",
         "Calthorpe", "Dorburgh", "Eskfield"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 chunks: 12 text-only, 10 with one image, 8 with two."""
    d = tmp_path_factory.mktemp("imgs")
    chunks = []
    for i, town in enumerate(TOWNS):
        text = (f"The town of {town} had {1200 + 37 * i} residents in {1950 + i}. Its harbour hosts {5 + i} "
                f"fishing boats painted {COLOURS[i % 6]} every spring. The mayor Anna {town}son opened "
                f"a new museum near the station.")
        n_img = 0 if i < 12 else (1 if i < 22 else 2)
        imgs = []
        for k in range(n_img):
            p = d / f"{i}_{k}.png"
            Image.new("RGB", (40, 30), ((i * 8) % 255, 40 * k, 90)).save(p)
            imgs.append(Part.of_image(str(p)))
        content = [Part.of_text(text)] + imgs if n_img < 2 else [imgs[0], Part.of_text(text), imgs[1]]
        chunks.append(Record(f"doc{i}#c0", content, extra={"doc_id": f"doc{i}", "ordinal": 0}))
    return chunks


@pytest.fixture(scope="module")
def qa(corpus):
    gen = ClozeGenerator(seed=0, image_question_prob=0.5, max_qa_per_chunk=3)
    return synthesize_qa(corpus, gen, sample_size=None, seed=0)


def test_stratified_sample_keeps_group_proportions_and_is_deterministic(corpus):
    s1 = stratified_sample(corpus, 15, seed=1)
    assert [c.id for c in s1] == [c.id for c in stratified_sample(corpus, 15, seed=1)]
    assert Counter(c.modality for c in s1) == {"text": 6, "image1": 5, "image2+": 4}
    fixed = stratified_sample(corpus, 12, seed=1, proportions={"text": 0.5, "image1": 0.0, "image2+": 0.5})
    assert Counter(c.modality for c in fixed) == {"text": 6, "image2+": 6}
    # A group too small for its quota passes the rest on.
    big = stratified_sample(corpus, 20, seed=1, proportions={"text": 0.0, "image1": 0.0, "image2+": 1.0})
    assert len(big) == 20 and Counter(c.modality for c in big)["image2+"] == 8
    assert len(stratified_sample(corpus, None)) == 30


def test_synthesize_qa_records_carry_the_query_and_its_positive(qa, corpus):
    records, stats = qa
    by_id = {c.id: c for c in corpus}
    assert stats["sampled"] == 30 and stats["chunks_with_qa"] == 30 and stats["qa"] == len(records)
    assert stats["qa_by_kind"]["multi_image"] == 8
    for r in records:
        chunk = by_id[r.extra["positive_id"]]
        assert r.id.startswith(chunk.id + "#q")
        assert r.extra["modality"] == chunk.modality and r.extra["source"] == "cloze"
        assert r.text == r.extra["question"] and set(r.images) <= set(chunk.images)
        assert len(r.images) == len(r.extra["image_refs"])
    assert any(r.images for r in records) and any(not r.images for r in records)


def _fake_qa(chunk, k, question, answer="1950", refs=()):
    return qa_record(chunk, k, QAPair(question=question, answer=answer, image_refs=list(refs)), "test")


def test_rule_filters_catch_context_references_and_unresolved_images(corpus):
    text, one, two = corpus[0], corpus[12], corpus[22]
    cases = {
        "refers to an unseen context": _fake_qa(text, 0, "According to the passage, when was it founded?"),
        "unresolved image reference": _fake_qa(one, 1, "What is shown?", refs=[2]),
        "mentions an image the query does not carry": _fake_qa(text, 2, "What colour is the boat in the photo?"),
        "answer too long": _fake_qa(text, 3, "Who opened the museum?", answer="the mayor of the old town"),
    }
    for reason, rec in cases.items():
        assert filter_reason(rec, {c.id: c for c in corpus}[rec.extra["positive_id"]]) == reason
    numbered = _fake_qa(two, 4, "In image 3, what colour is the roof?", refs=[1])
    assert filter_reason(numbered, two) == "unresolved image reference"
    assert filter_reason(_fake_qa(two, 5, "In image 2, what colour is the roof?", refs=[2]), two) is None
    assert filter_reason(_fake_qa(text, 6, "When did Varholm have 1200 residents?"), None) == "unknown positive chunk"
    assert filter_reason(_fake_qa(text, 7, "When did Varholm have 1200 residents?"), text) is None


def test_build_nyxqa_filters_dedupes_and_reports_reasons(qa, corpus):
    records, _ = qa
    bad = [_fake_qa(corpus[0], 90, "What does the author say about the town?"),
           _fake_qa(corpus[12], 91, "What is in the picture?", refs=[4]),
           Record(records[0].id + "dup", list(records[0].content), dict(records[0].extra))]
    cfg = NyxQAConfig(dev_per_group=3, test_per_group=3)
    _, base = build_nyxqa(records, corpus, ClozeGenerator(seed=0), cfg)
    # The templated corpus repeats sentences across towns with other answers: such questions have no unique
    # positive and are all dropped.
    assert base["dropped"]["ambiguous question"] > 0
    rejects = RejectLog(stage="nyxqa")
    nyx, stats = build_nyxqa(records + bad, corpus, ClozeGenerator(seed=0), cfg, rejects)
    assert stats["dropped"]["refers to an unseen context"] == base["dropped"].get("refers to an unseen context", 0) + 1
    assert stats["dropped"]["unresolved image reference"] == base["dropped"].get("unresolved image reference", 0) + 1
    assert stats["dropped"]["duplicate question"] == base["dropped"].get("duplicate question", 0) + 1
    assert stats["dropped"]["ambiguous question"] == base["dropped"]["ambiguous question"]
    assert max(Counter(q.extra["question"] for q in nyx.queries).values()) == 1
    ambiguous = {r["record_id"] for r in rejects.items if r["reason"] == "ambiguous question"}
    assert ambiguous and not ambiguous & {q.id for q in nyx.queries}
    assert stats["kept"] == len(nyx.queries) == stats["input"] - sum(stats["dropped"].values())
    assert rejects.reasons() == stats["dropped"]
    assert {r["record_id"] for r in rejects.items} >= {b.id for b in bad[:2]}


def test_options_are_four_distinct_with_one_correct_and_deterministic(qa, corpus):
    records, _ = qa
    a, _ = build_nyxqa(records, corpus, ClozeGenerator(seed=0), NyxQAConfig(dev_per_group=3, test_per_group=3))
    b, _ = build_nyxqa(records, corpus, ClozeGenerator(seed=0), NyxQAConfig(dev_per_group=3, test_per_group=3))
    assert [q.to_json() for q in a.queries] == [q.to_json() for q in b.queries]
    positions = Counter()
    for q in a.queries:
        choices = q.extra["choices"]
        assert len(choices) == 4 and len({normalize_answer(c) for c in choices}) == 4
        assert [normalize_answer(c) == normalize_answer(q.extra["answer"]) for c in choices].count(True) == 1
        assert choices[q.extra["correct_index"]] == q.extra["answer"]
        positions[q.extra["correct_index"]] += 1
    assert len(positions) == 4  # the answer is not always in the same place


def test_splits_have_the_configured_sizes_per_group_and_no_leakage(qa, corpus):
    records, _ = qa
    cfg = NyxQAConfig(dev_per_group=4, test_per_group=5, max_eval_fraction=0.9)
    nyx, stats = build_nyxqa(records, corpus, ClozeGenerator(seed=0), cfg)
    split_of_positive = defaultdict(set)
    for q in nyx.queries:
        split_of_positive[q.extra["positive_id"]].add(q.extra["split"])
    assert all(len(s) == 1 for s in split_of_positive.values())
    for group in ("text", "image1", "image2+"):
        assert 0 < stats["splits"]["test"][group] <= 5 and 0 < stats["splits"]["dev"][group] <= 4
        assert stats["splits"]["train"][group] > 0
    assert sum(stats["split_sizes"].values()) == len(nyx.queries)
    assert sum(stats["splits"]["test"].values()) >= 12  # filled close to 3 x 5 with whole chunks


def test_beir_export_per_split_is_readable(qa, corpus, tmp_path):
    records, _ = qa
    nyx, _ = build_nyxqa(records, corpus, ClozeGenerator(seed=0), NyxQAConfig(dev_per_group=3, test_per_group=3))
    paths = export_beir(nyx, tmp_path / "nyxqa")
    assert set(paths) == {"train", "dev", "test"}
    for split, folder in paths.items():
        ds = load_beir(folder)
        assert set(ds.corpus) == {c.id for c in corpus}
        assert len(ds.queries) == len(nyx.split(split)) > 0
        for qid, q in ds.queries.items():
            assert ds.qrels[qid] == {q.extra["positive_id"]: 1}
            assert q.extra["split"] == split and len(q.extra["choices"]) == 4
            assert q.extra["choices"][q.extra["correct_index"]] == q.extra["answer"]
            assert q.text == q.extra["question"]
            assert all(os.path.isfile(i) for i in q.images)


def test_small_groups_keep_a_train_set(qa, corpus):
    records, _ = qa
    cfg = NyxQAConfig(dev_per_group=200, test_per_group=200, max_eval_fraction=0.5)  # paper sizes, tiny corpus
    nyx, stats = build_nyxqa(records, corpus, ClozeGenerator(seed=0), cfg)
    for group in ("text", "image1", "image2+"):
        total = sum(stats["splits"][s][group] for s in ("train", "dev", "test"))
        assert stats["splits"]["dev"][group] + stats["splits"]["test"][group] <= total // 2
        assert stats["splits"]["train"][group] >= total // 2 > 0

