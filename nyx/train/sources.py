"""External Stage-1 training sets: read in the format their publisher ships, converted once into Nyx triples.

Each :class:`~nyx.settings.TrainingSource` of ``stage1.extra_sources`` becomes
``<data>/training_sources/<name>/``::

    triples.jsonl   one Nyx triple per usable row ({"id", "query", "positive", "negatives"}; nyx.train.data)
    images/         every image the triples use, copied under its content hash (the image store of the source)
    manifest.json   what was converted: the source file's md5, the settings, counts and rejects by reason

under the DVC-tracked data folder, and Stage 1 trains on ``triples.jsonl`` (its md5 is part of the Stage-1
fingerprint, :func:`nyx.train.stage.stage_train_config`). A source whose file and settings did not change is not
converted again (:func:`convert_source` compares the manifest).

Formats (published schemas; the readers accept JSONL, a JSON array, or parquet)
-------------------------------------------------------------------------------
* ``research``: MMEB / mmE5 rows (``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text``,
  ``neg_image_path``; ``<|image|>`` / ``<|image_1|>`` place the images), as ``kind="research"`` reads them, plus the
  paper's rules: a row whose ``pos_text`` is empty is dropped, and an image token in a query that has no image (a
  text-only query) is removed (counted under ``fixed``).
* ``triples``: Nyx triples (image paths relative to the file), validated and copied.
* ``hotpotqa`` / ``2wikimultihopqa`` with recipe ``gold``: the distractor-setting train file (``_id``, ``question``,
  ``context`` = ``[[title, [sentence, ...]], ...]``, ``supporting_facts`` = ``[[title, sent_id], ...]``; the Hugging
  Face column form ``{"title": [...], "sentences": [...]}`` / ``{"title": [...], "sent_id": [...]}`` too). The
  first supporting paragraph (in context order) is the positive, the paragraphs that support nothing are the hard
  negatives; other supporting paragraphs are neither (one triple per question, so no question meets its own
  second paragraph as an in-batch negative).
* ``musique`` with recipe ``gold``: ``id``, ``question``, ``paragraphs`` = ``[{"idx", "title", "paragraph_text",
  "is_supporting"}, ...]``; the same rule (unanswerable rows, without a supporting paragraph, are rejected).
* any text QA set with recipe ``retrieved``: questions with pre-retrieved passages, ranked best first: the paper's
  files (``qry``, ``retrieved_docs`` = list of passage strings) or FlashRAG's (``question``,
  ``output.retrieval_result`` or ``retrieval_result`` = list of ``{"contents"}`` / ``{"title", "text"}``). The
  top-1 passage is the (pseudo-)positive, passages ranked 11 and below the negatives.

Text passages become records ``"<title>\\n<text>"`` with content-derived ids, so the same paragraph is the same
document wherever it occurs (in-batch false negatives are masked by id).

Leakage
-------
:func:`evaluation_queries` collects the normalised text (:func:`normalize_text`) of every query of NyxQA dev and
test and of every evaluation folder the profile names (``stage1.eval_folders``); :func:`check_source` reports any
training query equal to one of them, naming the first offending rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nyx.data.records import Record, is_data_url, record_from_json
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.data import RESEARCH_IMAGE_TOKEN, _as_list, content_key, research_to_triple
from nyx.utils.io import atomic_dir, read_json, write_json

if TYPE_CHECKING:
    from nyx.paths import DataPaths
    from nyx.settings import TrainingSource

#: Bumped when a conversion rule changes: every source is converted again
CODE_VERSION = "training-sources-v1"
TRIPLES_FILE = "triples.jsonl"
MANIFEST_FILE = "manifest.json"
IMAGES_DIR = "images"
#: ``retrieved`` recipe: passages ranked this or lower (1-based) are the negatives
RETRIEVED_NEGATIVES_FROM_RANK = 11
#: how many offending rows a failed check names
FIRST_N = 5
#: reject-log reasons of a negative left out of a row that is kept (not a rejected row)
NEGATIVE_DROPS = ("broken negative dropped", "negative equals the positive")


# ----------------------------------------------------------------------------------------------------------
# Where things are
# ----------------------------------------------------------------------------------------------------------


def resolve_path(paths: DataPaths, ref: str | os.PathLike) -> Path:
    """A profile path: absolute as it is, relative to the data root otherwise."""
    p = Path(ref).expanduser()
    return p if p.is_absolute() else paths.root / p


def converted_dir(paths: DataPaths, name: str) -> Path:
    return paths.training_sources / name


def converted_file(paths: DataPaths, name: str) -> Path:
    """The Nyx triples Stage 1 trains on for source ``name``."""
    return converted_dir(paths, name) / TRIPLES_FILE


def rejects_file(paths: DataPaths, name: str) -> Path:
    return paths.rejects / "training_sources" / f"{name}.jsonl"


# ----------------------------------------------------------------------------------------------------------
# Reading rows
# ----------------------------------------------------------------------------------------------------------


def iter_rows(path: Path, rejects: RejectLog, cap: int | None = None) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` of a JSONL file, a JSON array (or object of rows) or a parquet file, the first ``cap`` rows
    only. A malformed JSONL line is a row too (it counts towards ``cap``) and goes to ``rejects``."""
    if not path.is_file():
        raise FileNotFoundError(f"training source file not found: {path}")
    n = 0

    def capped() -> bool:
        return cap is not None and n >= cap

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if capped():
                    return
                n += 1
                yield f"{path.name}:{n}", row
        return
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if path.suffix == ".json" and head.startswith(b"["):
        rows = read_json(path)
        for i, row in enumerate(rows, start=1):
            if capped():
                return
            n += 1
            yield f"{path.name}[{i - 1}]", row
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if capped():
                return
            n += 1
            where = f"{path.name}:{lineno}"
            try:
                yield where, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                rejects.add(
                    RecordError(f"malformed JSON line: {e}", location=where),
                    raw=raw.decode("utf-8", errors="replace").rstrip("\n"),
                )


# ----------------------------------------------------------------------------------------------------------
# Normalised text (leakage)
# ----------------------------------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """Lower case, Unicode NFKC, image tokens and punctuation removed, whitespace collapsed: two questions that
    differ only in these are the same question."""
    text = RESEARCH_IMAGE_TOKEN.sub(" ", unicodedata.normalize("NFKC", text or "")).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return _SPACE.sub(" ", text).strip()


def evaluation_queries(paths: DataPaths, folders: Iterable[str | os.PathLike] = ()) -> dict[str, str]:
    """``{normalised query text: "<set>:<query id>"}`` of NyxQA dev and test and of every BEIR folder in
    ``folders`` (a folder without ``queries.jsonl`` is an error: a named evaluation set must be checkable)."""
    from nyx.data.records import iter_jsonl

    sets: list[tuple[str, Path, bool]] = [
        (f"nyxqa/{s}", paths.nyxqa / s / "queries.jsonl", False) for s in ("dev", "test")
    ]
    sets += [(str(f), resolve_path(paths, f) / "queries.jsonl", True) for f in folders]
    out: dict[str, str] = {}
    for label, qfile, required in sets:
        if not qfile.is_file():
            if required:
                raise FileNotFoundError(f"evaluation folder {label!r} has no queries.jsonl ({qfile})")
            continue
        for rec in iter_jsonl(qfile, RejectLog(stage="evaluation-queries")):
            key = normalize_text(rec.text)
            if key:
                out.setdefault(key, f"{label}:{rec.id}")
    return out


# ----------------------------------------------------------------------------------------------------------
# Format readers: one row -> one Nyx triple (JSON with absolute image paths), or RecordError
# ----------------------------------------------------------------------------------------------------------


def _text_doc(source: str, title: Any, text: Any) -> dict[str, Any]:
    title = str(title or "").strip()
    body = (" ".join(str(s) for s in text) if isinstance(text, (list, tuple)) else str(text or "")).strip()
    full = f"{title}\n{body}" if title and body else (title or body)
    if not full:
        raise ValueError("empty passage")
    digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:16]
    return {"id": f"{source}:p:{digest}", "content": [{"type": "text", "text": full}]}


def _query(source: str, row_id: str, text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        raise RecordError("query: empty question", record_id=row_id)
    return {"id": f"{source}:{row_id}:query", "content": [{"type": "text", "text": text.strip()}]}


def _row_id(row: dict[str, Any], where: str) -> str:
    rid = row.get("_id", row.get("id"))
    return str(rid) if rid not in (None, "") else where


def research_row(row: Any, where: str, source: str, image_root: Path, fixed: dict[str, int]) -> dict[str, Any]:
    """A research (MMEB / mmE5) row as a triple, with the paper's rules (see the module docstring)."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = _row_id(row, where)
    pos_text = row.get("pos_text")
    if pos_text is None or (isinstance(pos_text, str) and not pos_text.strip()):
        raise RecordError("empty pos_text: row dropped", record_id=rid, location=where)
    qry = row.get("qry")
    has_image = any(str(p).strip() for p in _as_list(row.get("qry_image_path")))
    if isinstance(qry, str) and not has_image and RESEARCH_IMAGE_TOKEN.search(qry):
        row = {**row, "qry": _SPACE.sub(" ", RESEARCH_IMAGE_TOKEN.sub(" ", qry)).strip(), "qry_image_path": None}
        fixed["stray image token removed from a text-only query"] = (
            fixed.get("stray image token removed from a text-only query", 0) + 1
        )
    triple = research_to_triple({**row, "id": rid}, image_root, record_id=rid)
    triple["id"] = f"{source}:{rid}"
    return triple


def triples_row(row: Any, where: str, source: str, base_dir: Path) -> dict[str, Any]:
    """A Nyx triple (image paths relative to ``base_dir``) with absolute image paths; broken negatives are listed
    under ``dropped_negatives``."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = str(row.get("id") or where)
    out: dict[str, Any] = {"id": f"{source}:{rid}", "negatives": [], "dropped_negatives": []}
    for role in ("query", "positive"):
        raw = row.get(role)
        if isinstance(raw, dict) and "id" not in raw and "_id" not in raw:
            raw = {"id": f"{source}:{rid}:{role}", **raw}
        try:
            out[role] = record_from_json(raw, base_dir).to_json(None)
        except RecordError as e:
            raise RecordError(f"{role}: {e.reason}", record_id=rid, location=where) from None
    negs = row.get("negatives") or []
    for i, raw in enumerate(negs if isinstance(negs, list) else []):
        if isinstance(raw, dict) and "id" not in raw and "_id" not in raw:
            raw = {"id": f"{source}:{rid}:neg{i}", **raw}
        try:
            out["negatives"].append(record_from_json(raw, base_dir).to_json(None))
        except RecordError as e:
            out["dropped_negatives"].append(f"negative {i}: {e.reason}")
    return out


def _pairs(value: Any, keys: tuple[str, str]) -> list[tuple[Any, Any]]:
    """HotpotQA's ``[[a, b], ...]`` or the Hugging Face column form ``{keys[0]: [...], keys[1]: [...]}``."""
    if isinstance(value, dict):
        return list(zip(value.get(keys[0]) or [], value.get(keys[1]) or []))
    out = []
    for item in value or []:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((item[0], item[1]))
        else:
            raise ValueError(f"expected [{keys[0]}, {keys[1]}] pairs, got {item!r:.80}")
    return out


def gold_row(fmt: str, row: Any, where: str, source: str) -> dict[str, Any]:
    """A HotpotQA / 2WikiMultihopQA / MuSiQue train row (recipe ``gold``) as a triple."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = _row_id(row, where)
    query = _query(source, rid, row.get("question"))
    try:
        if fmt == "musique":
            paras = [
                (p.get("title"), p.get("paragraph_text"), bool(p.get("is_supporting")))
                for p in row.get("paragraphs") or []
                if isinstance(p, dict)
            ]
        else:
            context = _pairs(row.get("context"), ("title", "sentences"))
            supporting = {str(t) for t, _ in _pairs(row.get("supporting_facts"), ("title", "sent_id"))}
            paras = [(t, s, str(t) in supporting) for t, s in context]
    except (ValueError, TypeError, AttributeError) as e:
        raise RecordError(f"unreadable paragraphs: {e}", record_id=rid, location=where) from None
    if not paras:
        raise RecordError("no paragraphs", record_id=rid, location=where)
    positive, negatives, dropped = None, [], []
    for i, (title, text, is_supporting) in enumerate(paras):
        try:
            doc = _text_doc(source, title, text)
        except ValueError as e:
            if is_supporting and positive is None:
                raise RecordError(f"positive: {e}", record_id=rid, location=where) from None
            dropped.append(f"paragraph {i}: {e}")
            continue
        if is_supporting:
            positive = positive or doc
        else:
            negatives.append(doc)
    if positive is None:
        raise RecordError("no supporting paragraph (unanswerable)", record_id=rid, location=where)
    return {
        "id": f"{source}:{rid}",
        "query": query,
        "positive": positive,
        "negatives": negatives,
        "dropped_negatives": dropped,
    }


def _passage(source: str, doc: Any) -> dict[str, Any]:
    if isinstance(doc, str):
        return _text_doc(source, "", doc)
    if isinstance(doc, dict):
        if doc.get("contents") is not None:  # FlashRAG corpus: '"Title"\ntext'
            title, _, text = str(doc["contents"]).partition("\n")
            if len(title) >= 2 and title.startswith('"') and title.endswith('"') and text:
                return _text_doc(source, title[1:-1], text)
            return _text_doc(source, "", doc["contents"])
        return _text_doc(source, doc.get("title"), doc.get("text"))
    raise ValueError(f"a passage must be a string or an object, got {type(doc).__name__}")


def retrieved_row(row: Any, where: str, source: str) -> dict[str, Any]:
    """A question with ranked pre-retrieved passages (recipe ``retrieved``) as a triple: top-1 positive,
    ranks 11 and below negatives."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}", location=where)
    rid = _row_id(row, where)
    query = _query(source, rid, row.get("question", row.get("qry")))
    docs = row.get("retrieved_docs")
    if docs is None:
        docs = (row.get("output") or {}).get("retrieval_result") if isinstance(row.get("output"), dict) else None
    if docs is None:
        docs = row.get("retrieval_result")
    if not isinstance(docs, list) or not docs:
        raise RecordError(
            "no retrieved passages (retrieved_docs / output.retrieval_result)", record_id=rid, location=where
        )
    try:
        positive = _passage(source, docs[0])
    except ValueError as e:
        raise RecordError(f"positive: {e}", record_id=rid, location=where) from None
    negatives, dropped = [], []
    for rank, doc in enumerate(docs[RETRIEVED_NEGATIVES_FROM_RANK - 1 :], start=RETRIEVED_NEGATIVES_FROM_RANK):
        try:
            negatives.append(_passage(source, doc))
        except ValueError as e:
            dropped.append(f"passage at rank {rank}: {e}")
    return {
        "id": f"{source}:{rid}",
        "query": query,
        "positive": positive,
        "negatives": negatives,
        "dropped_negatives": dropped,
    }


# ----------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Checking a converted source
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SourceCheck:
    """The blocking check of one converted source: each failed rule with its first offending rows."""

    name: str
    rows: int = 0
    expected_rows: tuple[int, int] | None = None
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def fail(self, rule: str, example: str) -> None:
        bucket = self.failures.setdefault(rule, [])
        if len(bucket) < FIRST_N:
            bucket.append(example)

    def describe(self) -> str:
        if self.passed:
            return f"{self.name}: {self.rows} triples, all rules hold"
        return f"{self.name}: " + "; ".join(f"{rule}: {', '.join(ex)}" for rule, ex in self.failures.items())


def _usable(rec: Record) -> bool:
    return any((p.type == "text" and (p.text or "").strip()) or p.type == "image" for p in rec.content)


def check_source(
    src: TrainingSource, paths: DataPaths, eval_queries: dict[str, str], verify: Callable[[str], Any] | None = None
) -> SourceCheck:
    """Every rule of the ``training_sources`` blocking check on the converted file of ``src``: row count within
    ``expected_rows`` (at least one row when none is given), a usable query and positive in every triple, every image
    resolving (``verify``: :func:`nyx.data.images.verify_image`), no negative equal to its positive, and no query
    equal (normalised) to an evaluation query."""
    if verify is None:
        from nyx.data.images import verify_image as verify
    result = SourceCheck(name=src.name, expected_rows=src.expected_rows)
    path = converted_file(paths, src.name)
    if not path.is_file():
        result.fail("converted file missing", str(path))
        return result
    base = path.parent
    checked: dict[str, str | None] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            result.rows += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                result.fail("malformed line", f"line {lineno}: {e}")
                continue
            rid = str(obj.get("id") or f"line {lineno}")
            recs: dict[str, Record] = {}
            for role in ("query", "positive"):
                try:
                    recs[role] = record_from_json(obj.get(role), base)
                except RecordError as e:
                    result.fail(f"unusable {role}", f"{rid} ({e.reason})")
            negs = []
            for i, raw in enumerate(obj.get("negatives") or []):
                try:
                    negs.append(record_from_json(raw, base))
                except RecordError as e:
                    result.fail("unusable negative", f"{rid} negative {i} ({e.reason})")
            for role, rec in recs.items():
                if not _usable(rec):
                    result.fail(f"unusable {role}", f"{rid} (empty)")
            for rec in [*recs.values(), *negs]:
                for img in rec.images:
                    if is_data_url(img):
                        continue
                    if img not in checked:
                        try:
                            verify(img)
                            checked[img] = None
                        except (RecordError, OSError) as e:
                            checked[img] = str(getattr(e, "reason", e))
                    if checked[img] is not None:
                        result.fail("image does not resolve", f"{rid} ({os.path.basename(img)}: {checked[img]})")
            if "positive" in recs:
                pos_key = content_key(recs["positive"])
                for i, neg in enumerate(negs):
                    if content_key(neg) == pos_key or neg.id == recs["positive"].id:
                        result.fail("negative equals the positive", f"{rid} negative {i}")
            if "query" in recs:
                hit = eval_queries.get(normalize_text(recs["query"].text))
                if hit:
                    result.fail("evaluation query in training source", f"{rid} = {hit} ({recs['query'].text[:80]!r})")
    lo, hi = src.expected_rows or (1, None)
    if result.rows < lo or (hi is not None and result.rows > hi):
        result.failures = {
            f"row count {result.rows} outside expected {lo}..{hi if hi is not None else 'any'}": [
                f"{result.rows} triples"
            ],
            **result.failures,
        }
    return result


__all__ = [
    "CODE_VERSION",
    "SourceCheck",
    "SourceStats",
    "check_source",
    "convert_source",
    "converted_file",
    "evaluation_queries",
    "normalize_text",
    "resolve_path",
]
