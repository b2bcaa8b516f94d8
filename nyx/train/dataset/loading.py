"""Loading one configured training source as :class:`~nyx.train.dataset.TrainingExample` s (negatives as found).

Sources
-------
* **NyxQA** (``kind="nyxqa"``): a BEIR folder (``corpus.jsonl``, ``queries.jsonl`` with extra fields such as
  ``answer``/``choices``, ``qrels``) plus a hard-negatives JSONL, one line per training query::

      {"query_id": "q1", "positive_id": "c7", "negative_ids": ["c3", "c9", ...]}

  Queries without a line in that file use their qrels positive and negatives from the source's pool.
* **Nyx triples** (``kind="triples"``), any number of extra sets, one JSON object per line::

      {"query": {"content": [...]}, "positive": {"content": [...]}, "negatives": [{"content": [...]}, ...]}

  (records in the Nyx part format; ``id`` optional; image paths relative to the file).
* **Research format** (``kind="research"``): see :mod:`nyx.train.dataset.research`, converted on the fly.

Broken negatives, and examples whose query or positive is unusable, are recorded in the
:class:`~nyx.data.rejects.RejectLog`; :mod:`nyx.train.dataset.negatives` replaces the missing negatives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nyx.data.beir import load_beir
from nyx.data.records import Record, record_from_json
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.config import SourceConfig
from nyx.train.dataset.examples import TrainingExample, iter_json_objects
from nyx.train.dataset.research import iter_research_triples


def _triple_records(
    obj: Any, where: str, source: str, base_dir: str | os.PathLike | None, rejects: RejectLog
) -> TrainingExample | None:
    """One Nyx-triples object -> example (broken negatives logged and left out), or None when unusable."""
    if not isinstance(obj, dict):
        rejects.add(RecordError(f"expected a JSON object, got {type(obj).__name__}", location=where))
        return None
    base_id = str(obj.get("id") or f"{source}:{where.rsplit(':', 1)[-1]}")

    def parse(raw: Any, role: str) -> Record:
        if isinstance(raw, dict) and "id" not in raw and "_id" not in raw:
            raw = {"id": f"{base_id}:{role}", **raw}
        return record_from_json(raw, base_dir)

    try:
        query = parse(obj.get("query"), "query")
        positive = parse(obj.get("positive"), "positive")
    except RecordError as e:
        rejects.add(RecordError(f"unusable triple: {e.reason}", record_id=base_id, location=where), raw=obj)
        return None
    negs_raw = obj.get("negatives") or []
    if not isinstance(negs_raw, list):
        rejects.add(RecordError("'negatives' must be a list; ignored", record_id=base_id, location=where))
        negs_raw = []
    negatives = []
    for i, raw in enumerate(negs_raw):
        try:
            negatives.append(parse(raw, f"neg{i}"))
        except RecordError as e:
            rejects.add(
                RecordError(f"broken negative {i} replaced: {e.reason}", record_id=base_id, location=where), raw=raw
            )
    return TrainingExample(query, positive, tuple(negatives), source)


def load_triples(path: str | os.PathLike, source: str, rejects: RejectLog) -> list[TrainingExample]:
    """Examples from a Nyx triples JSONL file (image paths relative to the file)."""
    path = Path(path)
    out = []
    for where, obj in iter_json_objects(path, rejects):
        ex = _triple_records(obj, where, source, path.parent, rejects)
        if ex is not None:
            out.append(ex)
    return out


def load_research(
    path: str | os.PathLike, source: str, rejects: RejectLog, image_root: str | os.PathLike | None = None
) -> list[TrainingExample]:
    """Examples from a research-format JSONL file (converted on the fly)."""
    path = Path(path)
    out = []
    for i, triple in enumerate(iter_research_triples(path, image_root, rejects), start=1):
        ex = _triple_records(triple, f"{path.name}:{triple.get('id', i)}", source, None, rejects)
        if ex is not None:
            out.append(ex)
    return out


def load_nyxqa(
    folder: str | os.PathLike,
    hard_negatives: str | os.PathLike | None,
    source: str,
    rejects: RejectLog,
    split: str | None = None,
) -> list[TrainingExample]:
    """Examples from a NyxQA BEIR folder and its mined hard negatives.

    With a hard-negatives line, its ``positive_id`` is the positive (it must exist in the corpus);
    otherwise the query's highest-judged qrels document. Every document judged relevant to the query is
    excluded from its negatives.
    """
    ds = load_beir(folder, rejects, split=split)
    mined: dict[str, dict[str, Any]] = {}
    if hard_negatives is not None:
        hn_path = Path(hard_negatives)
        for where, obj in iter_json_objects(hn_path, rejects):
            qid = obj.get("query_id") if isinstance(obj, dict) else None
            if not isinstance(qid, str) or not qid:
                rejects.add(RecordError("hard-negatives line without 'query_id'", location=where), raw=obj)
                continue
            if qid in mined:
                rejects.add(RecordError("duplicate hard-negatives line (first kept)", record_id=qid, location=where))
                continue
            mined[qid] = {**obj, "_where": where}
    out = []
    for qid, query in ds.queries.items():
        rel = ds.qrels.get(qid, {})
        relevant = {d for d, s in rel.items() if s > 0}
        line = mined.get(qid)
        where = line["_where"] if line else f"{Path(folder).name}/qrels"
        pos_id = line.get("positive_id") if line else None
        if pos_id is None and relevant:
            pos_id = max(sorted(relevant), key=lambda d: rel[d])
        if pos_id is None:
            rejects.add(RecordError("query has no positive (no qrels, no hard-negatives line)", record_id=qid))
            continue
        if pos_id not in ds.corpus:
            rejects.add(RecordError(f"positive {pos_id!r} not in the corpus", record_id=qid, location=where))
            continue
        exclude = frozenset(relevant | {pos_id})
        negatives = []
        neg_ids = line.get("negative_ids") if line else []
        if not isinstance(neg_ids, list):
            rejects.add(RecordError("'negative_ids' must be a list; ignored", record_id=qid, location=where))
            neg_ids = []
        for i, nid in enumerate(neg_ids):
            if not isinstance(nid, str) or nid not in ds.corpus:
                rejects.add(
                    RecordError(
                        f"broken negative {i} replaced: {nid!r} not in the corpus", record_id=qid, location=where
                    )
                )
            elif nid in exclude:
                rejects.add(
                    RecordError(
                        f"broken negative {i} replaced: {nid!r} is relevant to the query", record_id=qid, location=where
                    )
                )
            else:
                negatives.append(ds.corpus[nid])
        out.append(TrainingExample(query, ds.corpus[pos_id], tuple(negatives), source, exclude))
    for qid in mined.keys() - ds.queries.keys():
        rejects.add(
            RecordError("hard-negatives line names an unknown query", record_id=qid, location=mined[qid]["_where"])
        )
    return out


def load_source(cfg: SourceConfig, rejects: RejectLog) -> list[TrainingExample]:
    """The examples of one configured source (unfilled: negatives as found)."""
    if cfg.kind == "nyxqa":
        return load_nyxqa(cfg.path, cfg.hard_negatives, cfg.name, rejects, cfg.split)
    if cfg.kind == "triples":
        return load_triples(cfg.path, cfg.name, rejects)
    return load_research(cfg.path, cfg.name, rejects, cfg.image_root)
