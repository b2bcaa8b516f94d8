"""A model's index of the retrieval corpus, built from stored embeddings and checked before it is used.

:func:`build_corpus_index` indexes a corpus with a dense retriever, reading what the
:class:`~nyx.index.store.EmbeddingStore` already holds for that model (normally everything: the per-shard
embedding assets encoded it) and saves the retriever folder. :func:`open_corpus_index` re-opens such a folder for a
consumer (VLM feedback, the evaluation report, the search service) and refuses it, by name, when it belongs to
another model version or another corpus: an index is never silently re-used for data it was not built from.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nyx.data.records import Record
from nyx.data.rejects import RejectLog
from nyx.index.manifest import IndexMismatchError, corpus_hash
from nyx.utils.io import read_json, write_json

#: beside the retriever's files: the hash of the whole corpus the index was built from, and the records left out
SOURCE_FILE = "corpus_source.json"

log = logging.getLogger(__name__)


def build_corpus_index(
    retriever: Any,
    corpus: Iterable[Record],
    out_dir: str | os.PathLike,
    *,
    store: Any = None,
    source: str = "index",
    rejects: RejectLog | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Index ``corpus`` with ``retriever`` (embeddings from ``store`` where it has them) and save it to ``out_dir``
    (atomically: a crash keeps the previous folder). Returns what an operator wants to see: documents, how many
    embeddings were reused and encoded, the corpus hash, model identity and version, and the approximate indexes'
    build report where the index type has one."""
    t0 = time.perf_counter()
    corpus = list(corpus)
    rejects = rejects if rejects is not None else RejectLog(stage="corpus_index")
    n = retriever.index(corpus, store=store, source=source, rejects=rejects, progress=progress)
    index = retriever.embedding_index
    dims = list(index.manifest.mrl_dims)
    index.build(dims)  # approximate indexes are trained now and saved with the folder, not on first query
    if store is not None:  # reused embeddings too: what their encode did to the inputs is in the store's log
        index.manifest.inputs = store.model(retriever.embedding_identity()).input_totals()
    retriever.save(out_dir)
    kept = set(index.doc_ids)
    write_json(
        {
            "corpus_hash": corpus_hash(corpus),
            "records": len(corpus),
            "left_out": [r.id for r in corpus if r.id not in kept],
            "rejects": rejects.items,
        },
        Path(out_dir) / SOURCE_FILE,
    )
    m = index.manifest
    report = getattr(index, "build_report", None)
    return {
        "documents": n,
        **(retriever.last_encode.to_dict() if retriever.last_encode is not None else {}),
        "rejected": len(corpus) - n,
        "corpus_hash": m.corpus_hash,
        "model_id": m.model_id,
        "model_revision": m.model_revision,
        "mlflow_model_version": m.mlflow_model_version,
        "dims": dims,
        "index_type": m.index_type,
        "build_report": report() if callable(report) else {},
        "inputs": dict(m.inputs),  # records whose images were shrunk or dropped to fit, texts cut
        "seconds": round(time.perf_counter() - t0, 3),
        "out_dir": str(out_dir),
    }


def open_corpus_index(
    folder: str | os.PathLike, *, model_version: str | None = None, corpus: Sequence[Record] | None = None
) -> Any:
    """The saved retriever in ``folder``, after checking that it was built by registry version ``model_version``
    (when given) from exactly ``corpus`` (same ids, texts and image bytes, in order; when given). Raises
    :class:`~nyx.index.manifest.IndexMismatchError` naming the folder and what differs, ``FileNotFoundError`` when
    there is no index."""
    from nyx.retrieval import DenseRetriever, load_retriever

    folder = Path(folder)
    retriever = load_retriever(folder)
    if not isinstance(retriever, DenseRetriever):
        raise IndexMismatchError(f"{folder} holds a {type(retriever).__name__}, not a dense retriever's index")
    m = retriever.embedding_index.manifest
    if model_version is not None and str(m.mlflow_model_version) != str(model_version):
        raise IndexMismatchError(
            f"the index in {folder} was built by model version {m.mlflow_model_version}, not {model_version}: "
            "materialise its corpus index again"
        )
    if corpus is not None:
        if not (folder / SOURCE_FILE).is_file():
            raise IndexMismatchError(
                f"{folder} does not record which corpus it was built from (no {SOURCE_FILE}): "
                "materialise its corpus index again"
            )
        built = read_json(folder / SOURCE_FILE)
        want = corpus_hash(corpus)
        if want != built["corpus_hash"]:
            ids = set(retriever.embedding_index.doc_ids)
            new = sum(r.id not in ids for r in corpus)
            raise IndexMismatchError(
                f"the index in {folder} was built from another corpus ({built['records']} documents, hash "
                f"{built['corpus_hash'][:12]}); the current corpus has {len(corpus)} documents (hash {want[:12]}), "
                f"{new} of them not in the index: materialise its corpus index again"
            )
    return retriever


__all__ = ["SOURCE_FILE", "build_corpus_index", "open_corpus_index"]
