"""The bundled sample corpus. IT IS SYNTHETIC: every town, product, species, festival and number in it is
invented by this module from a seeded random generator; none of it describes the real world.

It stands in for OBELICS web documents so that the whole pipeline (chunking, QA synthesis, training,
retrieval, evaluation) runs offline on a laptop, and it is built so that retrieval quality is measurable:

* five families of web-page-like documents (town guides, product reviews, bird field notes, festival pages,
  road-trip blog posts), dozens of documents per family written from the same templates: they share most of
  their vocabulary and differ in specific facts (names, numbers, colours), so they compete with each other;
* documents interleave several paragraphs with PIL-rendered images (bar charts with printed values, signs
  and posters with text, flags, coloured devices and birds, counted objects);
* some facts are stated only in an image (a chart's value, a sign's population), some only in the text, and
  some need both (the text names what a picture shows, only the picture shows its colour); road-trip posts
  name their village only on a photographed sign; about a quarter of the documents are text-only variants;
* every document lists its facts in ``metadata["facts"]`` with where each is stated and a cloze statement,
  so question generators and tests can target them.

Output (``generate_sample``): ``shard-0000k.parquet`` files in the OBELICS layout (``id``, ``url``, ``texts``,
``images``, ``metadata``) and ``images/*.png`` beside them, referenced by relative path. The output is
byte-identical on every run with the same seed and library versions (PNG written without metadata at fixed
settings, Parquet without timestamps, everything in a fixed order).

CLI: ``python -m nyx.data.sample --out data/raw [--n-docs 300] [--seed 0] [--shards 3]``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image, ImageDraw, ImageFont

DEFAULT_N_DOCS = 300
DEFAULT_SHARDS = 3
SHARD_NAME = "shard-{:05d}.parquet"
IMAGES_DIR = "images"

# ----------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 36, 36), "orange": (236, 128, 20), "yellow": (236, 204, 30), "green": (40, 150, 60),
    "teal": (20, 140, 140), "blue": (36, 80, 200), "purple": (120, 50, 160), "pink": (232, 110, 170),
    "brown": (120, 76, 40), "black": (24, 24, 24), "grey": (128, 128, 128), "white": (250, 250, 250),
}
DARK_COLOURS = [c for c in COLOURS if c not in ("white", "yellow")]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
MONTH_NAMES = {"Jan": "January", "Feb": "February", "Mar": "March", "Apr": "April", "May": "May", "Jun": "June",
               "Jul": "July", "Aug": "August", "Sep": "September", "Oct": "October", "Nov": "November",
               "Dec": "December"}

TOWN_HEADS = ["Var", "Ost", "Bel", "Cor", "Dun", "Elm", "Fen", "Gal", "Hal", "Ivr", "Jor", "Kel", "Lun", "Mar",
              "Nor", "Pel", "Quen", "Ros", "Sel", "Tor", "Ul", "Ven", "Wes", "Yar", "Zel", "Ash", "Bram", "Cal",
              "Dor", "Esk", "Grim", "Hart", "Lind", "Mort", "Rav", "Stan", "Thal", "Wyn"]
TOWN_TAILS = ["holm", "mere", "ford", "wick", "by", "stead", "bridge", "haven", "dale", "thorpe", "burgh",
              "field", "moor", "port", "ton", "combe", "ley", "well"]
RIVER_NAMES = ["Alder", "Brisk", "Calder", "Dane", "Eske", "Frome", "Greta", "Hodder", "Irwell", "Kennet",
               "Lune", "Mease", "Nidd", "Ouse", "Rother", "Swale", "Teme", "Ure", "Wharfe", "Yeo"]
EXPORTS = ["wool", "cheese", "cider", "slate", "timber", "pottery", "glassware", "honey", "linen", "barley",
           "copper wire", "rope", "paper", "salt", "leather"]
BRANDS = ["Zentro", "Aurix", "Kalvo", "Brisa", "Nordel", "Quillon", "Vexa", "Lumio", "Tarka", "Omnel", "Pexar",
          "Solvi"]
PRODUCT_TYPES = ["kettle", "blender", "desk lamp", "air purifier", "robot vacuum", "coffee grinder", "e-reader",
                 "bike light", "smart speaker", "rice cooker"]
BIRD_ADJS = ["Silver-crested", "Amber-winged", "Dusky", "Spotted", "Long-tailed", "Marsh", "Crimson-throated",
             "Pale", "Banded", "Highland", "Lesser", "Greater", "Ringed", "Sooty"]
BIRD_NOUNS = ["tamberling", "warbleck", "finchet", "moorlark", "reedwren", "thistlebill", "curlet", "brambler",
              "sedgepipit"]
HABITATS = ["reed beds", "upland heath", "coastal dunes", "beech woodland", "wet meadows", "river shingle",
            "pine forest", "chalk grassland", "salt marsh", "hedgerows"]
STATUSES = ["least concern", "near threatened", "vulnerable", "endangered"]
FESTIVAL_KINDS = ["Lantern Festival", "Jazz Weekend", "Harvest Fair", "Kite Festival", "Film Days",
                  "Folk Gathering", "Chili Cook-off", "Light Parade"]
PERFORMERS_A = ["The", "Little", "Midnight", "Electric", "Paper", "Velvet", "Northern", "Silver", "Wild", "Hollow"]
PERFORMERS_B = ["Foxes", "Lanterns", "Tides", "Orchard", "Sparrows", "Engines", "Comets", "Harbour", "Pines",
                "Ravens"]
FIRST_NAMES = ["Ada", "Bruno", "Clara", "Dev", "Elif", "Finn", "Greta", "Hugo", "Iris", "Jonas", "Kira", "Leo",
               "Mina", "Nico", "Olga", "Pavel", "Rosa", "Sami", "Tessa", "Umar", "Vera", "Wim"]
ANIMALS = ["fox", "owl", "heron", "badger", "otter", "hare", "stag", "swan", "salmon", "wolf"]
VENUES = ["the harbour front", "the old mill yard", "the castle green", "the market square", "the riverside park",
          "the cathedral close", "the showground", "the town hall gardens"]
CURRENCY = "$"  # the bundled font has no euro sign


# ----------------------------------------------------------------------------------------------------------
# Data model of a generated document (no pixels yet)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """What to draw: a renderer name and its (JSON-friendly) arguments."""

    kind: str
    args: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, kind: str, **args: Any) -> "ImageSpec":
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

    def fact(self, entity: str, attribute: str, value: Any, where: str, statement: str,
             image: ImageSpec | None = None) -> None:
        """Record a fact; ``statement`` holds ``___`` where the value goes (a ready cloze)."""
        assert "___" in statement and where in ("text", "image", "text+image")
        self.facts.append({"entity": entity, "attribute": attribute, "value": str(value), "where": where,
                           "image_index": self.images.index(image) if image is not None else None,
                           "statement": statement})


class _Gen:
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


def _fmt_int(n: int) -> str:
    return f"{n:,}"


# ----------------------------------------------------------------------------------------------------------
# Sentence pools (shared by all documents of a family: the competition between documents)
# ----------------------------------------------------------------------------------------------------------

TOWN_FILLER = [
    "A [small|lively|quiet] farmers' market runs on the first Sunday of each month.",
    "The [bus station|railway halt|ferry landing] is a short walk from the main square.",
    "[Families|Day trippers|Hikers] often stop for lunch in one of the riverside inns.",
    "The [stone|timber|brick] almshouses near the church date from the seventeenth century.",
    "Parking is [free|cheap|limited] near the sports ground on the edge of town.",
    "Many streets are named after [merchants|engineers|poets] who lived here.",
    "On clear evenings the hills beyond {neighbour} are visible from the churchyard.",
    "The town's [brass band|choir|amateur theatre] performs in the park in summer.",
    "The old market square still hosts a weekly fair where farmers sell produce from the surrounding valleys.",
    "Cyclists follow the towpath along the river, which passes three stone bridges within the town limits.",
    "Most visitors arrive by the regional train, which stops here four times a day in summer.",
    "The parish church has a square tower that can be climbed on Saturday afternoons.",
    "Narrow lanes behind the high street are lined with workshops, bakeries and small guest houses.",
    "A local history museum occupies the former customs house near the quay.",
    "Walkers praise the circular trail that climbs to a viewpoint above the rooftops.",
    "Like {neighbour}, the town grew quickly when the railway arrived in the nineteenth century.",
    "The road to {neighbour} crosses open farmland and takes about twenty minutes by car.",
    "Every autumn the town competes with {neighbour} in a friendly rowing race on the river.",
    "The weekly newspaper has been printed in the same building for over a century.",
    "Guest houses fill quickly during the spring walking season, so booking ahead is wise.",
    "The town council meets in a timber-framed hall that survived two great fires.",
    "Several footpaths lead out of town toward orchards, woodland and old quarries.",
    "Residents are proud of the library, which was funded by a public subscription.",
    "The covered market was rebuilt in iron and glass after a storm destroyed the old roof.",
    "Local cafés serve a spiced bun that residents claim was invented here.",
    "In winter the main street is decorated with lights paid for by local shop owners.",
]
PRODUCT_FILLER = [
    "In everyday use it [impressed us|did the job|held up well], with no faults during testing.",
    "The [indicator light|display|status ring] is easy to read even in bright sunlight.",
    "We found the [noise level|start-up time|standby drain] acceptable for the price.",
    "Its footprint is [compact|modest|a little large] for a small kitchen or desk.",
    "Firmware updates arrived [twice|once|three times] during our test period.",
    "The [matte|glossy|textured] finish hides scratches better than we expected.",
    "If you are choosing between this and the {rival}, think about how often you will use it.",
    "Several [readers|owners|colleagues] reported the same experience in the comments.",
    "Setting it up took only a few minutes, and the quick-start guide was clear.",
    "The controls are simple: one dial, two buttons and a small status light.",
    "Build quality feels solid, although the base picks up fingerprints easily.",
    "We used it daily for three weeks in a small flat and a busy shared kitchen.",
    "Compared with the {rival}, it is quieter but slightly slower.",
    "Owners of the older {rival} will notice the improved handle and lid.",
    "The packaging is mostly cardboard, with very little plastic.",
    "Cleaning is easy because the removable parts are dishwasher safe.",
    "The companion app is optional; everything works from the buttons alone.",
    "Customer support answered our question within a day.",
    "Our testers liked the muted design, which fits most rooms.",
    "Replacement parts are sold separately on the manufacturer's website.",
    "At full power it draws more current than most rivals in its class.",
    "The cable is long enough to reach a socket across a narrow worktop.",
    "Many readers asked how it compares with the {rival}; see the chart for our measurements.",
    "The manual lists a two-step descaling routine that we recommend monthly.",
]
BIRD_FILLER = [
    "Numbers [rise|fall|fluctuate] with the severity of the winter.",
    "The [eggs hatch|young fledge|adults moult] in late summer, later than in most songbirds.",
    "A [telescope|pair of binoculars|long lens] helps, as the bird is shy.",
    "Local [naturalists|farmers|rangers] have added nest boxes along the [river|hedges|woodland edge].",
    "The species was first described by a [parson|schoolteacher|ship's surgeon] in the nineteenth century.",
    "Its flight call resembles that of the {rival}, but is higher pitched.",
    "Surveys near {town} found it [more common|less common|as common] than expected.",
    "Both sexes look alike, although juveniles are duller.",
    "Observers usually hear it before they see it: the call is a dry, repeated chatter.",
    "It feeds on insects in summer and switches to seeds and berries in winter.",
    "Pairs are territorial during the breeding season and chase away rivals.",
    "The nest is a neat cup of grass and moss, hidden low in dense vegetation.",
    "Young birds leave the nest after about two weeks but are fed for several more days.",
    "It is easily confused with the {rival}, which has a shorter tail and a plainer face.",
    "Birders near {town} report it most often at dawn along the edges of fields.",
    "Ringing studies show that some individuals return to the same site every year.",
    "In flight it shows a pale rump and rounded wings.",
    "Migration takes place at night, in small loose flocks.",
    "Volunteers count the species every spring along fixed survey routes.",
    "Like the {rival}, it has benefited from the restoration of wetland habitat.",
    "Its song is a short descending phrase repeated from a high perch.",
    "Predators include sparrowhawks, stoats and domestic cats.",
    "Photographers should keep their distance from active nests.",
]
FESTIVAL_FILLER = [
    "Doors open at [noon|ten in the morning|two in the afternoon] on each day of the event.",
    "The [main stage|big top|open-air arena] holds several thousand people.",
    "Campers are asked to [leave no trace|share water points|keep noise down after midnight].",
    "Press passes must be requested [two weeks|a month|ten days] in advance.",
    "Compared with the {rival}, the queues at the gates are usually short.",
    "A [craft market|book fair|flea market] runs alongside the main programme.",
    "Children under twelve enter free when accompanied by an adult.",
    "Photographs from last year's event are on display in the town library.",
    "Food stalls line the main route, with local bakers and cheese makers well represented.",
    "Volunteers run the information tent and hand out printed programmes.",
    "The organisers ask visitors to arrive by bus or bicycle, as parking is limited.",
    "Families can join free workshops in the afternoon before the evening shows.",
    "Last year the event was compared with the {rival}, which draws a similar crowd.",
    "Weather permitting, the closing night ends with a procession along the water.",
    "Tickets usually sell out several weeks before the opening day.",
    "All stages are step-free, and quiet areas are available for those who need them.",
    "Local schools contribute decorations made in art classes during the spring term.",
    "A shuttle bus connects the railway station with the main entrance.",
    "Regular visitors recommend bringing a blanket and a warm jumper for the evenings.",
    "Profits are shared between local charities and next year's programme.",
    "Unlike the {rival}, the programme mixes well-known acts with first-time performers.",
    "Reusable cups are provided at every bar to reduce waste.",
]
TRIP_FILLER = [
    "The [map|guidebook|satnav] was wrong about the road again, so we took the long way round.",
    "We shared a [thermos of tea|bag of apples|box of pastries] at a picnic spot above the valley.",
    "{companion} found a [second-hand bookshop|flea market|tiny museum] and we lost an hour there.",
    "The car park was [empty|full of tractors|flooded], so we left the car by the church.",
    "[Rain|Fog|Wind] followed us for most of the afternoon.",
    "We met a cyclist who had ridden all the way from the coast.",
    "A sign warned of [sheep|deer|cattle] on the road for the next five miles.",
    "{companion} kept a list of every bridge we crossed; the count reached [eleven|fourteen|nine].",
    "We left early to avoid the traffic and stopped for coffee at a roadside kiosk.",
    "The road wound through sheep pastures and patches of pine forest.",
    "{companion} took over the driving after lunch while I navigated with a paper map.",
    "The weather changed three times in one afternoon, from sunshine to hail and back.",
    "We found a tiny bakery that sold out of bread before ten in the morning.",
    "There was no phone signal for most of the day, which turned out to be a blessing.",
    "A farmer waved us through a gate while his dog herded a few stray lambs.",
    "We camped by a stream and cooked pasta on the little gas stove.",
    "The car's fan belt squeaked all day, but it held out until the next garage.",
    "Locals recommended a detour along the coast road, and they were right.",
    "{companion} insisted on stopping at every viewpoint, so progress was slow.",
    "Dinner was a bowl of soup in a pub that had a fire burning even in June.",
    "We bought postcards and realised we had no stamps, as usual.",
    "Tomorrow we head further north, toward the hills and the lakes.",
]
BOILERPLATE = [
    "Comments ({n}). Sign in to join the discussion.",
    "Subscribe to our weekly newsletter for more stories like this one.",
    "This page uses cookies to remember your preferences.",
    "Share this page with a friend or save it for later.",
    "Photos are by our staff unless stated otherwise.",
    "Found a mistake? Let our editors know using the contact form.",
    "Related articles are listed in the sidebar.",
    "Last updated by the editorial team; {n} readers found this useful.",
]


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
    towns, villages = places[:n_t], places[n_t:n_t + n_v]
    festivals = [(p, FESTIVAL_KINDS[rng.randrange(len(FESTIVAL_KINDS))]) for p in places[n_t + n_v:n_t + n_v + n_f]]
    models = [(b, f"{chr(65 + a)}{d}", t) for b in BRANDS for a in range(26) for d in range(1, 10)
              for t in PRODUCT_TYPES]
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
    return _Names(towns, villages, products, birds[:counts["species"]], festivals)


# ----------------------------------------------------------------------------------------------------------
# Document builders, one per family
# ----------------------------------------------------------------------------------------------------------


def _distinct_max(g: _Gen, n: int, lo: int, hi: int) -> list[int]:
    """n values in [lo, hi] with a unique maximum (so 'the highest bar' is well defined)."""
    while True:
        vals = [g.rng.randint(lo, hi) for _ in range(n)]
        if vals.count(max(vals)) == 1:
            return vals


def _town(doc: DocSpec, g: _Gen, name: str, others: list[str], text_only: bool) -> None:
    founded = g.rng.randint(1150, 1890)
    population = g.rng.randint(18, 2400) * 100
    river = g.pick(RIVER_NAMES)
    export = g.pick(EXPORTS)
    twin = g.pick(others)
    neighbour = g.pick(others)
    elevation = g.rng.randint(5, 900)
    flag = g.sample(DARK_COLOURS + ["white", "yellow"], 2)
    layout = g.pick(["horizontal", "vertical", "cross"])
    months = MONTHS[g.rng.randrange(0, 7):][:6]
    rain = _distinct_max(g, 6, 20, 190)
    wettest = months[rain.index(max(rain))]
    site = g.pick(["Wanderlore", "Townbook", "The Byways Guide", "Atlas of Small Towns"])
    fill = dict(neighbour=neighbour)
    doc.items.append(f"{name} | {site}")
    doc.items.append(
        f"{name} is a market town on the River {river}, founded in {founded}. "
        f"It lies at an elevation of {elevation} metres and is twinned with {twin}. "
        + g.para(TOWN_FILLER, 2, **fill))
    doc.fact(name, "founded", founded, "text", f"{name} was founded in ___.")
    doc.fact(name, "river", river, "text", f"{name} is a market town on the River ___.")
    doc.fact(name, "twin town", twin, "text", f"{name} is twinned with ___.")
    doc.fact(name, "elevation", f"{elevation} metres", "text", f"{name} lies at an elevation of ___.")
    doc.items.append(
        f"For centuries the town's wealth came from {export}, and the trade still employs many families. "
        + g.para(TOWN_FILLER, 3, **fill))
    doc.fact(name, "main export", export, "text", f"The wealth of {name} came from ___.")
    shown = g.images(text_only, {"rain_chart": 0.55, "sign": 0.45, "flag": 0.45})
    if "sign" not in shown:
        doc.items.append(f"According to the last census, {name} has a population of {_fmt_int(population)}. "
                         + g.para(TOWN_FILLER, 2, **fill))
        doc.fact(name, "population", _fmt_int(population), "text", f"{name} has a population of ___.")
    else:
        sign = ImageSpec.of("sign", lines=[f"WELCOME TO {name.upper()}", f"POP. {_fmt_int(population)}",
                                           f"EST. {founded}"], colour=g.pick(["green", "blue", "brown"]))
        doc.items.append("The sign at the northern entrance to the town greets drivers coming off the main road.")
        doc.items.append(sign)
        doc.fact(name, "population", _fmt_int(population), "image",
                 f"The town sign of {name} gives its population as ___.", sign)
    if "flag" not in shown:
        doc.items.append(f"The flag of {name} is {flag[0]} and {flag[1]}, in {layout} stripes. "
                         + g.para(TOWN_FILLER, 2, **fill))
        doc.fact(name, "flag colours", f"{flag[0]} and {flag[1]}", "text", f"The flag of {name} is ___.")
    else:
        flag_img = ImageSpec.of("flag", colours=flag, layout=layout)
        doc.items.append(f"The town flag, shown below, flies above the council hall on market days. "
                         + g.para(TOWN_FILLER, 1, **fill))
        doc.items.append(flag_img)
        doc.fact(name, "flag colours", f"{flag[0]} and {flag[1]}", "text+image",
                 f"The flag of {name} is ___.", flag_img)
    if "rain_chart" not in shown:
        doc.items.append(f"Rainfall peaks in {MONTH_NAMES[wettest]}, with about {max(rain)} mm. "
                         + g.para(TOWN_FILLER, 2, **fill))
        doc.fact(name, "wettest month", MONTH_NAMES[wettest], "text", f"Rainfall in {name} peaks in ___.")
        doc.fact(name, f"rainfall in {MONTH_NAMES[wettest]}", f"{max(rain)} mm", "text",
                 f"In {MONTH_NAMES[wettest]}, {name} gets about ___ of rain.")
    else:
        chart = ImageSpec.of("bar_chart", title=f"Monthly rainfall in {name} (mm)", labels=months, values=rain,
                             colour=g.pick(["blue", "teal", "grey"]))
        doc.items.append("Visitors often ask when to come. The chart gives the average rainfall of a typical year. "
                         + g.para(TOWN_FILLER, 2, **fill))
        doc.items.append(chart)
        doc.fact(name, "wettest month", MONTH_NAMES[wettest], "image", f"Rainfall in {name} peaks in ___.", chart)
        doc.fact(name, f"rainfall in {MONTH_NAMES[wettest]}", f"{max(rain)} mm", "image",
                 f"In {MONTH_NAMES[wettest]}, {name} gets about ___ of rain.", chart)
    doc.items.append(g.para(TOWN_FILLER, 3, **fill) + f" Plan your visit to {name} with our other guides.")
    doc.items.append(g.boilerplate())


def _product(doc: DocSpec, g: _Gen, brand: str, model: str, ptype: str, rivals: list[str], text_only: bool) -> None:
    name = f"{brand} {model}"
    full = f"{name} {ptype}"
    price = g.rng.randint(19, 399)
    weight = g.rng.randint(250, 4800)
    warranty = g.rng.randint(1, 5)
    warranty_text = f"{warranty} year" + ("s" if warranty > 1 else "")
    colour = g.pick(list(COLOURS))
    score = g.rng.randint(40, 98) / 10
    runtimes = _distinct_max(g, 3, 2, 60)
    rival_names = g.sample(rivals, 2)
    fill = dict(rival=rival_names[0])
    shown = g.images(text_only, {"device": 0.6, "chart": 0.5, "scorecard": 0.35})
    doc.items.append(f"{full} review: worth it? | {g.pick(['GadgetBench', 'HomeTested', 'The Kit Report'])}")
    doc.items.append(f"The {full} costs {CURRENCY}{price} and weighs {_fmt_int(weight)} grams. "
                     f"It comes with a warranty of {warranty_text}. " + g.para(PRODUCT_FILLER, 3, **fill))
    doc.fact(full, "price", f"{CURRENCY}{price}", "text", f"The {full} costs ___.")
    doc.fact(full, "weight", f"{_fmt_int(weight)} grams", "text", f"The {full} weighs ___.")
    doc.fact(full, "warranty", warranty_text, "text", f"The {full} comes with a warranty of ___.")
    if "device" not in shown:
        doc.items.append(f"Our review unit was the {colour} edition. " + g.para(PRODUCT_FILLER, 2, **fill))
        doc.fact(full, "colour", colour, "text", f"The reviewed {full} was ___.")
    else:
        dev = ImageSpec.of("device", colour=colour, label=name, shape=PRODUCT_TYPES.index(ptype) % 3)
        doc.items.append("Here is our review unit on the test bench. " + g.para(PRODUCT_FILLER, 1, **fill))
        doc.items.append(dev)
        doc.fact(full, "colour", colour, "text+image", f"The reviewed {full} was ___.", dev)
    doc.items.append(g.para(PRODUCT_FILLER, 3, **fill))
    labels = [name] + [" ".join(r.split()[:2]) for r in rival_names]
    if "chart" not in shown:
        doc.items.append(f"In our endurance test the {name} ran for {runtimes[0]} hours, against "
                         f"{runtimes[1]} for the {labels[1]} and {runtimes[2]} for the {labels[2]}. "
                         + g.para(PRODUCT_FILLER, 1, **fill))
        doc.fact(full, "test runtime", f"{runtimes[0]} hours", "text",
                 f"In the endurance test the {name} ran for ___.")
    else:
        chart = ImageSpec.of("bar_chart", title="Endurance test (hours)", labels=labels, values=runtimes,
                             colour=g.pick(["orange", "purple", "teal"]))
        doc.items.append("We ran each model until it stopped; the chart compares the results. "
                         + g.para(PRODUCT_FILLER, 1, **fill))
        doc.items.append(chart)
        doc.fact(full, "test runtime", f"{runtimes[0]} hours", "image",
                 f"In the endurance test the {name} ran for ___.", chart)
    if "scorecard" in shown:
        card = ImageSpec.of("scorecard", big=f"{score:.1f}", small="OUR SCORE / 10", colour=g.pick(DARK_COLOURS))
        doc.items.append("Verdict: " + g.para(PRODUCT_FILLER, 2, **fill))
        doc.items.append(card)
        doc.fact(full, "review score", f"{score:.1f}", "image", f"The {full} received a review score of ___.", card)
    else:
        doc.items.append(f"Verdict: we give the {name} a score of {score:.1f} out of 10. "
                         + g.para(PRODUCT_FILLER, 2, **fill))
        doc.fact(full, "review score", f"{score:.1f}", "text", f"The {full} received a review score of ___.")
    doc.items.append(g.boilerplate())


def _species(doc: DocSpec, g: _Gen, name: str, towns: list[str], rivals: list[str], text_only: bool) -> None:
    wingspan = g.rng.randint(14, 75)
    habitat = g.pick(HABITATS)
    status = g.pick(STATUSES)
    colour = g.pick([c for c in COLOURS if c != "white"])
    eggs = g.rng.randint(2, 7)
    town = g.pick(towns)
    years = list(range(2019, 2025))
    counts = _distinct_max(g, 6, 10, 240)
    best = years[counts.index(max(counts))]
    fill = dict(rival=g.pick(rivals), town=g.pick(towns))
    shown = g.images(text_only, {"bird": 0.6, "chart": 0.5, "nest": 0.35})
    doc.items.append(f"{name}: field notes | {g.pick(['Birdline', 'The Hedgerow Journal', 'Wingbeat'])}")
    doc.items.append(f"The {name} is a bird of {habitat} with a wingspan of about {wingspan} cm. "
                     f"Its conservation status is {status}. " + g.para(BIRD_FILLER, 2, **fill))
    doc.fact(name, "habitat", habitat, "text", f"The {name} is a bird of ___.")
    doc.fact(name, "wingspan", f"{wingspan} cm", "text", f"The {name} has a wingspan of about ___.")
    doc.fact(name, "conservation status", status, "text", f"The conservation status of the {name} is ___.")
    doc.items.append(f"The first confirmed record of the species in the region came from near {town}. "
                     + g.para(BIRD_FILLER, 3, **fill))
    doc.fact(name, "first record near", town, "text", f"The first regional record of the {name} came from near ___.")
    if "bird" not in shown:
        doc.items.append(f"Adults have {colour} plumage. " + g.para(BIRD_FILLER, 1, **fill))
        doc.fact(name, "plumage colour", colour, "text", f"The {name} has ___ plumage.")
    else:
        bird = ImageSpec.of("bird", colour=colour, accent=g.pick(["black", "white", "yellow", "orange"]),
                            facing=g.pick(["left", "right"]))
        doc.items.append("An adult photographed last spring:")
        doc.items.append(bird)
        doc.fact(name, "plumage colour", colour, "text+image", f"The {name} has ___ plumage.", bird)
    if "nest" in shown:
        nest = ImageSpec.of("eggs", n=eggs, colour=g.pick(["white", "blue", "teal", "yellow"]))
        doc.items.append("A nest found during the survey, photographed from a safe distance. "
                         + g.para(BIRD_FILLER, 2, **fill))
        doc.items.append(nest)
        doc.fact(name, "clutch size", eggs, "text+image", f"A typical clutch of the {name} holds ___ eggs.", nest)
    else:
        doc.items.append(f"A typical clutch holds {eggs} eggs. " + g.para(BIRD_FILLER, 2, **fill))
        doc.fact(name, "clutch size", eggs, "text", f"A typical clutch of the {name} holds ___ eggs.")
    if "chart" not in shown:
        doc.items.append(f"Most sightings were logged in {best}, when volunteers counted {max(counts)} birds. "
                         + g.para(BIRD_FILLER, 2, **fill))
        where, chart = "text", None
    else:
        chart = ImageSpec.of("bar_chart", title=f"{name} sightings per year", labels=[str(y) for y in years],
                             values=counts, colour=g.pick(["green", "brown", "teal"]))
        doc.items.append("Survey volunteers logged the following numbers of sightings. "
                         + g.para(BIRD_FILLER, 2, **fill))
        doc.items.append(chart)
        where = "image"
    doc.fact(name, "best year", best, where, f"Most sightings of the {name} were logged in ___.", chart)
    doc.fact(name, f"sightings in {best}", max(counts), where,
             f"In {best}, volunteers logged ___ sightings of the {name}.", chart)
    doc.items.append(g.para(BIRD_FILLER, 2, **fill))
    doc.items.append(g.boilerplate())


def _festival(doc: DocSpec, g: _Gen, name: str, rivals: list[str], text_only: bool) -> None:
    first = g.rng.randint(1952, 2015)
    venue = g.pick(VENUES)
    headliner = f"{g.pick(PERFORMERS_A)} {g.pick(PERFORMERS_B)}"
    day = g.rng.randint(1, 28)
    month = g.pick(list(MONTH_NAMES.values())[4:9])
    price = g.rng.randint(8, 95)
    mascot_colour, mascot_animal = g.pick(DARK_COLOURS), g.pick(ANIMALS)
    years = list(range(2019, 2025))
    attendance = _distinct_max(g, 6, 12, 95)  # hundreds
    fill = dict(rival=g.pick(rivals))
    shown = g.images(text_only, {"poster": 0.6, "chart": 0.5, "mascot": 0.35})
    doc.items.append(f"{name} - official information page")
    doc.items.append(f"The {name} was first held in {first} and takes place at {venue}. "
                     f"Its mascot is a {mascot_animal}. " + g.para(FESTIVAL_FILLER, 3, **fill))
    doc.fact(name, "first held", first, "text", f"The {name} was first held in ___.")
    doc.fact(name, "venue", venue, "text", f"The {name} takes place at ___.")
    doc.fact(name, "mascot", mascot_animal, "text", f"The mascot of the {name} is a ___.")
    if "poster" not in shown:
        doc.items.append(f"This year's headliner is {headliner}. The festival opens on {day} {month}, "
                         f"and a day ticket costs {CURRENCY}{price}. " + g.para(FESTIVAL_FILLER, 2, **fill))
        doc.fact(name, "headliner", headliner, "text", f"This year's headliner at the {name} is ___.")
        doc.fact(name, "ticket price", f"{CURRENCY}{price}", "text", f"A day ticket for the {name} costs ___.")
    else:
        poster = ImageSpec.of("sign", lines=[name.upper(), f"{headliner.upper()}", f"{day} {month.upper()}",
                                             f"DAY TICKET {CURRENCY}{price}"], colour=g.pick(DARK_COLOURS))
        doc.items.append("This year's poster has all the details. " + g.para(FESTIVAL_FILLER, 1, **fill))
        doc.items.append(poster)
        doc.fact(name, "headliner", headliner, "image", f"This year's headliner at the {name} is ___.", poster)
        doc.fact(name, "ticket price", f"{CURRENCY}{price}", "image", f"A day ticket for the {name} costs ___.", poster)
    doc.items.append(g.para(FESTIVAL_FILLER, 3, **fill))
    if "mascot" in shown:
        mascot = ImageSpec.of("shapes", n=1, shape="circle", colour=mascot_colour, caption=mascot_animal.upper())
        doc.items.append(f"Meet our {mascot_animal} mascot, who walks the grounds every afternoon.")
        doc.items.append(mascot)
        doc.fact(name, "mascot colour", mascot_colour, "text+image", f"The {name} mascot is ___.", mascot)
    else:
        doc.items.append(f"The {mascot_colour} {mascot_animal} costume is a favourite with children.")
        doc.fact(name, "mascot colour", mascot_colour, "text", f"The {name} mascot is ___.")
    best = years[attendance.index(max(attendance))]
    if "chart" not in shown:
        doc.items.append(f"Attendance peaked in {best}, with {max(attendance) * 100:,} visitors. "
                         + g.para(FESTIVAL_FILLER, 2, **fill))
        doc.fact(name, "peak attendance year", best, "text", f"Attendance at the {name} peaked in ___.")
    else:
        chart = ImageSpec.of("bar_chart", title="Visitors per year (hundreds)", labels=[str(y) for y in years],
                             values=attendance, colour=g.pick(["purple", "red", "orange"]))
        doc.items.append("The festival keeps growing, as the visitor numbers show. " + g.para(FESTIVAL_FILLER, 2, **fill))
        doc.items.append(chart)
        doc.fact(name, "peak attendance year", best, "image", f"Attendance at the {name} peaked in ___.", chart)
    doc.items.append(g.para(FESTIVAL_FILLER, 2, **fill))
    doc.items.append(g.boilerplate())


def _roadtrip(doc: DocSpec, g: _Gen, village: str, day: int) -> None:
    companion = g.pick(FIRST_NAMES)
    miles = g.rng.randint(40, 310)
    population = g.rng.randint(3, 95) * 20
    barn = g.pick(DARK_COLOURS)
    dish = g.pick(["LEEK PIE", "FISH SOUP", "LAMB STEW", "APPLE CAKE", "MUSHROOM TART", "BEAN CHILLI"])
    dish_price = g.rng.randint(4, 19)
    fill = dict(companion=companion)
    doc.items.append(f"Road trip, day {day}: the village on the hill | {g.pick(['Slow Miles', 'Two Seats North', 'Backroads Diary'])}")
    doc.items.append(f"Day {day}. We drove {miles} miles today, with {companion} in the passenger seat. "
                     + g.para(TRIP_FILLER, 3, **fill))
    doc.fact(f"road trip day {day} ({village})", "miles driven", miles, "text", f"On day {day} of the road trip we drove ___ miles.")
    sign = ImageSpec.of("sign", lines=[village.upper(), f"POP. {_fmt_int(population)}", "PLEASE DRIVE CAREFULLY"],
                        colour=g.pick(["green", "blue", "brown", "black"]))
    doc.items.append("Just before sunset we rolled into the village on this sign:")
    doc.items.append(sign)
    doc.fact(village, "population", _fmt_int(population), "image", f"The village sign of {village} gives a population of ___.", sign)
    if g.rng.random() < 0.6:
        doc.items.append(g.para(TRIP_FILLER, 3, **fill) + " The oldest building in the village is a barn by the green:")
        barn_img = ImageSpec.of("barn", colour=barn)
        doc.items.append(barn_img)
        doc.fact(village, "barn colour", barn, "image", f"The old barn by the green in {village} is ___.", barn_img)
    else:
        doc.items.append(g.para(TRIP_FILLER, 3, **fill))
    if g.rng.random() < 0.5:
        board = ImageSpec.of("sign", lines=["TODAY'S SPECIAL", dish, f"{CURRENCY}{dish_price}"], colour="black")
        doc.items.append("The pub's chalkboard made the choice for us. " + g.para(TRIP_FILLER, 2, **fill))
        doc.items.append(board)
        doc.fact(village, "pub special", dish.lower(), "image", f"The special at the pub in {village} was ___.", board)
    doc.items.append(g.para(TRIP_FILLER, 3, **fill))
    doc.items.append(g.boilerplate())


# ----------------------------------------------------------------------------------------------------------
# The corpus as data
# ----------------------------------------------------------------------------------------------------------

FAMILY_SHARES = {"town": 0.25, "product": 0.25, "species": 0.2, "festival": 0.15, "roadtrip": 0.15}
TEXT_ONLY_SHARE = 0.27  # of the non-road-trip documents


def _family_counts(n_docs: int) -> dict[str, int]:
    """Documents per family: two each at least (every document needs a rival), the rest by share."""
    rest = n_docs - 2 * len(FAMILY_SHARES)
    counts = {f: 2 + int(rest * s) for f, s in FAMILY_SHARES.items()}
    fams = list(FAMILY_SHARES)
    i = 0
    while sum(counts.values()) < n_docs:
        counts[fams[i % len(fams)]] += 1
        i += 1
    return counts


def build_corpus(seed: int = 0, n_docs: int = DEFAULT_N_DOCS) -> list[DocSpec]:
    """The whole synthetic corpus as :class:`DocSpec` s (no images rendered), in a fixed shuffled order."""
    if n_docs < 10:
        raise ValueError("n_docs must be at least 10 (two documents per family)")
    counts = _family_counts(n_docs)
    names = _names(seed, counts)

    def gen(family: str, i: int) -> _Gen:
        return _Gen(random.Random(f"nyx-sample:{seed}:{family}:{i}"))

    def text_only(g: _Gen) -> bool:
        return g.rng.random() < TEXT_ONLY_SHARE

    product_names = [f"{b} {m} {t}" for b, m, t in names.products]
    festival_names = [f"{p} {k}" for p, k in names.festivals]
    docs: list[DocSpec] = []
    builders: list[tuple[str, int, Callable[[DocSpec, _Gen], None], str]] = []
    for i, town in enumerate(names.towns):
        others = [t for t in names.towns if t != town]
        builders.append(("town", i, lambda d, g, town=town, others=others: _town(d, g, town, others, text_only(g)),
                         f"https://wanderlore.example/towns/{town.lower()}"))
    for i, (b, m, t) in enumerate(names.products):
        rivals = [p for p in product_names if p != f"{b} {m} {t}"]
        builders.append(("product", i, lambda d, g, b=b, m=m, t=t, rivals=rivals:
                         _product(d, g, b, m, t, rivals, text_only(g)),
                         f"https://gadgetbench.example/reviews/{b.lower()}-{m.lower()}"))
    for i, bird in enumerate(names.birds):
        rivals = [x for x in names.birds if x != bird]
        builders.append(("species", i, lambda d, g, bird=bird, rivals=rivals:
                         _species(d, g, bird, names.towns, rivals, text_only(g)),
                         f"https://birdline.example/species/{bird.lower().replace(' ', '-')}"))
    for i, (place, fest) in enumerate(zip([p for p, _ in names.festivals], festival_names)):
        rivals = [x for x in festival_names if x != fest]
        builders.append(("festival", i, lambda d, g, fest=fest, rivals=rivals:
                         _festival(d, g, fest, rivals, text_only(g)),
                         f"https://events.example/{place.lower()}"))
    for i, village in enumerate(names.villages):
        builders.append(("roadtrip", i, lambda d, g, village=village, day=i + 1: _roadtrip(d, g, village, day),
                         f"https://slowmiles.example/day-{i + 1}"))
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


# ----------------------------------------------------------------------------------------------------------
# Rendering (PIL only, default font)
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font (FreeType build): no download


def _fit_font(draw: ImageDraw.ImageDraw, text: str, max_width: int, size: int, min_size: int = 9):
    while size > min_size and draw.textlength(text, font=_font(size)) > max_width:
        size -= 1
    return _font(size)


def _canvas(w: int, h: int, bg: tuple[int, int, int] = (255, 255, 255)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("RGB", (w, h), bg)
    return im, ImageDraw.Draw(im)


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return (20, 20, 20) if sum(colour) > 500 else (255, 255, 255)


def render_bar_chart(title: str, labels: list[str], values: list[int], colour: str) -> Image.Image:
    w, h = 336, 224
    im, d = _canvas(w, h)
    d.text((w // 2, 14), title, fill=(20, 20, 20), font=_fit_font(d, title, w - 16, 14), anchor="mm")
    left, right, top, bottom = 28, w - 12, 40, h - 28
    d.line([(left, top - 6), (left, bottom), (right, bottom)], fill=(60, 60, 60), width=1)
    vmax = max(values)
    slot = (right - left) / len(values)
    bar_w = max(6, int(slot * 0.6))
    for i, (lab, v) in enumerate(zip(labels, values)):
        x0 = int(left + slot * i + (slot - bar_w) / 2)
        y0 = int(bottom - (bottom - top - 14) * v / vmax)
        d.rectangle([x0, y0, x0 + bar_w, bottom - 1], fill=COLOURS[colour])
        d.text((x0 + bar_w // 2, y0 - 8), str(v), fill=(20, 20, 20), font=_font(11), anchor="mm")
        d.text((x0 + bar_w // 2, bottom + 11), lab, fill=(40, 40, 40),
               font=_fit_font(d, lab, int(slot) - 2, 11), anchor="mm")
    return im


def render_sign(lines: list[str], colour: str) -> Image.Image:
    w, h = 320, 200
    im, d = _canvas(w, h, (186, 214, 236))
    d.rectangle([0, 150, w, h], fill=(110, 150, 90))
    d.rectangle([152, 120, 168, 190], fill=(90, 90, 90))
    board = COLOURS[colour]
    d.rounded_rectangle([20, 16, w - 20, 140], radius=12, fill=board, outline=(240, 240, 240), width=3)
    ink = _ink(board)
    sizes = [20] + [15] * (len(lines) - 1)
    y = 16 + (124 - sum(s + 8 for s in sizes)) // 2 + 10
    for line, s in zip(lines, sizes):
        d.text((w // 2, y), line, fill=ink, font=_fit_font(d, line, w - 60, s), anchor="mm")
        y += s + 8
    return im


def render_flag(colours: list[str], layout: str) -> Image.Image:
    w, h = 240, 160
    im, d = _canvas(w, h, (230, 236, 240))
    x0, y0, x1, y1 = 30, 20, 210, 140
    a, b = COLOURS[colours[0]], COLOURS[colours[1]]
    if layout == "horizontal":
        d.rectangle([x0, y0, x1, (y0 + y1) // 2], fill=a)
        d.rectangle([x0, (y0 + y1) // 2, x1, y1], fill=b)
    elif layout == "vertical":
        d.rectangle([x0, y0, (x0 + x1) // 2, y1], fill=a)
        d.rectangle([(x0 + x1) // 2, y0, x1, y1], fill=b)
    else:
        d.rectangle([x0, y0, x1, y1], fill=a)
        d.rectangle([x0 + 60, y0, x0 + 84, y1], fill=b)
        d.rectangle([x0, (y0 + y1) // 2 - 12, x1, (y0 + y1) // 2 + 12], fill=b)
    d.rectangle([x0, y0, x1, y1], outline=(60, 60, 60), width=1)
    d.line([(x0 - 4, y0 - 6), (x0 - 4, h - 4)], fill=(80, 80, 80), width=4)
    return im


def render_device(colour: str, label: str, shape: int) -> Image.Image:
    w, h = 280, 196
    im, d = _canvas(w, h, (236, 236, 232))
    d.rectangle([0, 160, w, h], fill=(200, 190, 176))
    body = COLOURS[colour]
    if shape == 0:
        d.rounded_rectangle([80, 30, 200, 166], radius=18, fill=body, outline=(60, 60, 60), width=2)
    elif shape == 1:
        d.ellipse([70, 30, 210, 170], fill=body, outline=(60, 60, 60), width=2)
    else:
        d.polygon([(140, 24), (214, 166), (66, 166)], fill=body, outline=(60, 60, 60))
    d.rectangle([98, 118, 182, 138], fill=(245, 245, 245), outline=(60, 60, 60))
    d.text((140, 128), label, fill=(20, 20, 20), font=_fit_font(d, label, 80, 12), anchor="mm")
    d.ellipse([134, 90, 146, 102], fill=(60, 220, 90))
    return im


def render_scorecard(big: str, small: str, colour: str) -> Image.Image:
    w, h = 224, 168
    im, d = _canvas(w, h, COLOURS[colour])
    ink = _ink(COLOURS[colour])
    d.text((w // 2, 72), big, fill=ink, font=_font(56), anchor="mm")
    d.text((w // 2, 136), small, fill=ink, font=_font(14), anchor="mm")
    return im


def render_bird(colour: str, accent: str, facing: str) -> Image.Image:
    w, h = 280, 196
    im, d = _canvas(w, h, (214, 232, 244))
    d.rectangle([0, 150, w, h], fill=(120, 100, 70))  # branch
    body, acc = COLOURS[colour], COLOURS[accent]
    d.ellipse([80, 70, 200, 146], fill=body, outline=(40, 40, 40))
    hx = 190 if facing == "right" else 90
    d.ellipse([hx - 30, 40, hx + 30, 100], fill=body, outline=(40, 40, 40))
    d.ellipse([hx - 6 + (8 if facing == "right" else -8), 58, hx + 6 + (8 if facing == "right" else -8), 70],
              fill=(10, 10, 10))
    tip = hx + 56 if facing == "right" else hx - 56
    base = hx + 26 if facing == "right" else hx - 26
    d.polygon([(base, 66), (tip, 76), (base, 86)], fill=acc, outline=(40, 40, 40))
    tail = [(84, 100), (30, 86), (40, 120)] if facing == "right" else [(196, 100), (250, 86), (240, 120)]
    d.polygon(tail, fill=body, outline=(40, 40, 40))
    d.line([(130, 146), (126, 160)], fill=(60, 40, 20), width=3)
    d.line([(150, 146), (154, 160)], fill=(60, 40, 20), width=3)
    return im


def render_eggs(n: int, colour: str) -> Image.Image:
    w, h = 280, 168
    im, d = _canvas(w, h, (170, 190, 140))
    d.ellipse([20, 40, 260, 150], fill=(140, 110, 70), outline=(90, 70, 40), width=3)
    d.ellipse([40, 54, 240, 136], fill=(110, 84, 50))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    for k in range(n):
        r, c = divmod(k, cols)
        in_row = cols if r < rows - 1 else n - cols * (rows - 1)
        cx = w // 2 + int((c - (in_row - 1) / 2) * 44)
        cy = 95 + int((r - (rows - 1) / 2) * 34)
        d.ellipse([cx - 16, cy - 13, cx + 16, cy + 13], fill=COLOURS[colour], outline=(60, 60, 60))
    return im


def render_shapes(n: int, shape: str, colour: str, caption: str) -> Image.Image:
    w, h = 240, 180
    im, d = _canvas(w, h, (245, 240, 230))
    for k in range(n):
        cx = w // 2 + int((k - (n - 1) / 2) * 60)
        if shape == "circle":
            d.ellipse([cx - 48, 22, cx + 48, 118], fill=COLOURS[colour], outline=(40, 40, 40), width=2)
            d.ellipse([cx - 22, 52, cx - 10, 64], fill=(255, 255, 255))
            d.ellipse([cx + 10, 52, cx + 22, 64], fill=(255, 255, 255))
        else:
            d.rectangle([cx - 40, 30, cx + 40, 110], fill=COLOURS[colour], outline=(40, 40, 40), width=2)
    d.text((w // 2, 150), caption, fill=(30, 30, 30), font=_font(18), anchor="mm")
    return im


def render_barn(colour: str) -> Image.Image:
    w, h = 280, 196
    im, d = _canvas(w, h, (200, 222, 240))
    d.rectangle([0, 150, w, h], fill=(104, 160, 80))
    c = COLOURS[colour]
    d.polygon([(70, 80), (140, 30), (210, 80)], fill=(70, 60, 60))
    d.rectangle([76, 80, 204, 156], fill=c, outline=(40, 40, 40))
    d.rectangle([122, 104, 158, 156], fill=(240, 240, 240), outline=(40, 40, 40))
    d.line([(122, 104), (158, 156)], fill=(40, 40, 40), width=2)
    d.line([(158, 104), (122, 156)], fill=(40, 40, 40), width=2)
    return im


RENDERERS: dict[str, Callable[..., Image.Image]] = {
    "bar_chart": render_bar_chart, "sign": render_sign, "flag": render_flag, "device": render_device,
    "scorecard": render_scorecard, "bird": render_bird, "eggs": render_eggs, "shapes": render_shapes,
    "barn": render_barn,
}


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that holds anything but a previous sample (the folder is swapped whole)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    foreign = [p.name for p in out_dir.iterdir()
               if not (p.name == IMAGES_DIR or (p.name.startswith("shard-") and p.suffix == ".parquet"))]
    if foreign:
        raise FileExistsError(f"{out_dir} holds files that are not part of a sample corpus ({sorted(foreign)[:5]}); "
                              "choose an empty or new folder")


def tree_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over the sorted relative paths and contents of every file under ``folder``."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def generate_sample(out_dir: str | os.PathLike, n_docs: int = DEFAULT_N_DOCS, seed: int = 0,
                    n_shards: int = DEFAULT_SHARDS) -> dict[str, Any]:
    """Write the synthetic OBELICS-format sample to ``out_dir`` (replaced as a whole); return a summary.

    ``out_dir`` gets ``shard-00000.parquet`` ... and ``images/<doc id>-<k>.png``. Same arguments, same bytes.
    """
    from nyx.data.images import encode_png
    from nyx.data.obelics import write_obelics_parquet
    from nyx.utils.io import atomic_dir

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    if n_shards < 1:
        raise ValueError("n_shards must be at least 1")
    docs = build_corpus(seed, n_docs)
    with atomic_dir(out_dir) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        rows = []
        for doc in docs:
            texts: list[str | None] = []
            images: list[str | None] = []
            k = 0
            for item in doc.items:
                if isinstance(item, str):
                    texts.append(item)
                    images.append(None)
                else:
                    rel = f"{IMAGES_DIR}/{doc.id}-{k}.png"
                    (tmp / rel).write_bytes(encode_png(item.render()))
                    texts.append(None)
                    images.append(rel)
                    k += 1
            rows.append({"id": doc.id, "url": doc.url, "texts": texts, "images": images,
                         "metadata": {"synthetic": True, "family": doc.family, "title": doc.title,
                                      "facts": doc.facts}})
        per = math.ceil(len(rows) / n_shards)
        for s in range(n_shards):
            write_obelics_parquet(rows[s * per:(s + 1) * per], tmp / SHARD_NAME.format(s))
    summary = summarize(docs)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    summary.update({
        "out_dir": str(out_dir), "seed": seed, "n_shards": n_shards,
        "n_files": len(files), "total_bytes": sum(p.stat().st_size for p in files),
        "digest": tree_digest(out_dir), "seconds": round(time.perf_counter() - t0, 2),
    })
    return summary


def summarize(docs: list[DocSpec]) -> dict[str, Any]:
    """Counts that show the corpus mix (documents, images, modality groups, families, fact placement)."""
    def modality(d: DocSpec) -> str:
        n = len(d.images)
        return "text" if n == 0 else ("image1" if n == 1 else "image2+")

    return {
        "n_docs": len(docs),
        "n_images": sum(len(d.images) for d in docs),
        "n_text_segments": sum(len(d.texts) for d in docs),
        "n_words": sum(len(t.split()) for d in docs for t in d.texts),
        "modality": dict(sorted(Counter(modality(d) for d in docs).items())),
        "families": dict(sorted(Counter(d.family for d in docs).items())),
        "image_kinds": dict(sorted(Counter(i.kind for d in docs for i in d.images).items())),
        "facts_by_where": dict(sorted(Counter(f["where"] for d in docs for f in d.facts).items())),
        "n_facts": sum(len(d.facts) for d in docs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nyx.data.sample",
                                     description="Write the synthetic OBELICS-format sample corpus.")
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="output folder (replaced as a whole)")
    parser.add_argument("--n-docs", type=int, default=DEFAULT_N_DOCS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    args = parser.parse_args(argv)
    summary = generate_sample(args.out, n_docs=args.n_docs, seed=args.seed, n_shards=args.shards)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
