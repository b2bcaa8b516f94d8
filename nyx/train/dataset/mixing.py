"""Mixing sources into the training set.

:func:`build_training_set` takes each source's examples, keeps at most ``cap`` (seeded subsample), scales by
``weight`` (whole copies plus a seeded remainder: 0.5 keeps half, 2.0 doubles) and concatenates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nyx.data.rejects import RejectLog
from nyx.train.config import SourceConfig
from nyx.train.dataset.examples import TrainingExample
from nyx.train.dataset.loading import load_source
from nyx.train.dataset.negatives import fill_negatives


def apply_cap_and_weight(
    examples: Sequence[TrainingExample], cap: int | None, weight: float, rng: random.Random
) -> list[TrainingExample]:
    """At most ``cap`` examples (seeded subsample, order kept), then ``weight`` x as many (copies + remainder)."""
    items = list(examples)
    if cap is not None and len(items) > cap:
        keep = sorted(rng.sample(range(len(items)), cap))
        items = [items[i] for i in keep]
    whole, frac = divmod(weight, 1.0)
    out = items * int(whole)
    extra = round(frac * len(items))
    if extra:
        keep = sorted(rng.sample(range(len(items)), extra))
        out += [items[i] for i in keep]
    return out


@dataclass
class TrainingSet:
    """The mixed examples and, per source, how many were loaded and how many entered the mix."""

    examples: list[TrainingExample]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def build_training_set(sources: Iterable[SourceConfig], n_negatives: int, seed: int, rejects: RejectLog) -> TrainingSet:
    """Load, fill negatives, cap and weight every source; concatenate in configuration order (seeded)."""
    examples: list[TrainingExample] = []
    counts: dict[str, dict[str, int]] = {}
    for i, cfg in enumerate(sources):
        if cfg.name in counts:
            raise ValueError(f"two training sources are named {cfg.name!r}")
        rng = random.Random(f"{seed}:{i}:{cfg.name}")
        loaded = load_source(cfg, rejects)
        filled = fill_negatives(loaded, n_negatives, rng, rejects)
        mixed = apply_cap_and_weight(filled, cfg.cap, cfg.weight, rng)
        counts[cfg.name] = {"loaded": len(loaded), "usable": len(filled), "mixed": len(mixed)}
        examples.extend(mixed)
    if not examples:
        raise ValueError(
            f"no usable training examples in {list(counts)} ({rejects.count} rejected: {rejects.reasons()})"
        )
    return TrainingSet(examples, counts)
