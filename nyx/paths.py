"""Where things live. Every location derives from one data root, so a test can point the whole pipeline
at a temporary folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    return Path(os.environ.get("NYX_DATA_DIR", REPO_ROOT / "data"))


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> DataPaths:
        return cls(Path(root) if root is not None else default_data_dir())

    @property
    def raw(self) -> Path:  # OBELICS shards (+ images/) as delivered
        return self.root / "raw"

    @property
    def documents(self) -> Path:  # validated documents, one JSONL per shard
        return self.root / "documents"

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    @property
    def synthetic_qa(self) -> Path:
        return self.root / "synthetic_qa"

    @property
    def nyxqa(self) -> Path:
        return self.root / "nyxqa"

    @property
    def hard_negatives(self) -> Path:
        return self.root / "hard_negatives"

    @property
    def training_sources(self) -> Path:  # external Stage-1 sets converted to Nyx triples, one folder per source
        return self.root / "training_sources"

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    @property
    def rejects(self) -> Path:  # what each asset dropped, with the reason: a log, not part of the data version
        return self.root / "rejects"

    @property
    def cache(self) -> Path:
        """Response caches. The generator's (``cache/generator``) is part of the data version on purpose: it is
        paid-for work, written by the data assets before ``data_snapshot``. The readers' caches below are not."""
        return self.root / "cache"

    @property
    def generator_cache(self) -> Path:  # the generator's responses (synthetic QA, NyxQA): versioned
        return self.cache / "generator"

    @property
    def feedback_cache(self) -> Path:  # reader answers while collecting feedback (``feedback_preferences``)
        return self.cache / "feedback"

    @property
    def rag_cache(self) -> Path:  # reader answers in the RAG evaluation (``eval_report``)
        return self.cache / "rag"

    @property
    def reader_cache(self) -> Path:  # an API reader's raw responses (feedback and evaluation)
        return self.cache / "reader"

    @property
    def unversioned(self) -> tuple[Path, ...]:
        """Folders inside the data root that are *not* part of the DVC data version (``.dvcignore``d by the snapshot
        assets): written after a snapshot or on every run, and none of them is read for training. Reader caches stay
        in place across a ``dvc checkout`` of another data version (their answers are valid for any version)."""
        return (self.rejects, self.feedback_cache, self.rag_cache, self.reader_cache)

    @property
    def work(self) -> Path:
        """Outside the DVC-tracked data: training checkpoints, indexes, reports (MLflow keeps what ships)."""
        return self.root.parent / "work"

    @property
    def checkpoints(self) -> Path:
        return self.work / "checkpoints"

    @property
    def embeddings(self) -> Path:
        """Document embeddings per model (:class:`nyx.index.store.EmbeddingStore`): derived, re-creatable."""
        return self.work / "embeddings"

    @property
    def indexes(self) -> Path:
        return self.work / "indexes"

    @property
    def reports(self) -> Path:
        return self.work / "reports"
