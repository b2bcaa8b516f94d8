"""The whole corpus as data: unique names for every document, documents per family, each document built from its
own seeded generator, in a fixed shuffled order (:func:`build_corpus`), and its texts alone (:func:`sample_texts`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nyx.data.sample.families import build_festival, build_product, build_roadtrip, build_species, build_town
from nyx.data.sample.spec import DocGen, DocSpec
from nyx.data.sample.vocabulary import (
    BIRD_ADJS,
    BIRD_NOUNS,
    BRANDS,
    FESTIVAL_KINDS,
    PRODUCT_TYPES,
    TOWN_HEADS,
    TOWN_TAILS,
)

DEFAULT_N_DOCS = 300

# ----------------------------------------------------------------------------------------------------------
# Names (unique across the whole corpus)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Names:
    towns: list[str]
    villages: list[str]
    products: list[tuple[str, str, str]]  # (brand, model, type)
    birds: list[str]
    festivals: list[tuple[str, str]]  # (place, kind)


def _names(seed: int, counts: dict[str, int]) -> _Names:
    rng = random.Random(f"nyx-sample:{seed}:names")
    places = [h + t for h in TOWN_HEADS for t in TOWN_TAILS]
    rng.shuffle(places)
    n_t, n_v, n_f = counts["town"], counts["roadtrip"], counts["festival"]
    if n_t + n_v + n_f > len(places):
        raise ValueError(f"too many documents for the name pool ({len(places)} place names)")
    towns, villages = places[:n_t], places[n_t : n_t + n_v]
    festivals = [(p, FESTIVAL_KINDS[rng.randrange(len(FESTIVAL_KINDS))]) for p in places[n_t + n_v : n_t + n_v + n_f]]
    models = [
        (b, f"{chr(65 + a)}{d}", t) for b in BRANDS for a in range(26) for d in range(1, 10) for t in PRODUCT_TYPES
    ]
    products: list[tuple[str, str, str]] = []
    used_models: set[tuple[str, str]] = set()
    while len(products) < counts["product"]:
        b, m, t = models[rng.randrange(len(models))]
        if (b, m) not in used_models:
            used_models.add((b, m))
            products.append((b, m, t))
    birds = [f"{a} {n}" for a in BIRD_ADJS for n in BIRD_NOUNS]
    rng.shuffle(birds)
    if counts["species"] > len(birds):
        raise ValueError(f"too many species documents for the name pool ({len(birds)} names)")
    return _Names(towns, villages, products, birds[: counts["species"]], festivals)


# ----------------------------------------------------------------------------------------------------------
# The corpus as data
# ----------------------------------------------------------------------------------------------------------

FAMILY_SHARES = {"town": 0.25, "product": 0.25, "species": 0.2, "festival": 0.15, "roadtrip": 0.15}
TEXT_ONLY_SHARE = 0.27  # of the non-road-trip documents


def _family_counts(n_docs: int) -> dict[str, int]:
    """Documents per family: two each at least (a document names a rival of its family), the rest by share; three
    products at least (a review compares its product with two rivals), the third taken from the road trips (which
    name no rival) when the shares give fewer, as they do for 10 and 11 documents only."""
    rest = n_docs - 2 * len(FAMILY_SHARES)
    counts = {f: 2 + int(rest * s) for f, s in FAMILY_SHARES.items()}
    fams = list(FAMILY_SHARES)
    i = 0
    while sum(counts.values()) < n_docs:
        counts[fams[i % len(fams)]] += 1
        i += 1
    if counts["product"] < 3:
        counts["product"] += 1
        counts["roadtrip"] -= 1
    return counts


def build_corpus(seed: int = 0, n_docs: int = DEFAULT_N_DOCS) -> list[DocSpec]:
    """The whole synthetic corpus as :class:`DocSpec` s (no images rendered), in a fixed shuffled order."""
    if n_docs < 10:
        raise ValueError("n_docs must be at least 10 (two documents per family)")
    counts = _family_counts(n_docs)
    names = _names(seed, counts)

    def gen(family: str, i: int) -> DocGen:
        return DocGen(random.Random(f"nyx-sample:{seed}:{family}:{i}"))

    def text_only(g: DocGen) -> bool:
        return g.rng.random() < TEXT_ONLY_SHARE

    product_names = [f"{b} {m} {t}" for b, m, t in names.products]
    festival_names = [f"{p} {k}" for p, k in names.festivals]
    docs: list[DocSpec] = []
    builders: list[tuple[str, int, Callable[[DocSpec, DocGen], None], str]] = []
    for i, town in enumerate(names.towns):
        others = [t for t in names.towns if t != town]
        builders.append(
            (
                "town",
                i,
                lambda d, g, town=town, others=others: build_town(d, g, town, others, text_only(g)),  # type: ignore[misc]
                f"https://wanderlore.example/towns/{town.lower()}",
            )
        )
    for i, (b, m, t) in enumerate(names.products):
        rivals = [p for p in product_names if p != f"{b} {m} {t}"]
        builders.append(
            (
                "product",
                i,
                lambda d, g, b=b, m=m, t=t, rivals=rivals: build_product(d, g, b, m, t, rivals, text_only(g)),  # type: ignore[misc]
                f"https://gadgetbench.example/reviews/{b.lower()}-{m.lower()}",
            )
        )
    for i, bird in enumerate(names.birds):
        rivals = [x for x in names.birds if x != bird]
        builders.append(
            (
                "species",
                i,
                lambda d, g, bird=bird, rivals=rivals: build_species(d, g, bird, names.towns, rivals, text_only(g)),  # type: ignore[misc]
                f"https://birdline.example/species/{bird.lower().replace(' ', '-')}",
            )
        )
    for i, (place, fest) in enumerate(zip([p for p, _ in names.festivals], festival_names)):
        rivals = [x for x in festival_names if x != fest]
        builders.append(
            (
                "festival",
                i,
                lambda d, g, fest=fest, rivals=rivals: build_festival(d, g, fest, rivals, text_only(g)),  # type: ignore[misc]
                f"https://events.example/{place.lower()}",
            )
        )
    for i, village in enumerate(names.villages):
        builders.append(
            (
                "roadtrip",
                i,
                lambda d, g, village=village, day=i + 1: build_roadtrip(d, g, village, day),  # type: ignore[misc]
                f"https://slowmiles.example/day-{i + 1}",
            )
        )
    for family, i, build, url in builders:
        g = gen(family, i)
        doc = DocSpec(id=f"sample-{family}-{i:03d}", family=family, title="", url=url)
        build(doc, g)
        doc.title = doc.texts[0]
        docs.append(doc)
    random.Random(f"nyx-sample:{seed}:order").shuffle(docs)
    return docs


def sample_texts(seed: int = 0, n_docs: int = DEFAULT_N_DOCS) -> Iterator[str]:
    """Every text segment of the sample corpus, in corpus order, without rendering or writing anything.

    Exactly the non-null ``texts`` entries that :func:`generate_sample` writes with the same arguments
    (for tokenizer training). The signature is stable.
    """
    for doc in build_corpus(seed, n_docs):
        yield from doc.texts
