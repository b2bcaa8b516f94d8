"""Blocking asset checks called directly on hand-made stores (tmp_path): each passes on good data and fails, naming
the record and the reason, on each kind of bad data it exists to catch (``hard_negatives_valid``,
``corpus_chunks_valid``, ``feedback_preferences_valid``)."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from PIL import Image

from assets.corpus_chunks import corpus_chunks_valid
from assets.feedback import feedback_preferences_valid
from assets.hard_negatives import MIN_SHARE_WITH_NEGATIVES, hard_negatives_valid
from nyx.data.beir import write_beir
from nyx.data.records import Part, Record, iter_jsonl, write_jsonl
from orchestration.resources import NyxSettings


def _settings(tmp_path, **overrides) -> NyxSettings:
    return NyxSettings(profile="sample", data_dir=str(tmp_path / "data"), overrides=overrides)


def _failures(result: dg.AssetCheckResult) -> dict[str, list[str]]:
    """``{column (or expectation): example values}`` of the failed expectations of a gx_check result."""
    failed = result.metadata["failed"].value
    if not isinstance(failed, list):
        return {}
    return {f["column"] or f["expectation"]: f["examples"] for f in failed}


def _assert_fails_on(result: dg.AssetCheckResult, column: str, *names: str) -> None:
    fails = _failures(result)
    assert result.passed is False, fails
    assert column in fails, fails
    for name in names:  # the examples name the bad record
        assert any(name in e for e in fails[column]), (name, fails[column])


# -- a tiny NyxQA train split ----------------------------------------------------------------------------------

N_CHUNKS = 10
POSITIVES = {"q0": "c0", "q1": "c1", "q2": "c2", "q3": "c3"}
EXTRA_RELEVANT = {"q0": "c9"}  # a second relevant document in qrels (not the positive)


def _write_train_split(data, name="train"):
    corpus = [Record.from_text(f"c{i}", f"chunk {i} about town {i}", doc_id=f"d{i}") for i in range(N_CHUNKS)]
    queries = [
        Record.from_text(
            q,
            f"question {q}?",
            positive_id=p,
            split=name,
            answer=f"town {p[1:]}",
            choices=[f"town {p[1:]}", "town x", "town y", "town z"],
            correct_index=0,
        )
        for q, p in POSITIVES.items()
    ]
    qrels = {q: {p: 1} for q, p in POSITIVES.items()}
    for q, d in EXTRA_RELEVANT.items():
        qrels[q][d] = 1
    write_beir(data / "nyxqa" / name, corpus, queries, qrels)


# -- hard_negatives_valid ----------------------------------------------------------------------------------------


def _good_negatives() -> list[dict]:
    negs = {"q0": ["c4", "c5", "c6"], "q1": ["c5", "c7"], "q2": ["c4"], "q3": []}  # 3 of 4 questions: 75%
    return [{"query_id": q, "positive_id": POSITIVES[q], "negative_ids": n, "miner": "bm25"} for q, n in negs.items()]


def _run_negatives(tmp_path, recs) -> dg.AssetCheckResult:
    data = tmp_path / "data"
    _write_train_split(data)
    out = data / "hard_negatives" / "train.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return hard_negatives_valid(settings=_settings(tmp_path))


def test_hard_negatives_check_passes_on_good_records(tmp_path):
    res = _run_negatives(tmp_path, _good_negatives())
    assert res.passed, _failures(res)
    assert res.metadata["share_with_negatives"].value == pytest.approx(0.75)
    assert res.metadata["max_negatives"].value == 5  # the sample profile's miner.mining.n


def _edit(recs, qid, **changes):
    for r in recs:
        if r["query_id"] == qid:
            r.update(changes)
    return recs


HARD_NEGATIVE_CASES = {
    "negative not in the corpus": (
        lambda rs: _edit(rs, "q1", negative_ids=["c5", "ghost#c0"]),
        "negative_not_in_corpus",
        "q1",
    ),
    "negative is the positive": (lambda rs: _edit(rs, "q2", negative_ids=["c4", "c2"]), "negative_is_relevant", "q2"),
    "negative relevant in qrels": (lambda rs: _edit(rs, "q0", negative_ids=["c4", "c9"]), "negative_is_relevant", "q0"),
    "duplicate negative": (lambda rs: _edit(rs, "q1", negative_ids=["c5", "c5"]), "duplicate_negative", "q1"),
    "more than miner.mining.n": (
        lambda rs: _edit(rs, "q0", negative_ids=["c1", "c2", "c3", "c4", "c5", "c6"]),
        "too_many_negatives",
        "q0",
    ),
    "positive is not the question's": (lambda rs: _edit(rs, "q3", positive_id="c8"), "positive_mismatch", "q3"),
    "unknown question": (
        lambda rs: rs + [{"query_id": "q9", "positive_id": "c1", "negative_ids": ["c4"]}],
        "unknown_query",
        "q9",
    ),
    "two records for one question": (lambda rs: rs + [dict(rs[2])], "duplicate_record", "q2"),
    # no per-record fault: only a quarter of the questions got negatives (below MIN_SHARE_WITH_NEGATIVES)
    "too few questions with negatives": (
        lambda rs: _edit(_edit(rs, "q1", negative_ids=[]), "q2", negative_ids=[]),
        "has_negative",
    ),
    # questions the miner wrote nothing for count as questions without negatives
    "questions missing from the file": (lambda rs: rs[:1], "has_negative"),
}


@pytest.mark.parametrize("case", list(HARD_NEGATIVE_CASES))
def test_hard_negatives_check_fails_on_bad_records(tmp_path, case):
    mutate, column, *names = HARD_NEGATIVE_CASES[case]
    res = _run_negatives(tmp_path, mutate(_good_negatives()))
    _assert_fails_on(res, column, *names)
    assert set(_failures(res)) == {column}  # that fault, and nothing else, is reported
    if column == "has_negative":
        assert res.metadata["share_with_negatives"].value < MIN_SHARE_WITH_NEGATIVES


# -- corpus_chunks_valid ---------------------------------------------------------------------------------------

BUDGET = 24
WORDS = (
    "harbour fishing boats painted orange every spring while the mayor Anna Varholmsson opened a museum near "
    "the old station in 1950 with 1,237 residents"
).split()


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer folder (the tiny backbone's recipe), so counts are real subword counts:
    the count of a joined text is not the sum of its pieces' counts."""
    from nyx.model.tiny import train_tiny_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tiny_tokenizer(
        [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4, vocab_size=400
    ).save_pretrained(d)
    return d


def _documents(img_dir) -> list[Record]:
    img = img_dir / "a.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(img)
    docs = []
    for d in range(4):
        sents = [" ".join(WORDS[(d + k) % 7 : (d + k) % 7 + 5 + k % 4]).capitalize() + "." for k in range(9)]
        # short parts around the image, so chunks hold several text parts (each counted on its own)
        content = [
            Part.of_text(sents[0]),
            Part.of_image(str(img)),
            Part.of_text(sents[1]),
            Part.of_text(" ".join(sents[2:])),
        ]
        docs.append(Record(f"doc{d}", content))
    return docs


def _chunk_store(tmp_path, bpe_dir):
    from nyx.synth.chunking import ChunkingConfig, chunk_documents, load_token_counter

    cfg = ChunkingConfig(max_tokens=BUDGET, tokenizer=str(bpe_dir))
    chunks, stats = chunk_documents(_documents(tmp_path), cfg, load_token_counter(str(bpe_dir)))
    assert stats["chunks"] >= 8 and stats["tokens_max"] <= BUDGET
    assert any(sum(p.type == "text" for p in c.content) >= 2 and c.n_images for c in chunks)
    out = tmp_path / "data" / "chunks" / "shard-00000.jsonl"
    write_jsonl(chunks, out)
    return out


def _run_chunks(tmp_path, bpe_dir):
    settings = _settings(tmp_path, chunking={"max_tokens": BUDGET, "tokenizer": str(bpe_dir)})
    return corpus_chunks_valid(dg.build_asset_check_context(), settings=settings)


def _rewrite(path, fn):
    records = [fn(r) for r in iter_jsonl(path)]
    write_jsonl(records, path)


def test_corpus_chunks_check_passes_on_what_the_chunker_wrote(tmp_path, bpe_dir):
    _chunk_store(tmp_path, bpe_dir)
    res = _run_chunks(tmp_path, bpe_dir)
    assert res.passed, _failures(res)
    assert res.metadata["recounted"].value == res.metadata["rows"].value >= 8
    assert res.metadata["max_tokens_recounted"].value <= BUDGET


def test_corpus_chunks_check_recounts_an_over_long_chunk_whose_stored_count_claims_it_fits(tmp_path, bpe_dir):
    path = _chunk_store(tmp_path, bpe_dir)
    victim = next(iter_jsonl(path)).id

    def grow(r):  # more text, the stored n_tokens left as it was (the old check trusted it and passed)
        if r.id == victim:
            r.content.append(Part.of_text(" ".join(WORDS)))
        return r

    _rewrite(path, grow)
    res = _run_chunks(tmp_path, bpe_dir)
    _assert_fails_on(res, "over_budget", victim)
    _assert_fails_on(res, "count_mismatch", victim)


def test_corpus_chunks_check_fails_when_the_stored_count_disagrees_within_budget(tmp_path, bpe_dir):
    path = _chunk_store(tmp_path, bpe_dir)
    victim = next(iter_jsonl(path)).id

    def understate(r):
        if r.id == victim:
            r.extra["n_tokens"] -= 1
        return r

    _rewrite(path, understate)
    res = _run_chunks(tmp_path, bpe_dir)
    _assert_fails_on(res, "count_mismatch", victim)
    assert "over_budget" not in _failures(res)


def test_corpus_chunks_check_counts_each_image_as_one_token(tmp_path, bpe_dir):
    """A chunk whose text alone fills the budget, plus one image, its stored count leaving the image out: over the
    budget by exactly the image."""
    from nyx.synth.chunking import load_token_counter

    counter = load_token_counter(str(bpe_dir))
    path = _chunk_store(tmp_path, bpe_dir)
    prefixes = (" ".join((WORDS[i:] + WORDS[:i]) * 2)[:n] for i in range(len(WORDS)) for n in range(1, 400))
    text = next(t for t in prefixes if not t.endswith(" ") and counter.count(t) == BUDGET)
    image = next(i for r in iter_jsonl(path) for i in r.images)
    chunks = list(iter_jsonl(path)) + [
        Record(
            "doc9#c0",
            [Part.of_text(text), Part.of_image(image)],
            extra={"doc_id": "doc9", "ordinal": 0, "n_tokens": BUDGET, "n_images": 1},
        )
    ]
    write_jsonl(chunks, path)
    res = _run_chunks(tmp_path, bpe_dir)
    _assert_fails_on(res, "over_budget", "doc9#c0")
    assert [e for e in _failures(res)["over_budget"]] == [
        f"doc9#c0: {BUDGET + 1} tokens (text + 1 per image) > max_tokens {BUDGET}"
    ]
    _assert_fails_on(res, "count_mismatch", "doc9#c0")


def test_corpus_chunks_check_fails_on_a_missing_image(tmp_path, bpe_dir):
    path = _chunk_store(tmp_path, bpe_dir)
    victim = next(iter_jsonl(path)).id

    def spoil(r):  # an image that does not exist, counted consistently (so only the image is wrong)
        if r.id == victim:
            r.content.insert(0, Part.of_image(str(tmp_path / "gone.png")))
            r.extra["n_tokens"] += 1
        return r

    _rewrite(path, spoil)
    res = _run_chunks(tmp_path, bpe_dir)
    _assert_fails_on(res, "images_unresolved", victim)
    assert set(_failures(res)) == {"images_unresolved"}


def test_corpus_chunks_check_fails_on_an_unreadable_line_and_names_it(tmp_path, bpe_dir):
    path = _chunk_store(tmp_path, bpe_dir)
    victim = next(iter_jsonl(path)).id
    lines = [
        json.dumps({**json.loads(x), "content": [{"type": "text", "text": "   "}]})
        if json.loads(x)["id"] == victim
        else x
        for x in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")
    res = _run_chunks(tmp_path, bpe_dir)
    _assert_fails_on(res, "unreadable", victim, "no text and no image")


def test_corpus_chunks_check_fails_on_duplicate_ids_across_shards(tmp_path, bpe_dir):
    path = _chunk_store(tmp_path, bpe_dir)
    (path.parent / "shard-00001.jsonl").write_text(path.read_text().splitlines()[0] + "\n")
    res = _run_chunks(tmp_path, bpe_dir)
    _assert_fails_on(res, "id", next(iter_jsonl(path)).id)


# -- feedback_preferences_valid ----------------------------------------------------------------------------------


def _good_triples():
    from nyx.feedback.triples import FeedbackTriple

    return [
        FeedbackTriple("q0", "c0", ["c4", "c5"], positive_rank=2, n_correct_windows=1, stage1_rank_of_gold=2),
        FeedbackTriple("q1", "c6", ["c3", "c7", "c8"], positive_rank=1, n_correct_windows=1, stage1_rank_of_gold=None),
        FeedbackTriple("q2", "c2", [], positive_rank=10, n_correct_windows=1, stage1_rank_of_gold=10),
    ]


def _write_feedback(data, triples, training=None):
    """``triples.jsonl`` and the full-record training file as the asset writes them (``training``: rows of
    ``(query id, positive id, negative ids)`` to write instead, for the cases where the two files disagree)."""
    from nyx.data.beir import load_beir
    from nyx.feedback.triples import write_triples

    split = load_beir(data / "nyxqa" / "train")
    base = data / "feedback"
    base.mkdir(parents=True, exist_ok=True)
    write_triples(triples, base / "triples.jsonl")
    rows = training if training is not None else [(t.query_id, t.positive_id, t.negative_ids) for t in triples]
    with open(base / "train_triples.jsonl", "w") as f:
        for q, p, negs in rows:
            f.write(
                json.dumps(
                    {
                        "query": split.queries[q].to_json(base),
                        "positive": split.corpus[p].to_json(base),
                        "negatives": [split.corpus[n].to_json(base) for n in negs],
                    }
                )
                + "\n"
            )


def _run_feedback(tmp_path, triples, training=None):
    data = tmp_path / "data"
    _write_train_split(data)
    _write_feedback(data, triples, training)
    return feedback_preferences_valid(settings=_settings(tmp_path))


def test_feedback_check_passes_on_consistent_files(tmp_path):
    res = _run_feedback(tmp_path, _good_triples())
    assert res.passed, _failures(res)
    assert res.metadata["top_k"].value == 10 and res.metadata["split"].value == "train"


def _triple_case(i, **changes):
    def make():
        ts = _good_triples()
        for k, v in changes.items():
            setattr(ts[i], k, v)
        return ts, None

    return make


def _training_case(edit):
    def make():
        ts = _good_triples()
        return ts, edit([(t.query_id, t.positive_id, list(t.negative_ids)) for t in ts])

    return make


FEEDBACK_CASES = {
    "query not in the feedback split": (_triple_case(1, query_id="q7"), "unknown_query", "q7"),
    "positive not in the corpus": (_triple_case(0, positive_id="ghost"), "unknown_document", "q0"),
    "negative not in the corpus": (_triple_case(1, negative_ids=["c3", "ghost"]), "unknown_document", "q1"),
    "negative is gold in qrels": (_triple_case(0, negative_ids=["c4", "c9"]), "gold_negative", "q0"),
    "negative is the question's gold though not the positive": (
        _triple_case(1, negative_ids=["c1"]),
        "gold_negative",
        "q1",
    ),
    "rank beyond top_k": (_triple_case(2, positive_rank=11), "rank_out_of_range", "q2"),
    "rank below 1": (_triple_case(2, positive_rank=0), "rank_out_of_range", "q2"),
    "too many negatives": (_triple_case(1, negative_ids=["c3", "c4", "c7", "c8"]), "too_many_negatives", "q1"),
    "one query twice": (_triple_case(2, query_id="q0", positive_id="c0"), "query_id"),
    # the training file (what Stage 2 reads) differs from triples.jsonl, which alone looks fine
    "positive among negatives in the training file": (
        _training_case(lambda rows: [rows[0], ("q1", "c6", ["c3", "c6"]), rows[2]]),
        "positive_is_negative",
        "q1",
    ),
    "training file in another order": (
        _training_case(lambda rows: [rows[1], rows[0], rows[2]]),
        "files_disagree",
        "q0",
        "q1",
    ),
    "training file one line short": (_training_case(lambda rows: rows[:2]), "files_disagree", "q2"),
    "training file one line long": (_training_case(lambda rows: rows + [("q3", "c3", [])]), "files_disagree", "q3"),
    "training file with other negatives": (
        _training_case(lambda rows: [rows[0], ("q1", "c6", ["c3"]), rows[2]]),
        "files_disagree",
        "q1",
    ),
}


@pytest.mark.parametrize("case", list(FEEDBACK_CASES))
def test_feedback_check_fails_on_bad_triples(tmp_path, case):
    make, column, *names = FEEDBACK_CASES[case]
    triples, training = make()
    if training is None:  # the training file is made of records, so of known ids: write the good triples'
        training = [(t.query_id, t.positive_id, t.negative_ids) for t in _good_triples()]
    res = _run_feedback(tmp_path, triples, training)
    _assert_fails_on(res, column, *names)
