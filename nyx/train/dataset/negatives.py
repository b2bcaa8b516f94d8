"""Hard negatives: every example gets exactly ``n_negatives`` real ones.

Every example ends up with exactly ``n_negatives`` hard negatives: its own (valid, de-duplicated, seeded
choice) first, then, when it has too few (none mined, broken references, empty records), other *real*
negatives drawn from the same source's pool. A replacement is never the positive, never another document
judged relevant to the query, and never a duplicate. Examples that cannot be filled are recorded in the
:class:`~nyx.data.rejects.RejectLog` and never stop the run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.train.dataset.examples import TrainingExample, content_key


def fill_negatives(
    examples: Sequence[TrainingExample], n_negatives: int, rng: random.Random, rejects: RejectLog
) -> list[TrainingExample]:
    """Give every example exactly ``n_negatives`` negatives (see the module docstring).

    The pool is every distinct negative of ``examples`` (one source). Own negatives that duplicate the
    positive's content or each other are dropped; shortfalls are drawn from the pool excluding the positive
    (by id and content), documents in ``exclude`` and negatives already chosen. Examples that cannot be
    filled go to ``rejects``.
    """
    pool: list[Record] = []
    seen: set[tuple] = set()
    for ex in examples:
        for neg in ex.negatives:
            key = content_key(neg)
            if key not in seen:
                seen.add(key)
                pool.append(neg)
    out = []
    for ex in examples:
        banned_ids = set(ex.exclude) | {ex.positive.id}
        banned_keys = {content_key(ex.positive)}

        def usable(r: Record) -> bool:
            return r.id not in banned_ids and content_key(r) not in banned_keys  # noqa: B023

        own = []
        for neg in ex.negatives:
            if usable(neg):
                own.append(neg)
                banned_keys.add(content_key(neg))
            elif content_key(neg) == content_key(ex.positive) or neg.id in banned_ids:
                rejects.add(
                    RecordError(
                        f"negative {neg.id!r} equals the positive or a relevant document: replaced",
                        record_id=ex.query.id,
                    )
                )
        chosen = rng.sample(own, n_negatives) if len(own) > n_negatives else own
        if len(chosen) < n_negatives:
            need = n_negatives - len(chosen)
            picked_keys = {content_key(r) for r in chosen}
            candidates = [r for r in pool if usable(r) and content_key(r) not in picked_keys]
            if len(candidates) < need:
                rejects.add(
                    RecordError(
                        f"only {len(chosen) + len(candidates)} usable negatives for "
                        f"{n_negatives} required (source {ex.source!r})",
                        record_id=ex.query.id,
                    )
                )
                continue
            chosen = chosen + rng.sample(candidates, need)
        out.append(TrainingExample(ex.query, ex.positive, tuple(chosen), ex.source, ex.exclude))
    return out
