"""Retrieval metrics equal values computed by hand (trec_eval semantics) on a small fixed example."""

from __future__ import annotations

from math import log2

import pytest

from nyx.data.records import Record
from nyx.eval.retrieval import evaluate_run, matryoshka_sweep, metric_names, truncate_run
from nyx.retrieval import BM25Retriever

# q1: relevant d1, d3 at ranks 2 and 4.
# q2: graded: d4 (gain 1) at rank 1, d2 (gain 2) at rank 2.
# q3: judged but missing from the run -> 0 everywhere.
# q4: only a non-relevant judgement -> cannot be scored, left out of the means.
# q5: the relevant document at rank 11: outside MRR@10 and nDCG@10, inside Recall@20.
QRELS = {
    "q1": {"d1": 1, "d3": 1},
    "q2": {"d2": 2, "d4": 1},
    "q3": {"d5": 1},
    "q4": {"d1": 0},
    "q5": {"d11": 1},
}
RUN = {
    "q1": {"d2": 0.9, "d1": 0.8, "d4": 0.7, "d3": 0.6},
    "q2": {"d4": 0.5, "d2": 0.4},
    "q4": {"d1": 1.0},
    "q5": {f"x{i:02d}": 1.0 - i / 100 for i in range(10)} | {"d11": 0.5},
    "not-judged": {"d1": 1.0},
}

NDCG_Q1 = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3))
NDCG_Q2 = (1 / log2(2) + 2 / log2(3)) / (2 / log2(2) + 1 / log2(3))
EXPECTED_PER_QUERY = {
    "q1": {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0, "recall@20": 1.0, "ndcg@10": NDCG_Q1, "mrr@10": 0.5},
    "q2": {"recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0, "recall@20": 1.0, "ndcg@10": NDCG_Q2, "mrr@10": 1.0},
    "q3": dict.fromkeys(metric_names(), 0.0),
    "q5": {"recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "recall@20": 1.0, "ndcg@10": 0.0, "mrr@10": 0.0},
}


def test_per_query_metrics_equal_hand_computed_values():
    m = evaluate_run(RUN, QRELS)
    assert set(m.per_query) == set(EXPECTED_PER_QUERY)
    for qid, expected in EXPECTED_PER_QUERY.items():
        for name, value in expected.items():
            assert m.per_query[qid][name] == pytest.approx(value, abs=1e-9), (qid, name)


def test_means_are_over_judged_queries_with_missing_ones_counted_as_zero():
    m = evaluate_run(RUN, QRELS)
    assert (m.n_queries, m.n_missing, m.n_unjudged) == (4, 1, 1)
    assert m.aggregate["recall@1"] == pytest.approx(0.5 / 4)
    assert m.aggregate["recall@5"] == pytest.approx(2 / 4)
    assert m.aggregate["recall@10"] == pytest.approx(2 / 4)
    assert m.aggregate["recall@20"] == pytest.approx(3 / 4)
    assert m.aggregate["ndcg@10"] == pytest.approx((NDCG_Q1 + NDCG_Q2) / 4)
    assert m.aggregate["mrr@10"] == pytest.approx(1.5 / 4)


def test_mrr_is_cut_at_ten_while_plain_reciprocal_rank_is_not():
    m = evaluate_run({"q5": RUN["q5"]}, {"q5": QRELS["q5"]})
    assert m.per_query["q5"]["mrr@10"] == 0.0
    assert evaluate_run({"q5": RUN["q5"]}, {"q5": QRELS["q5"]}, mrr_k=11).per_query["q5"]["mrr@11"] == pytest.approx(
        1 / 11
    )


def test_truncation_breaks_score_ties_by_descending_document_id_like_trec_eval():
    run = {"q": {"a": 0.5, "c": 0.5, "b": 0.9, "z": 0.1}}
    assert list(truncate_run(run, 3)["q"]) == ["b", "c", "a"]
    # and pytrec-eval agrees: with the tie, "c" ranks before "a", so a relevant "a" sits at rank 3
    m = evaluate_run(run, {"q": {"a": 1}})
    assert m.per_query["q"]["mrr@10"] == pytest.approx(1 / 3)


def test_empty_run_scores_zero_everywhere():
    m = evaluate_run({}, {"q1": {"d1": 1}})
    assert m.aggregate == dict.fromkeys(metric_names(), 0.0)
    assert m.n_missing == 1


def test_matryoshka_sweep_rows_hold_every_metric_and_latency():
    docs = [Record.from_text("d1", "red apples grow on trees"), Record.from_text("d2", "blue whales swim")]
    bm25 = BM25Retriever()
    bm25.index(docs)
    rows = matryoshka_sweep(bm25, [Record.from_text("q1", "whales")], {"q1": {"d2": 1}})
    assert len(rows) == 1 and rows[0]["dim"] is None
    assert rows[0]["recall@1"] == 1.0 and rows[0]["mrr@10"] == 1.0
    assert set(metric_names()) <= set(rows[0]) and rows[0]["search_ms_per_query"] >= 0


def test_a_score_zero_judgement_at_rank_one_is_not_a_hit_on_any_metric():
    qrels = {"q": {"zero": 0, "rel": 1}, "only-zero": {"zero": 0}}
    run = {"q": {"zero": 0.9, "rel": 0.8}, "only-zero": {"zero": 0.9}}
    m = evaluate_run(run, qrels)
    assert set(m.per_query) == {"q"} and (m.n_queries, m.n_unjudged) == (1, 1)
    expected = {
        "recall@1": 0.0,
        "recall@5": 1.0,
        "recall@10": 1.0,
        "recall@20": 1.0,
        "ndcg@10": 1 / log2(3),
        "mrr@10": 0.5,
    }
    for name, value in expected.items():
        assert m.per_query["q"][name] == pytest.approx(value, abs=1e-9), name
    # The same run without the score-0 judgement scores the same: a 0 judgement is no judgement at all.
    assert evaluate_run(run, {"q": {"rel": 1}}).per_query == m.per_query
