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
from nyx.synth.generators.base import QAPair
from nyx.synth.nyxqa import NyxQAConfig, build_nyxqa, export_beir, filter_reason
from nyx.synth.qa import qa_record, stratified_sample, synthesize_qa
from nyx.synth.text import normalize_answer

TOWNS = [
    "Varholm",
    "Ostmere",
    "Belford",
    "Corwick",
    "Dunby",
    "Elmstead",
    "Fenbridge",
    "Galhaven",
    "Haldale",
    "Ivrthorpe",
    "Jorburgh",
    "Kelfield",
    "Lunmoor",
    "Marport",
    "Norton",
    "Pelcombe",
    "Quenley",
    "Roswell",
    "Selholm",
    "Tormere",
    "Ulford",
    "Venwick",
    "Wesby",
    "Yarstead",
    "Zelbridge",
    "Ashhaven",
    "Bramdale",
    "Calthorpe",
    "Dorburgh",
    "Eskfield",
]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 chunks: 12 text-only, 10 with one image, 8 with two."""
    d = tmp_path_factory.mktemp("imgs")
    chunks = []
    for i, town in enumerate(TOWNS):
        text = (
            f"The town of {town} had {1200 + 37 * i} residents in {1950 + i}. Its harbour hosts {5 + i} "
            f"fishing boats painted {COLOURS[i % 6]} every spring. The mayor Anna {town}son opened "
            f"a new museum near the station."
        )
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
    bad = [
        _fake_qa(corpus[0], 90, "What does the author say about the town?"),
        _fake_qa(corpus[12], 91, "What is in the picture?", refs=[4]),
        Record(records[0].id + "dup", list(records[0].content), dict(records[0].extra)),
    ]
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


# -- a total QA budget over shards (nyx.synth.qa.plan_sample) ----------------------------------------------------


def _shard(name: str, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` chunk ``(id, group)`` pairs of one shard: about 63% text, 30% one image, 7% more (the paper's mix)."""
    import random

    rng = random.Random(seed)
    return [
        (f"{name}/doc{i // 3}#c{i % 3}", rng.choices(["text", "image1", "image2+"], [63, 30, 7])[0]) for i in range(n)
    ]


SHARDS = {"s0": _shard("s0", 900, 0), "s1": _shard("s1", 2500, 1), "s2": _shard("s2", 600, 2)}
BUDGET = 1000


def _selected(plan, chunks) -> set[str]:
    return {cid for cid, g in chunks if plan.selects((cid, g))}


def test_qa_budget_is_a_total_over_shards_exact_per_group_and_deterministic():
    """The shards together take exactly the budget (a Bernoulli draw at rate 1000/4000 would only come within
    +-3 sd = +-82 of it), each group exactly its quota, and the plan depends on nothing but the chunk set."""
    from nyx.synth.qa import plan_sample

    everything = [c for s in SHARDS.values() for c in s]
    plan = plan_sample(everything, BUDGET, seed=3)
    per_shard = {name: _selected(plan, chunks) for name, chunks in SHARDS.items()}
    assert sum(len(v) for v in per_shard.values()) == BUDGET
    assert all(0 < len(per_shard[s]) < len(SHARDS[s]) for s in SHARDS)  # every shard takes its part, none all
    # each shard's share follows its size (hypergeometric: sd = sqrt(1000 * p * (1 - p) * 3000 / 3999) < 14)
    for name, chunks in SHARDS.items():
        assert abs(len(per_shard[name]) - BUDGET * len(chunks) / len(everything)) < 4 * 14
    groups = dict(everything)
    by_group = Counter(groups[c] for v in per_shard.values() for c in v)
    assert dict(by_group) == {g: n for g, n in plan.allocation.items() if n}
    sizes = Counter(groups.values())
    for g, n in plan.allocation.items():  # quotas in proportion to the groups (largest remainder)
        assert abs(n - BUDGET * sizes[g] / len(everything)) < 1
    # the same chunks in another order, or split otherwise, give the same plan and selection
    again = plan_sample(list(reversed(everything)), BUDGET, seed=3)
    assert again == plan
    assert _selected(again, everything) == set().union(*per_shard.values())
    assert _selected(plan_sample(everything, BUDGET, seed=4), everything) != _selected(plan, everything)
    # no budget (the sample profile) or a budget beyond the corpus: every chunk
    assert _selected(plan_sample(everything, None), everything) == {c for c, _ in everything}
    assert _selected(plan_sample(everything, 10**6), everything) == {c for c, _ in everything}


def test_qa_budget_without_stratification_is_still_a_total():
    from nyx.synth.qa import plan_sample

    everything = [c for s in SHARDS.values() for c in s]
    plan = plan_sample(everything, BUDGET, seed=0, stratify=False)
    assert sum(len(_selected(plan, chunks)) for chunks in SHARDS.values()) == BUDGET


def test_adding_a_shard_only_moves_each_groups_cutoff_along_a_fixed_order():
    """With a 4th shard the old shards' selection changes only at the margin: per group, the old and the new
    selection of the old chunks are both prefixes of one fixed order (the chunks' keys), so one contains the other
    and no chunk is swapped for another; the total is the budget again, and the old shards give up about the new
    shard's share (hypergeometric sd < 16)."""
    from nyx.synth.qa import plan_sample, sample_key

    old = [c for s in SHARDS.values() for c in s]
    new_shard = _shard("s3", 1500, 3)
    before = plan_sample(old, BUDGET, seed=0)
    after = plan_sample(old + new_shard, BUDGET, seed=0)
    sel_before, sel_after = _selected(before, old), _selected(after, old)
    assert len(sel_after) + len(_selected(after, new_shard)) == BUDGET
    assert abs((len(sel_before) - len(sel_after)) - BUDGET * len(new_shard) / len(old + new_shard)) < 4 * 16
    groups = dict(old)
    for g in ("text", "image1", "image2+"):
        order = sorted((c for c, gg in old if gg == g), key=lambda c: sample_key(c, 0))
        b = [c for c in order if c in sel_before]
        a = [c for c in order if c in sel_after]
        assert b == order[: len(b)] and a == order[: len(a)], g  # prefixes of the same order
        changed = set(a) ^ set(b)
        assert len(changed) == abs(len(a) - len(b))
        assert all(groups[c] == g for c in changed)


def test_synthesize_qa_samples_one_shard_with_the_plan_of_the_whole_corpus(corpus):
    """synthesize_qa on one shard with a corpus-wide plan takes that shard's part of the total, not the budget."""
    from nyx.synth.qa import plan_sample

    shard_a, shard_b = corpus[:10], corpus[10:]
    plan = plan_sample(corpus, 9, seed=0)
    gen = ClozeGenerator(seed=0, image_question_prob=0.5, max_qa_per_chunk=1)
    (_, sa), (_, sb) = synthesize_qa(shard_a, gen, plan=plan), synthesize_qa(shard_b, gen, plan=plan)
    assert sa["sampled"] + sb["sampled"] == 9 and sa["sample_plan"]["population"] == 30
    with pytest.raises(ValueError, match="either a plan or sample_size"):
        synthesize_qa(shard_a, gen, sample_size=9, plan=plan)


def test_profiles_budget_qa_in_total():
    from pydantic import ValidationError

    from nyx.settings import load_profile

    assert load_profile("paper").qa.sample_size == 10_000
    assert load_profile("sample").qa.sample_size is None
    with pytest.raises(ValidationError):  # the per-shard setting is gone (a stale override fails loudly)
        load_profile("paper", {"qa": {"sample_size_per_shard": 10_000}})
