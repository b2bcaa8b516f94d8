"""Chunking: token budget (images count as one token), sentence packing, stable ids, image checks."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from nyx.data.records import Part, Record
from nyx.data.rejects import RejectLog
from nyx.synth.chunking import (
    ChunkingConfig,
    HFTokenCounter,
    WhitespaceTokenCounter,
    chunk_documents,
    load_token_counter,
)
from nyx.synth.text import split_sentences

WS = WhitespaceTokenCounter()


def _png(path, color=(200, 30, 30), size=(40, 30)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def _sentences(prefix: str, n: int, words: int = 5) -> str:
    """``n`` sentences of exactly ``words`` words each, e.g. 'A0 w1 w2 w3 end.'"""
    return " ".join(
        f"{prefix.upper()}{i} " + " ".join(f"w{j}" for j in range(1, words - 1)) + " end." for i in range(n)
    )


def _cfg(**kw):
    kw.setdefault("tokenizer", "whitespace")
    return ChunkingConfig(**kw)


def _flatten(chunks):
    """The sequence of words and image refs across chunks, in chunk order."""
    out = []
    for c in chunks:
        for p in c.content:
            out.extend(p.text.split() if p.type == "text" else [("IMG", p.image)])
    return out


@pytest.fixture()
def images(tmp_path):
    return [_png(tmp_path / f"img{i}.png", color=(i * 30 % 255, 100, 50)) for i in range(8)]


def test_sentence_splitter_keeps_abbreviations_and_breaks_at_sentence_ends():
    text = "Dr. Smith met Mr. J. Doe in the U.S. capital. It rained! Was it 3.5 cm? Yes."
    got = [text[s:e] for s, e in split_sentences(text)]
    assert got == ["Dr. Smith met Mr. J. Doe in the U.S. capital.", "It rained!", "Was it 3.5 cm?", "Yes."]


def test_every_chunk_respects_the_budget_with_images_counted_as_one_token(images):
    doc = Record(
        "d1",
        [
            Part.of_text(_sentences("a", 6)),
            Part.of_image(images[0]),
            Part.of_image(images[1]),
            Part.of_text(_sentences("b", 5)),
            Part.of_image(images[2]),
            Part.of_text(_sentences("c", 3)),
        ],
    )
    chunks, stats = chunk_documents([doc], _cfg(max_tokens=12), WS)
    assert len(chunks) > 3
    for c in chunks:
        recount = sum(len(p.text.split()) for p in c.content if p.type == "text") + c.n_images
        assert c.extra["n_tokens"] == recount <= 12
        assert c.extra["n_images"] == c.n_images
    assert stats["tokens_max"] <= 12 and stats["chunks"] == len(chunks)
    # Nothing lost, nothing reordered.
    assert _flatten(chunks) == _flatten([doc])


def test_an_image_costs_exactly_one_token(images):
    doc = Record("d1", [Part.of_text(_sentences("a", 2)), Part.of_image(images[0]), Part.of_image(images[1])])
    one, _ = chunk_documents([doc], _cfg(max_tokens=12), WS)  # 10 words + 2 images = 12
    assert [c.extra["n_tokens"] for c in one] == [12]
    two, _ = chunk_documents([doc], _cfg(max_tokens=11), WS)
    assert [c.extra["n_tokens"] for c in two] == [11, 1]
    assert two[1].images == [images[1]]


def test_text_is_cut_at_sentence_ends_when_sentences_fit():
    doc = Record.from_text("d1", _sentences("s", 7))
    chunks, stats = chunk_documents([doc], _cfg(max_tokens=12), WS)
    assert [c.extra["n_tokens"] for c in chunks] == [10, 10, 10, 5]  # a third 5-word sentence would overflow
    assert all(c.text.endswith("end.") for c in chunks)
    assert stats["sentences_cut_by_tokens"] == 0


def test_a_single_over_long_sentence_is_cut_by_tokens():
    long_sentence = " ".join(f"x{i}" for i in range(30)) + "."
    doc = Record.from_text("d1", "Short one here now. " + long_sentence + " Tail sentence is here.")
    chunks, stats = chunk_documents([doc], _cfg(max_tokens=8), WS)
    assert stats["sentences_cut_by_tokens"] == 1
    assert all(c.extra["n_tokens"] <= 8 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == doc.text.split()


def test_image_stays_where_it_stands(images):
    doc = Record("d1", [Part.of_text(_sentences("a", 3)), Part.of_image(images[0]), Part.of_text(_sentences("b", 3))])
    chunks, _ = chunk_documents([doc], _cfg(max_tokens=12), WS)
    holder = [c for c in chunks if c.n_images]
    assert len(holder) == 1
    seq = _flatten([holder[0]])
    i = seq.index(("IMG", images[0]))
    # It follows the last sentence of the first text and precedes the first sentence of the second.
    assert seq[:i] == [] or seq[i - 1] == "end."
    assert seq[i + 1 :] == [] or seq[i + 1] == "B0"
    assert _flatten(chunks) == _flatten([doc])


def test_ids_are_stable_across_runs_and_drop_settings(images):
    docs = [
        Record.from_text("docA", _sentences("a", 9)),
        Record("docB", [Part.of_text(_sentences("b", 4)), Part.of_image(images[0]), Part.of_text("The end.")]),
    ]
    first, _ = chunk_documents(docs, _cfg(max_tokens=12), WS)
    second, _ = chunk_documents(docs, _cfg(max_tokens=12), WS)
    assert [c.to_json() for c in first] == [c.to_json() for c in second]
    assert all(re.fullmatch(r"doc[AB]#c\d+", c.id) for c in first)
    assert [c.extra["ordinal"] for c in first if c.extra["doc_id"] == "docA"] == list(range(5))
    dropped, stats = chunk_documents(docs, _cfg(max_tokens=12, drop_last_partial=True), WS)
    assert stats["dropped"] == {"last_partial": 2}
    by_id = {c.id: c.to_json() for c in first}
    assert dropped and all(by_id[c.id] == c.to_json() for c in dropped)  # survivors keep ids and content
    assert "docA#c4" not in {c.id for c in dropped}


def test_chunks_with_more_than_max_images_are_dropped(images):
    doc = Record(
        "d1",
        [
            Part.of_text("A picture gallery of the harbour follows here."),
            *[Part.of_image(i) for i in images[:7]],
            Part.of_text(_sentences("z", 4)),
        ],
    )
    chunks, stats = chunk_documents([doc], _cfg(max_tokens=20, max_images=5), WS)
    assert stats["dropped"] == {"too_many_images": 1}
    assert all(c.n_images <= 5 for c in chunks)
    assert not any(i in c.images for c in chunks for i in images[:7])
    kept, _ = chunk_documents([doc], _cfg(max_tokens=20, max_images=7), WS)
    assert sum(c.n_images for c in kept) == 7


def test_a_chunk_with_an_undecodable_image_is_rejected_with_its_reason(tmp_path, images):
    good = images[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(open(good, "rb").read()[:60])  # truncated PNG
    docs = [
        Record(
            "d1",
            [
                Part.of_text(_sentences("a", 2)),
                Part.of_image(str(bad)),
                Part.of_text(_sentences("b", 3)),
                Part.of_image(good),
            ],
        )
    ]
    rejects = RejectLog(stage="chunking")
    chunks, stats = chunk_documents(docs, _cfg(max_tokens=12), WS, rejects=rejects)
    assert stats["rejected"] == 1 and stats["dropped"] == {"image_failed": 1}
    item = rejects.items[0]
    assert item["record_id"] == "d1#c0"
    assert item["reason"].startswith("image failed verification: ") and "broken.png" in item["reason"]
    assert rejects.reasons() == {"image failed verification": 1}
    assert [c.id for c in chunks] == ["d1#c1", "d1#c2"] and chunks[-1].images == [good]


def test_hf_token_counter_of_the_backbone_tokenizer_gives_exact_budgets():
    counter = load_token_counter(None)  # the tiny profile's tokenizer (built offline on first use)
    assert isinstance(counter, HFTokenCounter)
    text = (
        "The Golden Gate Bridge was painted international orange in 1937. " * 3
        + "Supercalifragilisticexpialidocious " * 40
        + ". Done."
    )
    chunks, stats = chunk_documents([Record.from_text("d", text)], ChunkingConfig(max_tokens=20), counter)
    assert stats["sentences_cut_by_tokens"] >= 1
    for c in chunks:
        assert c.extra["n_tokens"] == counter.count(c.text) <= 20
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


# -- the budget edge: exactly max_tokens fits, one more does not ------------------------------------------------


def _words(prefix: str, n: int) -> str:
    """One sentence of exactly ``n`` whitespace tokens ending in a full stop."""
    return " ".join(f"{prefix}{i}" for i in range(n - 1)) + " end."


def _parts(chunk):
    return [(p.type, p.text if p.type == "text" else p.image) for p in chunk.content]


def test_a_text_of_exactly_max_tokens_is_one_chunk_and_one_token_more_is_two():
    one_sentence = _words("A", 12)
    two_sentences = _words("A", 6) + " " + _words("B", 6)
    assert len(split_sentences(two_sentences)) == 2
    for text in (one_sentence, two_sentences):
        chunks, stats = chunk_documents([Record.from_text("d", text)], _cfg(max_tokens=12), WS)
        assert [c.extra["n_tokens"] for c in chunks] == [12], text
        assert _parts(chunks[0]) == [("text", text)]  # one text part: the sentences were merged, not cut
        assert stats["sentences_cut_by_tokens"] == 0 and stats["tokens_max"] == 12
    # One token over: a single sentence is cut by tokens at the budget, two sentences split between them.
    chunks, stats = chunk_documents([Record.from_text("d", _words("A", 13))], _cfg(max_tokens=12), WS)
    assert [c.extra["n_tokens"] for c in chunks] == [12, 1] and stats["sentences_cut_by_tokens"] == 1
    over = _words("A", 6) + " " + _words("B", 7)
    chunks, stats = chunk_documents([Record.from_text("d", over)], _cfg(max_tokens=12), WS)
    assert [c.text for c in chunks] == [_words("A", 6), _words("B", 7)] and stats["sentences_cut_by_tokens"] == 0


def test_an_over_long_sentence_is_cut_into_pieces_of_exactly_max_tokens():
    chunks, stats = chunk_documents([Record.from_text("d", _words("X", 30))], _cfg(max_tokens=8), WS)
    assert [c.extra["n_tokens"] for c in chunks] == [8, 8, 8, 6]
    assert stats["sentences_cut_by_tokens"] == 1
    assert " ".join(c.text for c in chunks) == _words("X", 30)


def test_text_and_image_of_exactly_max_tokens_are_one_chunk(images):
    t, im = Part.of_text, Part.of_image
    at_budget = [
        [t(_words("A", 11)), im(images[0])],  # text then image
        [im(images[0]), t(_words("A", 11))],  # image then text
        [t(_words("A", 6)), im(images[0]), t(_words("B", 5))],  # image between two texts
        [im(images[0]), t(_words("A", 5) + " " + _words("B", 5)), im(images[1])],  # merged text between images
    ]
    for content in at_budget:
        doc = Record("d", content)
        chunks, _ = chunk_documents([doc], _cfg(max_tokens=12), WS)
        assert [c.extra["n_tokens"] for c in chunks] == [12], _parts(doc)
        assert _parts(chunks[0]) == _parts(doc)
    # One token over: the image (or the text) that does not fit opens the next chunk.
    chunks, _ = chunk_documents([Record("d", [t(_words("A", 12)), im(images[0])])], _cfg(max_tokens=12), WS)
    assert [c.extra["n_tokens"] for c in chunks] == [12, 1] and chunks[1].images == [images[0]]
    chunks, _ = chunk_documents([Record("d", [im(images[0]), t(_words("A", 12))])], _cfg(max_tokens=12), WS)
    assert [c.extra["n_tokens"] for c in chunks] == [1, 12] and chunks[0].images == [images[0]]


def test_backbone_tokenizer_text_of_exactly_max_tokens_is_one_chunk(images):
    counter = load_token_counter(None)
    text = "The Golden Gate Bridge was painted international orange in 1937. It opened to traffic in May."
    assert len(split_sentences(text)) == 2  # the chunker counts the merged sentences as stored, not the sum
    n = counter.count(text)
    assert n > 10
    chunks, stats = chunk_documents([Record.from_text("d", text)], ChunkingConfig(max_tokens=n), counter)
    assert len(chunks) == 1 and chunks[0].extra["n_tokens"] == n and _parts(chunks[0]) == [("text", text)]
    assert stats["sentences_cut_by_tokens"] == 0
    # With an image the same text needs one token more.
    doc = Record("d", [Part.of_text(text), Part.of_image(images[0])])
    chunks, _ = chunk_documents([doc], ChunkingConfig(max_tokens=n + 1), counter)
    assert [c.extra["n_tokens"] for c in chunks] == [n + 1] and _parts(chunks[0]) == _parts(doc)
    chunks, _ = chunk_documents([doc], ChunkingConfig(max_tokens=n), counter)
    assert [c.extra["n_tokens"] for c in chunks] == [n, 1]
    # One token under the text's count: it no longer fits in one chunk.
    chunks, _ = chunk_documents([Record.from_text("d", text)], ChunkingConfig(max_tokens=n - 1), counter)
    assert len(chunks) == 2 and all(c.extra["n_tokens"] <= n - 1 for c in chunks)
