"""Hard-negative mining: ranks 1..skip are skipped, the positive and its near-duplicates never come back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest

from nyx.data.records import Record
from nyx.retrieval.base import Retriever
from nyx.synth.mining import MiningConfig, is_near_duplicate, mine_hard_negatives


class ScriptedRetriever(Retriever):
    """Returns a fixed ranking per query (scores descending), whatever the query says."""

    name = "scripted"

    def __init__(self, rankings: dict[str, list[str]]):
        self.rankings = rankings
        self.indexed: list[str] = []
        self.asked_k: list[int] = []

    def index(self, corpus: Iterable[Record], *, rejects=None) -> int:
        self.indexed = [r.id for r in corpus]
        return len(self.indexed)

    def search(self, queries: Sequence[Record], k: int = 10, dim: int | None = None):
        self.asked_k.append(k)
        return {q.id: {d: 100.0 - i for i, d in enumerate(self.rankings[q.id][:k])} for q in queries}

    def save(self, path):  # pragma: no cover - not needed here
        raise NotImplementedError

    @classmethod
    def load(cls, path):  # pragma: no cover
        raise NotImplementedError

    @property
    def num_docs(self) -> int:
        return len(self.indexed)


def _chunk(cid: str, text: str, doc: str | None = None) -> Record:
    return Record.from_text(cid, text, doc_id=doc or cid.split("#")[0], ordinal=0)


@pytest.fixture()
def corpus():
    docs = [_chunk(f"d{i}#c0", f"Distinct chunk number {i} about topic {i * 7} and more words {i}") for i in range(30)]
    docs.append(_chunk("pos#c0", "The harbour of Varholm hosts twelve blue fishing boats every spring season"))
    docs.append(_chunk("pos#c1", "The harbour of Varholm hosts twelve blue fishing boats every spring season too"))
    docs.append(_chunk("pos#c2", "A completely different part of the same page about the museum opening hours"))
    docs.append(_chunk("copy#c0", "the harbour of VARHOLM hosts twelve blue fishing boats, every spring season!"))
    return docs


def _query(qid="q1", positive="pos#c0"):
    return Record.from_text(qid, "How many boats?", positive_id=positive, split="train")


def test_skips_the_top_ranks_and_never_returns_the_positive(corpus):
    ranking = [f"d{i}#c0" for i in range(10)] + [
        "d10#c0",
        "pos#c0",
        "d11#c0",
        "d12#c0",
        "d13#c0",
        "d14#c0",
        "d15#c0",
        "d16#c0",
        "d17#c0",
        "d18#c0",
    ]
    retriever = ScriptedRetriever({"q1": ranking})
    records, stats = mine_hard_negatives([_query()], corpus, retriever, k=20, skip=10, n=5)
    assert records == [
        {
            "query_id": "q1",
            "positive_id": "pos#c0",
            "negative_ids": ["d10#c0", "d11#c0", "d12#c0", "d13#c0", "d14#c0"],
            "miner": "scripted",
        }
    ]
    assert retriever.indexed == [c.id for c in corpus] and retriever.asked_k == [20]
    assert stats["dropped_positive"] == 1 and stats["queries_full"] == 1 and stats["negatives"] == 5


def test_positive_in_the_skipped_ranks_is_counted_and_not_used(corpus):
    ranking = ["pos#c0"] + [f"d{i}#c0" for i in range(19)]
    records, stats = mine_hard_negatives([_query()], corpus, ScriptedRetriever({"q1": ranking}), n=5)
    assert records[0]["negative_ids"] == [f"d{i}#c0" for i in range(9, 14)]
    assert stats["positive_in_skipped_ranks"] == 1


def test_near_duplicates_of_the_positive_are_dropped(corpus):
    by_id = {c.id: c for c in corpus}
    assert is_near_duplicate(by_id["copy#c0"], by_id["pos#c0"], 0.8)  # same normalised text, other document
    assert is_near_duplicate(by_id["pos#c1"], by_id["pos#c0"], 0.8)  # same document, high overlap
    assert not is_near_duplicate(by_id["pos#c2"], by_id["pos#c0"], 0.8)  # same document, other content
    ranking = [f"d{i}#c0" for i in range(10)] + [
        "copy#c0",
        "pos#c1",
        "pos#c2",
        "d20#c0",
        "d21#c0",
        "d22#c0",
        "d23#c0",
        "d24#c0",
    ]
    records, stats = mine_hard_negatives([_query()], corpus, ScriptedRetriever({"q1": ranking}))
    assert records[0]["negative_ids"] == ["pos#c2", "d20#c0", "d21#c0", "d22#c0", "d23#c0"]
    assert stats["dropped_near_duplicate"] == 2


def test_short_rankings_give_fewer_negatives_and_settings_are_validated(corpus):
    ranking = [f"d{i}#c0" for i in range(13)]
    records, stats = mine_hard_negatives(
        [_query(), _query("q2", "missing")], corpus, ScriptedRetriever({"q1": ranking, "q2": ranking}), index=False
    )
    assert records[0]["negative_ids"] == ["d10#c0", "d11#c0", "d12#c0"]
    assert stats["queries_short"] == 1 and stats["skipped_unknown_positive"] == 1 and len(records) == 1
    with pytest.raises(ValueError, match="skip < k"):
        MiningConfig(k=10, skip=10)
    with pytest.raises(ValueError):
        mine_hard_negatives([_query()], corpus, ScriptedRetriever({}), n=0)


def test_mining_with_the_real_bm25_retriever_keeps_the_contract(corpus):
    from nyx.retrieval.bm25 import BM25Retriever

    queries = [_query(f"q{i}", f"d{i}#c0") for i in range(5)]
    for q, i in zip(queries, range(5)):
        q.content = Record.from_text(q.id, f"chunk number {i} topic {i * 7}").content
    records, stats = mine_hard_negatives(queries, corpus, BM25Retriever(), k=12, skip=2, n=3)
    assert stats["miner"] == "bm25" and len(records) == 5
    for r in records:
        assert r["positive_id"] not in r["negative_ids"] and len(r["negative_ids"]) == 3
