"""The blocking check of a converted training source (the ``training_sources`` asset check): row count, usable
queries and positives, images that resolve, no negative equal to its positive, and no evaluation query
(:mod:`nyx.train.sources.leakage`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nyx.data.records import Record, is_data_url, record_from_json
from nyx.data.rejects import RecordError
from nyx.train.dataset import content_key
from nyx.train.sources.layout import converted_file
from nyx.train.sources.leakage import normalize_text

if TYPE_CHECKING:
    from nyx.paths import DataPaths
    from nyx.settings import TrainingSource

#: how many offending rows a failed check names
FIRST_N = 5


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
        from nyx.data.images import verify_image

        verify = verify_image
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
