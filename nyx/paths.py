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
    def at(cls, root: str | os.PathLike | None = None) -> "DataPaths":
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
    def feedback(self) -> Path:
        return self.root / "feedback"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects"

    @property
    def cache(self) -> Path:  # generator response caches etc. (part of the data version on purpose: it is paid-for work)
        return self.root / "cache"

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
