"""Hard-negative mining for NyxQA training queries (stage 5).

The paper lets an existing multimodal retriever (mmE5) retrieve the top 20 chunks per training question
and keeps ranks 11-20 minus the positive and its duplicates, storing 5: skipping the top 10 avoids false
negatives (other chunks that also answer the question). Any :class:`~nyx.retrieval.base.Retriever` can be
the miner here (BM25 or MiniLM offline, a Nyx checkpoint later).

A candidate is a near-duplicate of the positive when its normalised text (and images) equal the
positive's, or when it comes from the same document and the word sets overlap by at least
``dedup_threshold`` (Jaccard).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import model_validator

from nyx.data.records import Record
from nyx.retrieval.base import Retriever
from nyx.synth.text import normalize_answer
from nyx.utils.batches import chunked
from nyx.utils.config import ConfigModel

log = logging.getLogger(__name__)


class MiningConfig(ConfigModel):
    """Settings of :func:`mine_hard_negatives` (defaults: the paper's)."""

    k: int = 20
    """Candidates retrieved per query."""
    skip: int = 10
    """Ranks 1..skip are never used (likely false negatives)."""
    n: int = 5
    """Negatives stored per query."""
    dedup_threshold: float = 0.8
    """Word-set Jaccard from which a chunk of the positive's document counts as its duplicate."""
    batch_size: int = 256

    @model_validator(mode="after")
    def _check(self) -> MiningConfig:
        if not 0 <= self.skip < self.k:
            raise ValueError(f"need 0 <= skip < k, got skip={self.skip}, k={self.k}")
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError("dedup_threshold must be in (0, 1]")
        return self


def _signature(r: Record) -> tuple[str, tuple[str, ...]]:
    return normalize_answer(r.text), tuple(r.images)


def _words(r: Record) -> set[str]:
    return set(normalize_answer(r.text).split())


def is_near_duplicate(candidate: Record, positive: Record, threshold: float) -> bool:
    """Same normalised content, or same document with word-set Jaccard >= ``threshold``."""
    if _signature(candidate) == _signature(positive):
        return True
    doc = positive.extra.get("doc_id")
    if doc is None or candidate.extra.get("doc_id") != doc:
        return False
    a, b = _words(candidate), _words(positive)
    if not a and not b:  # image-only chunks of one document: duplicates only if the images are the same
        return candidate.images == positive.images
    return len(a & b) / max(1, len(a | b)) >= threshold


def mine_hard_negatives(
    queries: Sequence[Record],
    corpus: Sequence[Record],
    retriever: Retriever | Miner,
    k: int | None = None,
    skip: int | None = None,
    n: int | None = None,
    dedup_threshold: float | None = None,
    cfg: MiningConfig | None = None,
    index: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mine ``n`` hard negatives per query from ranks ``skip+1..k`` of ``retriever``.

    ``queries`` are the training queries (each with ``extra["positive_id"]``); keyword arguments override
    ``cfg``. With ``index=True`` the retriever first indexes ``corpus``. Returns ``(records, stats)`` with
    records ``{"query_id", "positive_id", "negative_ids", "miner"}`` in query order (a query may get fewer
    than ``n`` negatives, even none; the stats count them). ``retriever`` may be a :class:`Miner` (from
    :func:`resolve_miner`): ``miner`` is then its label and the stats carry its identity.
    """
    identity: dict[str, Any] | None = None
    if isinstance(retriever, Miner):
        miner = retriever.label
        identity = dict(retriever.identity)
        retriever = retriever.retriever
    else:
        miner = getattr(retriever, "name", type(retriever).__name__)
    base = cfg or MiningConfig()
    cfg = MiningConfig(
        k=base.k if k is None else k,
        skip=base.skip if skip is None else skip,
        n=base.n if n is None else n,
        dedup_threshold=base.dedup_threshold if dedup_threshold is None else dedup_threshold,
        batch_size=base.batch_size,
    )
    by_id = {c.id: c for c in corpus}
    if index:
        retriever.index(corpus)
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for batch in chunked(queries, cfg.batch_size):
        run = retriever.search(batch, k=cfg.k)
        for q in batch:
            pid = q.extra.get("positive_id")
            positive = by_id.get(pid) if pid is not None else None
            if positive is None:
                counts["skipped_unknown_positive"] += 1
                continue
            ranked = sorted(run.get(q.id, {}).items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.k]
            ranks = [d for d, _ in ranked]
            if pid in ranks[: cfg.skip]:
                counts["positive_in_skipped_ranks"] += 1
            negatives: list[str] = []
            for did in ranks[cfg.skip :]:
                if did == pid:
                    counts["dropped_positive"] += 1
                    continue
                cand = by_id.get(did)
                if cand is None:
                    counts["dropped_unknown_doc"] += 1
                    continue
                if is_near_duplicate(cand, positive, cfg.dedup_threshold):
                    counts["dropped_near_duplicate"] += 1
                    continue
                if len(negatives) < cfg.n:
                    negatives.append(did)
            counts[
                "queries_full" if len(negatives) == cfg.n else ("queries_short" if negatives else "queries_none")
            ] += 1
            records.append({"query_id": q.id, "positive_id": pid, "negative_ids": negatives, "miner": miner})
    stats: dict[str, Any] = {
        "queries": len(queries),
        "mined": len(records),
        "negatives": sum(len(r["negative_ids"]) for r in records),
        **{
            key: counts.get(key, 0)
            for key in (
                "queries_full",
                "queries_short",
                "queries_none",
                "positive_in_skipped_ranks",
                "dropped_positive",
                "dropped_near_duplicate",
                "dropped_unknown_doc",
                "skipped_unknown_positive",
            )
        },
        "config": {"k": cfg.k, "skip": cfg.skip, "n": cfg.n, "dedup_threshold": cfg.dedup_threshold},
        "miner": miner,
        **({"miner_identity": identity} if identity is not None else {}),
    }
    log.info("mined %d negatives for %d queries with %s", stats["negatives"], len(records), miner)
    return records, stats


# ----------------------------------------------------------------------------------------------------------
# Choosing the miner
# ----------------------------------------------------------------------------------------------------------

REGISTRY_PREFIX = "models:/"
BUILTIN_MINERS = ("bm25", "minilm", "mme5", "nyx")


@dataclass
class Miner:
    """A retriever to mine with and what identifies it (JSON-able; equal identities mine the same negatives from
    the same data and settings)."""

    retriever: Retriever
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name for logs and metadata: ``mme5:intfloat/mmE5-mllama-11b-instruct``, ``minilm``, ..."""
        kind = self.identity.get("kind", getattr(self.retriever, "name", "?"))
        what = self.identity.get("uri") or self.identity.get("model_id")
        return f"{kind}:{what}" if what else str(kind)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_type(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("model_type")


def _dense_identity(retriever: Retriever) -> dict[str, Any]:
    """Model id, revision and the weights of local folders of a dense retriever (builds its encoder)."""
    from nyx.index.store import folder_weights_id
    from nyx.retrieval.dense import DenseRetriever

    if not isinstance(retriever, DenseRetriever):
        return {}
    model_id, revision = retriever.model_identity(retriever.encoder)
    ident: dict[str, Any] = {"model_id": model_id, "revision": revision}
    info_of = getattr(retriever.encoder, "info", None)  # NyxEncoder and MmE5Encoder have one, MiniLM not
    info = info_of() if callable(info_of) else {}
    for key, folder in (("weights", info.get("model_id", model_id)), ("adapter_weights", info.get("adapter_path"))):
        if (w := folder_weights_id(folder)) is not None:
            ident[key] = w
    return ident


def _registered_retriever(
    uri: str, tracking_uri: str | None, download_dir: str | os.PathLike | None, retriever_kwargs: dict[str, Any]
) -> tuple[Retriever, dict[str, Any]]:
    """The retriever of a registered model version: its corpus index folder (tag ``nyx.index_dir``), else its logged
    model downloaded into ``download_dir``."""
    import re

    from nyx.registry import INDEX_DIR_TAG, client
    from nyx.retrieval import NyxRetriever, load_retriever

    m = re.match(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$", uri)
    if not m:
        raise ValueError(f"bad registry URI {uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    c = client(tracking_uri)
    name = m["name"]
    try:
        version = m["version"] or str(c.get_model_version_by_alias(name, m["alias"]).version)
        mv = c.get_model_version(name, version)
    except Exception as e:  # noqa: BLE001 - MlflowException, connection errors: the miner cannot be resolved
        raise ValueError(f"cannot resolve the miner {uri}: {e}") from None
    tags = dict(mv.tags or {})
    ident: dict[str, Any] = {
        "uri": uri,
        "registered_model": name,
        "version": str(version),
        "weights_sha256": tags.get("nyx.weights_sha256"),
    }
    index_dir = tags.get(INDEX_DIR_TAG)
    if index_dir and Path(index_dir).is_dir():
        ident["from"] = "index_dir"
        return load_retriever(index_dir), ident
    import mlflow

    dst = Path(download_dir) if download_dir else Path.cwd() / ".nyx-miner"
    dst = dst / f"{name}-v{version}"
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(dst), tracking_uri=tracking_uri
        )
    )
    model_dir = next((p for p in (local / "artifacts" / "model_dir", local / "model_dir") if p.is_dir()), local)
    base = model_dir / "base" if (model_dir / "base").is_dir() else model_dir
    adapter = model_dir / "adapter" if (model_dir / "adapter").is_dir() else None
    ident["from"] = "logged_model"
    return NyxRetriever(model=base, adapter_path=adapter, mlflow_model_version=str(version), **retriever_kwargs), ident


def resolve_miner(
    spec: str,
    model: str | None = None,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    tracking_uri: str | None = None,
    download_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Miner:
    """The miner a profile's ``miner.retriever`` (``spec``) and ``miner.model`` name (see the module docstring).

    ``device`` and ``batch_size`` go to model-based miners; ``tracking_uri`` is the MLflow registry of
    ``models:/`` URIs (logged models are downloaded into ``download_dir``). ``ValueError`` for a spec that names
    nothing usable."""
    from nyx.retrieval import create_retriever, load_retriever, read_retriever_manifest
    from nyx.retrieval.bm25 import BM25Retriever
    from nyx.retrieval.dense import DenseConfig
    from nyx.retrieval.mme5 import MME5_MODEL_ID, MmE5Retriever
    from nyx.retrieval.nyx_retriever import NyxRetriever

    dense = DenseConfig(batch_size=batch_size) if batch_size else None
    kw: dict[str, Any] = {"device": device, "config": dense}
    ident: dict[str, Any]
    spec = os.fspath(spec)
    if spec == "bm25":
        retriever: Retriever = create_retriever("bm25")
        assert isinstance(retriever, BM25Retriever)  # the class registered as "bm25"
        ident = {"kind": "bm25", "config": retriever.config.model_dump(mode="json")}
    elif spec == "minilm":
        retriever = create_retriever(
            "minilm", **({"config": dense} if dense else {}), **({"device": device} if device else {})
        )
        ident = {"kind": "minilm"}
    elif spec == "mme5":
        retriever = MmE5Retriever(model=model or MME5_MODEL_ID, **kw)
        ident = {"kind": "mme5"}
    elif spec == "nyx":
        retriever = NyxRetriever(model=model or "tiny", **kw)
        ident = {"kind": "nyx"}
    elif spec.startswith(REGISTRY_PREFIX):
        retriever, ident = _registered_retriever(spec, tracking_uri, download_dir, kw)
        ident = {"kind": "registered", **ident}
    elif Path(spec).is_dir():
        folder = Path(spec).resolve()
        if (folder / "retriever.json").is_file():
            manifest = read_retriever_manifest(folder)
            retriever = load_retriever(folder)
            if dense is not None and hasattr(retriever, "config") and isinstance(retriever.config, DenseConfig):
                retriever.config = retriever.config.model_copy(update={"batch_size": batch_size})
            ident = {
                "kind": "retriever_folder",
                "folder": str(folder),
                "retriever": manifest.retriever,
                "encoder": manifest.config.get("encoder"),
            }
        elif (mtype := _model_type(folder)) == "mllama":
            retriever, ident = MmE5Retriever(model=folder, **kw), {"kind": "mme5"}
        elif mtype in ("qwen2_5_vl", "qwen2_vl"):
            retriever, ident = NyxRetriever(model=folder, **kw), {"kind": "nyx"}
        else:
            raise ValueError(
                f"miner folder {folder} is neither a saved retriever (no retriever.json) nor a "
                f"Llama-3.2-Vision / Qwen2.5-VL model folder (config.json model_type {mtype!r})"
            )
    else:
        raise ValueError(
            f"unknown miner {spec!r}: expected one of {', '.join(BUILTIN_MINERS)}, a saved retriever "
            "or model folder, or a registered model URI models:/<name>@<alias>"
        )
    ident.update(_dense_identity(retriever))
    miner = Miner(retriever=retriever, identity=ident)
    if log is not None:
        log(f"miner {miner.label} ({miner.fingerprint()})")
    return miner
