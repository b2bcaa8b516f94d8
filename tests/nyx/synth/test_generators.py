"""Generators: the cloze stand-in (determinism, answers, images, distractors, reader), prompts, parsing,
the factory, and the local Qwen2.5-VL generator on the tiny model."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from nyx.data.records import Part, Record
from nyx.synth.generators import ClozeGenerator, GeneratorConfig, load_prompt, make_generator
from nyx.synth.generators.chat import parse_json_payload, parse_qa_items, record_parts
from nyx.synth.generators.cloze import BLANK, find_spans, span_type
from nyx.synth.generators.prompts import PROMPT_NAMES
from nyx.synth.text import normalize_answer

TEXTS = [
    "The Golden Gate Bridge was painted orange in 1937 by the city. It spans 1,280 meters across the strait "
    "near San Francisco. Engineers used 83,000 tons of steel in the towers and the deck.",
    "Marie Curie received the Nobel Prize in Chemistry in 1911 in Stockholm. Her laboratory in Paris had "
    "green walls and a small window. She worked there with Pierre Curie for many long years.",
    "The village of Lindqvist Harbour counts 412 inhabitants and three fishing boats. Every boat is painted "
    "blue with a white stripe along the hull. The mayor Anna Berg was elected in 2019 by the council.",
    "A red kite circled above the Brennan Valley for 45 minutes before landing. The bird carried a yellow "
    "ring on its left leg. Rangers from the Oakridge Station counted 17 nests that spring.",
]


def _png(path, color):
    Image.new("RGB", (48, 32), color).save(path)
    return str(path)


@pytest.fixture()
def chunks(tmp_path):
    img = [_png(tmp_path / f"i{k}.png", (40 * k, 90, 160)) for k in range(3)]
    out = [Record.from_text(f"doc{i}#c0", t) for i, t in enumerate(TEXTS)]
    s = TEXTS[1].split(". ")
    out[1] = Record("doc1#c0", [Part.of_text(s[0] + "."), Part.of_image(img[0]), Part.of_text(". ".join(s[1:]))])
    out[3] = Record("doc3#c0", [Part.of_image(img[1]), Part.of_text(TEXTS[3]), Part.of_image(img[2])])
    return out


def _qa(gen, chunks):
    return {c.id: [p.to_json() for p in gen.qa_for_chunk(c)] for c in chunks}


def test_cloze_is_deterministic_given_the_seed_and_independent_of_order(chunks):
    a = _qa(ClozeGenerator(seed=7), chunks)
    b = _qa(ClozeGenerator(seed=7), list(reversed(chunks)))
    assert a == b and sum(map(len, a.values())) >= 8
    others = [_qa(ClozeGenerator(seed=s, image_question_prob=0.5), chunks) for s in range(1, 6)]
    assert any(o != a for o in others)  # the seed matters


def test_cloze_questions_mask_a_short_span_of_one_chunk_sentence(chunks):
    gen = ClozeGenerator(seed=0, max_qa_per_chunk=5)
    for chunk in chunks:
        pairs = gen.qa_for_chunk(chunk)
        assert pairs, chunk.id
        assert len([p for p in pairs if p.kind == "qa"]) <= 5
        for p in pairs:
            assert 1 <= len(p.answer.split()) <= 5
            assert p.question.count(BLANK) == 1
            body = p.question.split(": ", 1)[1]
            assert body.replace(BLANK, p.answer) in " ".join(chunk.text.split())
    # Numbers are preferred over other span types when the sentence has one.
    first = gen.qa_for_chunk(chunks[0])
    assert all(span_type(p.answer) == "number" for p in first)


def test_cloze_attaches_the_nearest_image_and_adds_a_two_image_question(chunks):
    gen = ClozeGenerator(seed=0, image_question_prob=1.0, multi_image_questions=1)
    one = gen.qa_for_chunk(chunks[1])  # one image, after the first sentence
    assert one and all(p.image_refs == [1] for p in one)
    assert all("image shown" in p.question for p in one)
    multi = gen.qa_for_chunk(chunks[3])
    extra = [p for p in multi if p.kind == "multi_image"]
    assert len(extra) == 1 and extra[0].image_refs == [1, 2] and "images shown" in extra[0].question
    text_only = gen.qa_for_chunk(chunks[0])
    assert all(p.image_refs == [] and p.kind == "qa" for p in text_only)


def test_cloze_distractors_come_from_other_chunks_with_the_same_type(chunks):
    gen = ClozeGenerator(seed=0)
    with pytest.raises(RuntimeError, match="prepare"):
        gen.distractors("q", "1937", chunks[0])
    gen.prepare(chunks)
    for chunk in chunks:
        own = {normalize_answer(sent[s:e]) for _, sent in gen._sentences(chunk) for s, e, _ in find_spans(sent)}
        for p in gen.qa_for_chunk(chunk):
            ds = gen.distractors(p.question, p.answer, chunk, n=3)
            assert len(ds) == 3 and len({normalize_answer(d) for d in ds}) == 3
            assert normalize_answer(p.answer) not in {normalize_answer(d) for d in ds}
            assert not own & {normalize_answer(d) for d in ds}  # never a span of the positive chunk
            if span_type(p.answer) == "number":
                assert all(span_type(d) == "number" for d in ds)
            assert ds == gen.distractors(p.question, p.answer, chunk, n=3)  # deterministic


def test_cloze_reader_reads_the_span_back_only_from_the_right_document(chunks):
    gen = ClozeGenerator(seed=0)
    gen.prepare(chunks)
    for i, chunk in enumerate(chunks):
        wrong = chunks[(i + 1) % len(chunks)]
        for p in gen.qa_for_chunk(chunk):
            assert gen.answer(p.question, [chunk]) == p.answer
            assert gen.answer(p.question, [wrong]) == ""
            choices = [*gen.distractors(p.question, p.answer, chunk), p.answer]
            assert gen.answer(p.question, [wrong, chunk], choices=choices) == p.answer
            assert gen.answer(p.question, [wrong], choices=choices) in choices


def test_prompt_files_are_versioned_and_hashed():
    for name in PROMPT_NAMES:
        p = load_prompt(name, "v1")
        assert p.id.startswith(f"{name}.v1+") and len(p.sha) == 12
    qa = load_prompt("qa_generation")
    text = qa.render(max_pairs=5, max_answer_words=5, n_images=2)
    assert "up to 5 question-answer pairs" in text and "$" not in text
    with pytest.raises(KeyError):
        qa.render(max_pairs=5)
    with pytest.raises(FileNotFoundError):
        load_prompt("qa_generation", "v99")


def test_model_replies_are_parsed_leniently_and_garbage_is_rejected():
    assert parse_json_payload('```json\n{"qa": []}\n```') == {"qa": []}
    assert parse_json_payload('Sure! Here: {"qa": [{"question": "Q?", "answer": "A"}]} hope it helps') == {
        "qa": [{"question": "Q?", "answer": "A"}]
    }
    assert parse_json_payload("no json here") is None
    assert parse_json_payload("{broken") is None
    items = parse_qa_items(
        {
            "qa": [
                {"question": "Q?", "answer": 1937, "images": ["image 2"]},
                {"question": "", "answer": "x"},
                "junk",
                {"question": "Q2?", "answer": "B", "images": [True]},
            ]
        }
    )
    assert items == [{"question": "Q?", "answer": "1937", "images": [2]}]
    assert parse_qa_items({"pairs": []}) is None


def test_record_parts_announce_each_image_in_place(chunks):
    parts = record_parts(chunks[3])
    kinds = [p.type if p.type == "image" else p.text[:9] for p in parts]
    assert kinds[:2] == ["<image 1>", "image"] and kinds[-2:] == ["<image 2>", "image"]


def test_make_generator_validates_the_kind_and_builds_cloze_by_default():
    gen = make_generator()
    assert isinstance(gen, ClozeGenerator) and gen.describe()["kind"] == "cloze"
    assert isinstance(make_generator({"kind": "cloze", "seed": 3, "cloze": {"image_question_prob": 0}}), ClozeGenerator)
    with pytest.raises(ValidationError):
        GeneratorConfig(kind="gpt")
    with pytest.raises(ValidationError):
        GeneratorConfig(cloze={"unknown_field": 1})


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_local_generator_on_the_tiny_model_builds_valid_inputs_and_survives_meaningless_output(chunks):
    gen = make_generator({"kind": "local", "local": {"max_new_tokens": 8}})
    chunk = chunks[3]  # two images
    from nyx.synth.generators.chat import ChatRequest

    request = gen._request(
        "qa", "qa_generation", {"max_pairs": 5, "max_answer_words": 5, "n_images": 2}, record_parts(chunk)
    )
    assert isinstance(request, ChatRequest) and len(request.images) == 2
    inputs = gen.build_inputs(request)
    tok = gen._processor.tokenizer
    ids = inputs["input_ids"][0].tolist()
    n_pad = ids.count(tok.convert_tokens_to_ids("<|image_pad|>"))
    merged = int((inputs["image_grid_thw"].prod(-1) // 4).sum())
    assert inputs["image_grid_thw"].shape[0] == 2 and n_pad == merged > 0
    assert ids.count(tok.convert_tokens_to_ids("<|vision_start|>")) == 2
    pairs = gen.qa_for_chunk(chunk)  # random weights: the reply is no JSON
    assert pairs == []
    stats = gen.stats.as_dict()
    assert stats["calls"] == 2 and stats["unparseable.qa"] == 1 and stats["unparseable.multi_image_qa"] == 1
    assert isinstance(gen.answer("What colour is the kite?", [chunk], choices=["red", "blue"]), str)
