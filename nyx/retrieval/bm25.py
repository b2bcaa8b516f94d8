"""BM25 over the documents' text (images are ignored), with bm25s.

Tokenisation is bm25s' default (lower-case, ``\\w\\w+`` tokens, no stemmer) with English stop words.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nyx.data.records import Record
from nyx.data.rejects import RejectLog
from nyx.index.manifest import CorpusHasher
from nyx.retrieval.base import Retriever, Run, read_retriever_manifest, register_retriever, unique_records
from nyx.utils.io import atomic_dir, read_json, write_json

if TYPE_CHECKING:  # pragma: no cover
    import bm25s
    from bm25s.tokenization import Tokenizer

DOC_IDS_NAME = "doc_ids.json"


class BM25Config(BaseModel):
    """BM25 parameters (bm25s defaults: Lucene variant, k1 = 1.5, b = 0.75)."""

    model_config = ConfigDict(extra="forbid")

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"


@register_retriever
class BM25Retriever(Retriever):
    """Sparse lexical baseline: bm25s over ``Record.text``."""

    name = "bm25"

    def __init__(self, config: BM25Config | None = None, **overrides: Any):
        self.config = (config or BM25Config()).model_copy(update=overrides)
        self._model: bm25s.BM25 | None = None
        self._tokenizer: Tokenizer | None = None
        self._doc_ids: list[str] = []
        self._corpus_hash: str | None = None

    def _new_tokenizer(self):
        from bm25s.tokenization import Tokenizer

        return Tokenizer(stopwords=self.config.stopwords, stemmer=None)

    @property
    def num_docs(self) -> int:
        return len(self._doc_ids)

    def _fitted(self) -> tuple[bm25s.BM25, Tokenizer]:
        """The model and tokenizer; raises (``_require_index``) before ``index()`` or ``load()`` gave documents."""
        self._require_index()
        assert self._model is not None and self._tokenizer is not None  # set together with the documents
        return self._model, self._tokenizer

    def index(self, corpus: Iterable[Record], *, rejects: RejectLog | None = None) -> int:
        import bm25s

        hasher = CorpusHasher()
        doc_ids: list[str] = []
        texts: list[str] = []
        for r in unique_records(corpus, rejects):
            hasher.update([r])
            doc_ids.append(r.id)
            texts.append(r.text)
        tokenizer = self._new_tokenizer()
        tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
        model = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        if doc_ids:
            model.index(tokens, show_progress=False)
        self._model, self._tokenizer, self._doc_ids = model, tokenizer, doc_ids
        self._corpus_hash = hasher.hexdigest()
        return len(doc_ids)

    def search(self, queries: Sequence[Record], k: int = 10, dim: int | None = None) -> Run:
        self.check_dim(dim)
        model, tokenizer = self._fitted()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return {}
        k = min(k, self.num_docs)
        tokens = tokenizer.tokenize([q.text for q in queries], update_vocab=False, return_as="ids", show_progress=False)
        # bm25s maps unknown words, and the text of documents without words, to the empty token: drop it, or
        # a query of unknown words would "match" every image-only document.
        empty = tokenizer.get_vocab_dict().get("")
        tokens = [[t for t in ids if t != empty] for ids in tokens]
        run: Run = {q.id: {} for q in queries}
        searchable = [i for i, ids in enumerate(tokens) if ids]
        if searchable:
            docs, scores = model.retrieve([tokens[i] for i in searchable], k=k, show_progress=False)
            for i, row_d, row_s in zip(searchable, docs, scores):
                keep = row_s > 0  # a zero score means no query term occurs in the document
                run[queries[i].id] = {self._doc_ids[int(d)]: float(s) for d, s in zip(row_d[keep], row_s[keep])}
        return run

    def save(self, path: str | os.PathLike) -> Path:
        model, tokenizer = self._fitted()
        path = Path(path)
        with atomic_dir(path) as tmp:
            model.save(str(tmp / "bm25"), show_progress=False)
            tokenizer.save_vocab(str(tmp / "bm25"))
            tokenizer.save_stopwords(str(tmp / "bm25"))
            write_json(self._doc_ids, tmp / DOC_IDS_NAME)
            self._write_manifest(tmp, self.config.model_dump(), self._corpus_hash)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> BM25Retriever:
        import bm25s

        path = Path(path)
        manifest = read_retriever_manifest(path)
        if manifest.retriever != cls.name:
            raise ValueError(f"{path} holds a {manifest.retriever!r} retriever, not {cls.name!r}")
        self = cls(BM25Config.model_validate(manifest.config))
        self._model = model = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
        self._tokenizer = tokenizer = self._new_tokenizer()
        tokenizer.load_vocab(str(path / "bm25"))
        tokenizer.load_stopwords(str(path / "bm25"))
        self._doc_ids = [str(i) for i in read_json(path / DOC_IDS_NAME)]
        self._corpus_hash = manifest.corpus_hash
        if model.scores["num_docs"] != len(self._doc_ids):
            raise ValueError(f"{path}: the BM25 index and {DOC_IDS_NAME} disagree on the number of documents")
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.model_dump()}
