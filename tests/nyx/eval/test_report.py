"""The evaluation report: rendering from small fake tables, and evaluate_retrievers end to end on a toy set."""

import json

import pandas as pd
import pytest

from nyx.data.records import Record
from nyx.eval.report import EvalReport, evaluate_retrievers, load_report, write_report
from nyx.feedback import Reader
from nyx.retrieval import BM25Retriever
from nyx.retrieval.base import Retriever

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_report() -> EvalReport:
    retrieval = []
    for name, base in (("nyx-stage1", 0.6), ("nyx-stage2", 0.7)):
        for dim, drop in ((2048, 0.0), (1024, 0.01), (512, 0.03), (256, 0.07)):
            retrieval.append(
                {
                    "retriever": name,
                    "dim": dim,
                    "recall@1": base - drop,
                    "recall@5": base + 0.1,
                    "recall@10": base + 0.15 - drop,
                    "recall@20": base + 0.2,
                    "ndcg@10": base + 0.05 - drop,
                    "mrr@10": base - drop,
                    "latency_ms_per_query": 3.0,
                    "n_queries": 600,
                }
            )
    retrieval.append(
        {
            "retriever": "bm25",
            "dim": None,
            "recall@1": 0.4,
            "recall@5": 0.5,
            "recall@10": 0.55,
            "recall@20": 0.6,
            "ndcg@10": 0.45,
            "mrr@10": 0.42,
            "latency_ms_per_query": 0.5,
            "n_queries": 600,
        }
    )
    rag = [
        {"run": "nyx-stage1", "accuracy": 0.62, "em": 0.6, "f1": 0.65, "n": 600},
        {"run": "nyx-stage2", "accuracy": 0.66, "em": 0.64, "f1": 0.7, "n": 600},
        {"run": "bm25", "accuracy": 0.5, "em": 0.5, "f1": 0.55, "n": 600},
        {"run": "oracle", "accuracy": 0.7, "em": 0.7, "f1": 0.75, "n": 600},
        {"run": "no_retrieval", "accuracy": 0.26, "em": 0.25, "f1": 0.3, "n": 600},
    ]
    by_mod = [
        {
            "retriever": "nyx-stage2",
            "modality": m,
            "n": 200,
            "recall@1": 0.7,
            "recall@10": 0.9,
            "ndcg@10": 0.8,
            "mrr@10": 0.75,
            "accuracy": a,
        }
        for m, a in (("text", 0.7), ("image1", 0.65), ("image2+", 0.6))
    ]
    return EvalReport(
        pd.DataFrame(retrieval),
        pd.DataFrame(rag),
        pd.DataFrame(by_mod),
        notes=["Reader: offline stand-in for a VLM reader."],
        meta={"split": "test"},
    )


def test_full_dim_takes_each_retrievers_largest_dimension_and_sparse_rows():
    full = fake_report().full_dim()
    assert list(full["retriever"]) == ["nyx-stage1", "nyx-stage2", "bm25"]
    assert list(full["dim"].iloc[:2]) == [2048, 2048] and pd.isna(full["dim"].iloc[2])
    summary = fake_report().summary()
    assert summary["nyx-stage2"]["ndcg@10"] == pytest.approx(0.75) and summary["nyx-stage2"]["accuracy"] == 0.66
    assert summary["oracle"] == {"accuracy": 0.7, "f1": 0.75} and summary["bm25"]["dim"] is None


def test_write_report_renders_markdown_json_and_two_pngs(tmp_path):
    report = fake_report()
    paths = write_report(report, tmp_path / "report")
    assert set(paths) == {"markdown", "json", "matryoshka_plot", "comparison_plot"}
    for key in ("matryoshka_plot", "comparison_plot"):
        data = paths[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    md = paths["markdown"].read_text()
    for needle in (
        "## Matryoshka sweep",
        "## RAG answers",
        "## By modality group",
        "![metric vs dimension](matryoshka.png)",
        "](retrievers.png)",
        "| nyx-stage2 ",
        "| image2+ ",
        "offline stand-in",
    ):
        assert needle in md, needle
    assert "<NA>" not in md and "search_ms_per_query" not in md  # all-missing columns are left out
    assert md.count("| nyx-stage1 ") == 6  # full-dimension row, 4 sweep rows, RAG row
    obj = json.loads(paths["json"].read_text())
    assert obj["rag"][3] == {"run": "oracle", "accuracy": 0.7, "em": 0.7, "f1": 0.75, "n": 600}
    assert obj["retrieval"][-1]["dim"] is None
    again = load_report(paths["json"])
    assert again.to_json() == report.to_json()


def test_empty_report_still_renders(tmp_path):
    paths = write_report(EvalReport(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()), tmp_path)
    assert paths["matryoshka_plot"].read_bytes().startswith(PNG_MAGIC)
    assert "_(no rows)_" in paths["markdown"].read_text()


# -- evaluate_retrievers on a toy set ------------------------------------------------------------------------

CORPUS = [
    Record.from_text("d1", "Paris is the capital of France."),
    Record.from_text("d2", "Oslo is a cold city in Norway."),
    Record.from_text("d3", "Bern is the Swiss capital; it has bears."),
    Record.from_text("d4", "Rome has ancient ruins."),
]
CHOICES = ["Rome", "Paris", "Oslo", "Bern"]
QUERIES = [
    Record.from_text("q1", "What is the capital of France?", choices=CHOICES, correct_index=1, modality="text"),
    Record.from_text("q2", "Which city in Norway is cold?", choices=CHOICES, correct_index=2, modality="image1"),
    Record.from_text("q3", "Which Swiss city has bears?", choices=CHOICES, correct_index=3, modality="image2+"),
]
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}


class ShrinkingRetriever(Retriever):
    """A fake dense retriever: right at dim 8, every query gets d4 first at dim 2."""

    name = "fake-shrinking"

    def __init__(self):
        self._n = 0

    @property
    def dims(self):
        return [8, 2]

    @property
    def num_docs(self):
        return self._n

    def index(self, corpus, *, rejects=None):
        self._n = len(list(corpus))
        return self._n

    def search(self, queries, k=10, dim=None):
        gold = {"q1": "d1", "q2": "d2", "q3": "d3"}
        if dim == 2:
            return {q.id: {"d4": 1.0, gold[q.id]: 0.5} for q in queries}
        return {q.id: {gold[q.id]: 1.0, "d4": 0.5} for q in queries}

    def save(self, path):
        raise NotImplementedError

    @classmethod
    def load(cls, path):
        raise NotImplementedError


class CityReader(Reader):
    reader_id = "city"

    def answer(self, query, window):
        for d in window:
            for c in query.extra["choices"]:
                if c in d.text:
                    return c
        return "Rome"

    def describe(self):
        return {**super().describe(), "note": "keyword test reader"}


def test_evaluate_retrievers_sweeps_dimensions_reads_answers_and_breaks_down_by_modality(tmp_path):
    report = evaluate_retrievers(
        {"bm25": BM25Retriever(), "fake": ShrinkingRetriever()},
        QUERIES,
        QRELS,
        CORPUS,
        dims_by_name={"fake": [8, 2]},
        reader=CityReader(),
        top_n=1,
    )
    r = report.retrieval.set_index(["retriever", report.retrieval["dim"].astype("Float64").fillna(-1)])
    assert r.loc[("fake", 8.0), "recall@1"] == 1.0 and r.loc[("fake", 2.0), "recall@1"] == 0.0
    assert r.loc[("fake", 2.0), "mrr@10"] == pytest.approx(0.5)
    assert r.loc[("bm25", -1.0), "recall@1"] == 1.0
    assert (report.retrieval["latency_ms_per_query"] >= 0).all()
    rag = report.rag.set_index("run")["accuracy"].to_dict()
    # fake reads at its largest dim (8: right document first); no retrieval reads nothing and answers Rome
    assert rag == {"bm25": 1.0, "fake": 1.0, "oracle": 1.0, "no_retrieval": 0.0}
    mod = report.by_modality
    assert set(mod["modality"]) == {"text", "image1", "image2+"}
    assert len(mod[mod["retriever"] == "fake"]) == 3 and (mod[mod["retriever"] == "fake"]["ndcg@10"] == 1.0).all()
    assert any("keyword test reader" in n for n in report.notes)
    paths = write_report(report, tmp_path)
    assert "| fake " in paths["markdown"].read_text()
