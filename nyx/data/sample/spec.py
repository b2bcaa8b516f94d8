"""A generated document as data, before any pixel is drawn: :class:`DocSpec` (paragraphs, images, facts),
:class:`ImageSpec` (what to draw) and :class:`DocGen`, the seeded helper the family builders write with."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from nyx.data.sample.render import RENDERERS
from nyx.data.sample.vocabulary import BOILERPLATE


@dataclass(frozen=True)
class ImageSpec:
    """What to draw: a renderer name and its (JSON-friendly) arguments."""

    kind: str
    args: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, kind: str, **args: Any) -> ImageSpec:
        return cls(kind, tuple(sorted(args.items())))

    def render(self) -> Image.Image:
        return RENDERERS[self.kind](**dict(self.args))


@dataclass
class DocSpec:
    """One synthetic web document: ordered text paragraphs and images, plus its facts."""

    id: str
    family: str
    title: str
    url: str
    items: list[str | ImageSpec] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [x for x in self.items if isinstance(x, str)]

    @property
    def images(self) -> list[ImageSpec]:
        return [x for x in self.items if isinstance(x, ImageSpec)]

    def fact(
        self, entity: str, attribute: str, value: Any, where: str, statement: str, image: ImageSpec | None = None
    ) -> None:
        """Record a fact; ``statement`` holds ``___`` where the value goes (a ready cloze)."""
        assert "___" in statement and where in ("text", "image", "text+image")
        self.facts.append(
            {
                "entity": entity,
                "attribute": attribute,
                "value": str(value),
                "where": where,
                "image_index": self.images.index(image) if image is not None else None,
                "statement": statement,
            }
        )


class DocGen:
    """Per-document helpers around a seeded ``random.Random``."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._used: dict[int, set[int]] = {}

    def images(self, text_only: bool, probs: dict[str, float]) -> set[str]:
        """Which optional images this document shows (at least one, the first key, unless text-only)."""
        if text_only:
            return set()
        chosen = {k for k, p in probs.items() if self.rng.random() < p}
        return chosen or {next(iter(probs))}

    def pick(self, seq: list[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def sample(self, seq: list[Any], k: int) -> list[Any]:
        return self.rng.sample(seq, k)

    def para(self, pool: list[str], k: int, **slots: Any) -> str:
        """``k`` plus one or two filler sentences from ``pool``, none repeated within the document
        (until the pool runs out), with ``[a|b]`` alternatives chosen and ``{slots}`` filled."""
        used = self._used.setdefault(id(pool), set())
        out = []
        for _ in range(k + self.rng.randint(1, 2)):
            free = [i for i in range(len(pool)) if i not in used]
            if not free:
                used.clear()
                free = list(range(len(pool)))
            i = free[self.rng.randrange(len(free))]
            used.add(i)
            out.append(_ALT.sub(lambda m: self.pick(m.group(1).split("|")), pool[i]).format(**slots))
        return " ".join(out)

    def boilerplate(self) -> str:
        """The page furniture every web document carries (shared by all families)."""
        return " ".join(s.format(n=self.rng.randint(0, 48)) for s in self.sample(BOILERPLATE, 3))


_ALT = re.compile(r"\[([^\[\]]+)\]")


def fmt_int(n: int) -> str:
    return f"{n:,}"


def distinct_max(g: DocGen, n: int, lo: int, hi: int) -> list[int]:
    """n values in [lo, hi] with a unique maximum (so 'the highest bar' is well defined)."""
    while True:
        vals = [g.rng.randint(lo, hi) for _ in range(n)]
        if vals.count(max(vals)) == 1:
            return vals
