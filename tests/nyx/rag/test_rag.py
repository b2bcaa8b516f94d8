"""The RAG pipeline with a fake retriever and a fake reader: retrieval, oracle and no-retrieval runs."""

import pytest

from nyx.data.records import Record
from nyx.feedback import Reader
from nyx.rag import NO_RETRIEVAL, ORACLE, RAGConfig, gold_contexts, run_rag

CHOICES = ["Rome", "Paris", "Oslo", "Bern"]
CORPUS = [
    Record.from_text("d1", "Paris is the capital."),
    Record.from_text("d2", "Oslo is cold."),
    Record.from_text("d3", "Bern has bears."),
    Record.from_text("d4", "Nothing useful."),
]
QUERIES = [
    Record.from_text("q1", "Capital?", choices=CHOICES, correct_index=1, answer="Paris", modality="text"),
    Record.from_text("q2", "Cold city?", choices=CHOICES, correct_index=2, answer="Oslo", modality="image1"),
    Record.from_text("q3", "Bears?", choices=CHOICES, correct_index=3, answer="Bern", modality="image1"),
]
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2, "d4": 1}}


class FakeRetriever:
    """d1 first for q1 (right), d4 first for q2 (wrong, right one at rank 2), nothing for q3."""

    num_docs = 4

    def __init__(self):
        self.searched = []

    def index(self, corpus, rejects=None):
        raise AssertionError("already indexed")

    def search(self, queries, k=10, dim=None):
        self.searched.append((tuple(q.id for q in queries), k, dim))
        return {"q1": {"d1": 2.0, "d4": 1.0}, "q2": {"d2": 0.5, "d4": 0.9}, "q3": {}}


class CityReader(Reader):
    """Names the first option mentioned in the window; "Rome" (wrong for all) when none is."""

    reader_id = "city"

    def __init__(self):
        self.windows = []

    def answer(self, query, window):
        self.windows.append((query.id, [d.id for d in window]))
        for d in window:
            for c in query.extra["choices"]:
                if c in d.text:
                    return c
        return "Rome"


def test_retrieval_oracle_and_no_retrieval_runs_bound_the_accuracy():
    retriever, reader = FakeRetriever(), CityReader()
    res = run_rag(QUERIES, CORPUS, reader, retriever=retriever, qrels=QRELS, cfg=RAGConfig(dim=64))
    assert set(res) == {"retrieval", ORACLE, NO_RETRIEVAL}
    assert retriever.searched == [(("q1", "q2", "q3"), 10, 64)]
    r = res["retrieval"]
    assert r.contexts == {"q1": ["d1"], "q2": ["d4"], "q3": []}
    assert r.predictions == {"q1": "Paris", "q2": "Rome", "q3": "Rome"}
    assert r.metrics["accuracy"] == pytest.approx(1 / 3) and r.n_without_context == 1
    assert r.metrics["by_modality"]["text"]["accuracy"] == 1.0
    assert r.metrics["by_modality"]["image1"]["accuracy"] == 0.0
    assert res[ORACLE].contexts == {"q1": ["d1"], "q2": ["d2"], "q3": ["d3"]}
    assert res[ORACLE].metrics["accuracy"] == 1.0
    assert res[NO_RETRIEVAL].metrics["accuracy"] == 0.0 and res[NO_RETRIEVAL].n_without_context == 3
    assert res["retrieval"].row() == {
        "run": "retrieval",
        "accuracy": pytest.approx(1 / 3),
        "em": pytest.approx(1 / 3),
        "f1": pytest.approx(1 / 3),
        "n": 3,
    }


def test_top_n_reads_several_documents_and_a_given_run_is_not_searched_again():
    reader = CityReader()
    run = {"q1": {"d4": 3.0, "d1": 2.0}, "q2": {"d4": 1.0, "d2": 0.5}, "q3": {"d3": 1.0}}
    res = run_rag(
        QUERIES,
        {d.id: d for d in CORPUS},
        reader,
        run=run,
        qrels=QRELS,
        cfg=RAGConfig(top_n=2, oracle=False, no_retrieval=False),
        name="bm25",
    )
    assert list(res) == ["bm25"]
    assert res["bm25"].contexts == {"q1": ["d4", "d1"], "q2": ["d4", "d2"], "q3": ["d3"]}
    assert res["bm25"].metrics["accuracy"] == 1.0


def test_oracle_uses_the_highest_graded_gold_documents_and_needs_qrels():
    assert gold_contexts(QRELS, QUERIES, 2)["q3"] == ["d3", "d4"]
    assert gold_contexts({"q1": {"d2": 0}}, QUERIES[:1], 1) == {"q1": []}  # grade 0 is not relevant
    with pytest.raises(ValueError, match="qrels"):
        run_rag(QUERIES, CORPUS, CityReader())


def test_answers_are_cached_on_disk(tmp_path):
    first = CityReader()
    run_rag(QUERIES, CORPUS, first, qrels=QRELS, cache_dir=tmp_path)
    second = CityReader()
    res = run_rag(QUERIES, CORPUS, second, qrels=QRELS, cache_dir=tmp_path)
    assert first.windows and second.windows == []
    assert res[ORACLE].metrics["accuracy"] == 1.0
