"""Converting one declared training source into ``<data>/training_sources/<name>/`` (``triples.jsonl``, ``images/``,
``manifest.json``), once: a source whose file and settings did not change is not converted again."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nyx.data.records import is_data_url
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.sources.formats import gold_row, iter_rows, research_row, retrieved_row, triples_row
from nyx.train.sources.layout import (
    IMAGES_DIR,
    MANIFEST_FILE,
    TRIPLES_FILE,
    converted_dir,
    rejects_file,
    resolve_path,
)
from nyx.train.sources.leakage import normalize_text
from nyx.utils.io import atomic_dir, read_json, write_json

if TYPE_CHECKING:
    from nyx.paths import DataPaths
    from nyx.settings import TrainingSource

#: Bumped when a conversion rule changes: every source is converted again
CODE_VERSION = "training-sources-v1"
#: reject-log reasons of a negative left out of a row that is kept (not a rejected row)
NEGATIVE_DROPS = ("broken negative dropped", "negative equals the positive")


@dataclass
class SourceStats:
    """What converting one source did (the ``manifest.json`` of its folder)."""

    name: str
    format: str
    recipe: str | None
    source_path: str
    source_md5: str
    settings_key: str
    loaded: int = 0
    usable: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    dropped_negatives: dict[str, int] = field(default_factory=dict)
    images: int = 0
    converted: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def settings_key(src: TrainingSource) -> str:
    """What decides the converted content besides the file: format, recipe, image root, cap, code version."""
    blob = json.dumps(
        {"code": CODE_VERSION, **src.model_dump(include={"format", "recipe", "image_root", "cap"})}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _ImageStore:
    """Copies every image a source uses into ``<tmp>/images/<sha256 prefix><ext>`` once (verified decodable)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.placed: dict[str, str] = {}
        self.bad: dict[str, str] = {}

    def place(self, ref: str) -> str:
        if is_data_url(ref):
            return ref
        if ref in self.placed:
            return self.placed[ref]
        if ref in self.bad:
            raise ValueError(self.bad[ref])
        from nyx.data.images import verify_image

        src = Path(ref)
        try:
            verify_image(src)
        except (RecordError, OSError) as e:
            self.bad[ref] = f"image {src.name}: {getattr(e, 'reason', e)}"
            raise ValueError(self.bad[ref]) from None
        data = src.read_bytes()
        rel = f"{IMAGES_DIR}/{hashlib.sha256(data).hexdigest()[:32]}{src.suffix.lower()}"
        dest = self.tmp / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        self.placed[ref] = rel
        return rel

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        content = []
        for p in rec["content"]:
            if p.get("type") == "image":
                p = {"type": "image", "image": self.place(p["image"])}
            content.append(p)
        return {**rec, "content": content}


def _doc_key(rec: dict[str, Any]) -> tuple:
    return tuple((p["type"], normalize_text(p["text"]) if p["type"] == "text" else p["image"]) for p in rec["content"])


def _finish_triple(triple: dict[str, Any], images: _ImageStore, rejects: RejectLog, where: str) -> dict[str, Any]:
    """Images placed in the store (a broken query/positive image rejects the row, a broken negative is dropped)
    and negatives equal to the positive or to each other dropped."""
    rid = triple.get("id")
    for role in ("query", "positive"):
        triple[role].setdefault("id", f"{rid}:{role}")
    for i, neg in enumerate(triple.get("negatives", [])):
        neg.setdefault("id", f"{rid}:neg{i}")
    try:
        query = images.record(triple["query"])
        positive = images.record(triple["positive"])
    except ValueError as e:
        raise RecordError(f"unresolvable image: {e}", record_id=rid, location=where) from None
    for reason in triple.get("dropped_negatives", []):
        rejects.add(RecordError(f"broken negative dropped: {reason}", record_id=rid, location=where))
    seen = {_doc_key(positive)}
    negatives = []
    for i, neg in enumerate(triple.get("negatives", [])):
        try:
            neg = images.record(neg)
        except ValueError as e:
            rejects.add(RecordError(f"broken negative dropped: negative {i}: {e}", record_id=rid, location=where))
            continue
        key = _doc_key(neg)
        if key == _doc_key(positive):
            rejects.add(
                RecordError(f"negative equals the positive: negative {i} dropped", record_id=rid, location=where)
            )
        elif key not in seen:
            negatives.append(neg)
        seen.add(key)
    return {"id": rid, "query": query, "positive": positive, "negatives": negatives}


def convert_rows(src: TrainingSource, path: Path, image_root: Path, out_tmp: Path, rejects: RejectLog) -> SourceStats:
    """Convert the rows of ``path`` into ``out_tmp/triples.jsonl`` (+ ``images/``); returns the counts (the
    md5s and key are filled by :func:`convert_source`)."""
    stats = SourceStats(
        name=src.name, format=src.format, recipe=src.recipe, source_path=str(path), source_md5="", settings_key=""
    )
    images = _ImageStore(out_tmp)
    before = rejects.count
    with open(out_tmp / TRIPLES_FILE, "w", encoding="utf-8") as f:
        for where, row in iter_rows(path, rejects, src.cap):
            stats.loaded += 1
            try:
                if src.format == "research":
                    triple = research_row(row, where, src.name, image_root, stats.fixed)
                elif src.format == "triples":
                    triple = triples_row(row, where, src.name, image_root)
                elif src.recipe == "retrieved":
                    triple = retrieved_row(row, where, src.name)
                else:
                    triple = gold_row(src.format, row, where, src.name)
                triple = _finish_triple(triple, images, rejects, where)
            except RecordError as e:
                e.location = e.location or where
                rejects.add(e, raw=row if isinstance(row, (dict, list, str)) else None)
                continue
            f.write(json.dumps(triple, ensure_ascii=False) + "\n")
            stats.usable += 1
    # malformed lines count as loaded rows too (they were rows of the file)
    malformed = sum(1 for i in rejects.items[before:] if i["reason"].startswith("malformed JSON line"))
    stats.loaded += malformed
    stats.rejected = stats.loaded - stats.usable
    mine = rejects.items[before:]
    dropped = [i for i in mine if i["reason"].startswith(NEGATIVE_DROPS)]
    stats.reasons = dict(sorted(RejectLog(items=[i for i in mine if i not in dropped]).reasons().items()))
    stats.dropped_negatives = dict(sorted(RejectLog(items=dropped).reasons().items()))
    stats.images = len(images.placed)
    return stats


def convert_source(src: TrainingSource, paths: DataPaths, force: bool = False) -> SourceStats:
    """Convert one declared source into ``training_sources/<name>/`` unless its file and settings are those of the
    last conversion (``converted=False`` then, counts from the manifest). Rejects go to
    ``rejects/training_sources/<name>.jsonl``."""
    path = resolve_path(paths, src.path)
    if not path.is_file():
        raise FileNotFoundError(f"training source {src.name!r}: no file {path} (profile stage1.extra_sources)")
    image_root = resolve_path(paths, src.image_root) if src.image_root else path.parent
    source_md5 = _file_md5(path)
    key = settings_key(src)
    out = converted_dir(paths, src.name)
    manifest = out / MANIFEST_FILE
    if not force and manifest.is_file() and (out / TRIPLES_FILE).is_file():
        old = read_json(manifest)
        if old.get("source_md5") == source_md5 and old.get("settings_key") == key:
            return SourceStats(**{**old, "converted": False})
    rejects = RejectLog(stage=f"training_sources/{src.name}")
    with atomic_dir(out) as tmp:
        stats = convert_rows(src, path, image_root, tmp, rejects)
        stats.source_md5, stats.settings_key = source_md5, key
        write_json(stats.to_json() | {"converted": True}, tmp / MANIFEST_FILE)
    rejects.write(rejects_file(paths, src.name))
    return stats
