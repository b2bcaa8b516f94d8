"""Extra evaluation sets: public benchmarks converted by ``nyx convert``, evaluated beside NyxQA.

A set is named in the profile (``eval.extra_sets``, :class:`nyx.settings.ExtraEvalSet`): a BEIR folder, the split
of its judgements and, for sets that ship no corpus (Bamboogle), a corpus to retrieve from. :func:`evaluate_extra_set`
builds every retriever afresh on the set's corpus (dense ones through the embedding store, so a rerun encodes
nothing twice) and returns the same :class:`~nyx.eval.report.EvalReport` NyxQA gets: retrieval at every Matryoshka
dimension, RAG answers with the oracle and no-retrieval bounds, the modality breakdown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nyx.data.beir import BeirDataset, load_beir
from nyx.data.records import Record, iter_jsonl
from nyx.data.rejects import RejectLog
from nyx.eval.report import EvalReport, evaluate_retrievers

__all__ = ["evaluate_extra_set", "load_extra_set", "resolve_path"]


def resolve_path(path: str | os.PathLike, data_root: str | os.PathLike) -> Path:
    """``path`` as given when absolute, else under the data root."""
    p = Path(path)
    return p if p.is_absolute() else Path(data_root) / p


def _corpus_from(path: Path, rejects: RejectLog) -> list[Record]:
    if path.is_dir():
        path = path / "corpus.jsonl"
    return list(iter_jsonl(path, rejects))


def load_extra_set(spec: Any, data_root: str | os.PathLike, rejects: RejectLog | None = None) -> BeirDataset:
    """The set's queries, judgements and corpus (the ``corpus`` override's when it has one).

    Reads ``qrels/<split>.tsv``, or the folder's ``qrels.tsv`` when there is no such file. Raises ``ValueError``
    naming the set when it has no query or no document to retrieve from."""
    rejects = rejects if rejects is not None else RejectLog(stage=f"eval-{spec.name}")
    folder = resolve_path(spec.path, data_root)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"extra evaluation set {spec.name!r}: no folder {folder} (convert it with `nyx convert`)"
        )
    split = spec.split if (folder / "qrels" / f"{spec.split}.tsv").is_file() else None
    ds = load_beir(folder, rejects, split=split)
    if spec.corpus:
        ds.corpus = {r.id: r for r in _corpus_from(resolve_path(spec.corpus, data_root), rejects)}
        ds.qrels = {
            q: kept for q, docs in ds.qrels.items() if (kept := {d: s for d, s in docs.items() if d in ds.corpus})
        }
    if not ds.queries:
        raise ValueError(f"extra evaluation set {spec.name!r}: no usable query in {folder}")
    if not ds.corpus:
        raise ValueError(
            f"extra evaluation set {spec.name!r}: its corpus is empty (sets such as Bamboogle ship "
            "none): give it a 'corpus' in the profile"
        )
    return ds


def evaluate_extra_set(
    spec: Any,
    data_root: str | os.PathLike,
    retrievers: Mapping[str, Callable[[], Any]],
    *,
    store: Any = None,
    dims_by_name: Mapping[str, Sequence[int | None] | None] | None = None,
    reader: Any = None,
    top_n: int = 1,
    cache_dir: str | os.PathLike | None = None,
    notes: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | bool = False,
) -> EvalReport:
    """Evaluate one extra set with fresh retrievers (``retrievers``: name -> factory) built on its corpus.

    Dense retrievers index through ``store`` (source ``eval-<set>-<retriever>``): a corpus already encoded by
    the same model is read back, not encoded again."""
    from nyx.retrieval import DenseRetriever

    rejects = RejectLog(stage=f"eval-{spec.name}")
    ds = load_extra_set(spec, data_root, rejects)
    corpus = list(ds.corpus.values())
    built: dict[str, Any] = {}
    for name, factory in retrievers.items():
        r = factory()
        if isinstance(r, DenseRetriever):
            r.index(corpus, store=store, source=f"eval-{spec.name}-{name}", progress=progress)
        else:
            r.index(corpus)
        built[name] = r
    all_notes = list(notes)
    if not ds.qrels:
        all_notes.append(
            f"{spec.name} has no relevance judgements: its retrieval metrics are empty; only the RAG "
            "answers are measured."
        )
    return evaluate_retrievers(
        built,
        list(ds.queries.values()),
        ds.qrels,
        corpus,
        dims_by_name=dims_by_name,
        reader=reader,
        top_n=top_n,
        cache_dir=cache_dir,
        notes=all_notes,
        meta={
            "set": spec.name,
            "split": spec.split,
            "queries": len(ds.queries),
            "judged_queries": len(ds.qrels),
            "corpus": len(corpus),
            "rejected": rejects.count,
            **(meta or {}),
        },
    )
