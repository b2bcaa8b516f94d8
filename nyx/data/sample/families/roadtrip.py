"""Road-trip blog posts: the village is named only on its photographed sign; barn and pub chalkboard photos."""

from __future__ import annotations

from nyx.data.sample.spec import DocGen, DocSpec, ImageSpec, fmt_int
from nyx.data.sample.vocabulary import CURRENCY, DARK_COLOURS, FIRST_NAMES, TRIP_FILLER


def build_roadtrip(doc: DocSpec, g: DocGen, village: str, day: int) -> None:
    companion = g.pick(FIRST_NAMES)
    miles = g.rng.randint(40, 310)
    population = g.rng.randint(3, 95) * 20
    barn = g.pick(DARK_COLOURS)
    dish = g.pick(["LEEK PIE", "FISH SOUP", "LAMB STEW", "APPLE CAKE", "MUSHROOM TART", "BEAN CHILLI"])
    dish_price = g.rng.randint(4, 19)
    fill = dict(companion=companion)
    doc.items.append(
        f"Road trip, day {day}: the village on the hill | "
        f"{g.pick(['Slow Miles', 'Two Seats North', 'Backroads Diary'])}"
    )
    doc.items.append(
        f"Day {day}. We drove {miles} miles today, with {companion} in the passenger seat. "
        + g.para(TRIP_FILLER, 3, **fill)
    )
    doc.fact(
        f"road trip day {day} ({village})",
        "miles driven",
        miles,
        "text",
        f"On day {day} of the road trip we drove ___ miles.",
    )
    sign = ImageSpec.of(
        "sign",
        lines=[village.upper(), f"POP. {fmt_int(population)}", "PLEASE DRIVE CAREFULLY"],
        colour=g.pick(["green", "blue", "brown", "black"]),
    )
    doc.items.append("Just before sunset we rolled into the village on this sign:")
    doc.items.append(sign)
    doc.fact(
        village,
        "population",
        fmt_int(population),
        "image",
        f"The village sign of {village} gives a population of ___.",
        sign,
    )
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
