"""Festival pages: history, venue, mascot, poster (headliner, date, price), attendance chart."""

from __future__ import annotations

from nyx.data.sample.spec import DocGen, DocSpec, ImageSpec, distinct_max
from nyx.data.sample.vocabulary import (
    ANIMALS,
    CURRENCY,
    DARK_COLOURS,
    FESTIVAL_FILLER,
    MONTH_NAMES,
    PERFORMERS_A,
    PERFORMERS_B,
    VENUES,
)


def build_festival(doc: DocSpec, g: DocGen, name: str, rivals: list[str], text_only: bool) -> None:
    first = g.rng.randint(1952, 2015)
    venue = g.pick(VENUES)
    headliner = f"{g.pick(PERFORMERS_A)} {g.pick(PERFORMERS_B)}"
    day = g.rng.randint(1, 28)
    month = g.pick(list(MONTH_NAMES.values())[4:9])
    price = g.rng.randint(8, 95)
    mascot_colour, mascot_animal = g.pick(DARK_COLOURS), g.pick(ANIMALS)
    years = list(range(2019, 2025))
    attendance = distinct_max(g, 6, 12, 95)  # hundreds
    fill = dict(rival=g.pick(rivals))
    shown = g.images(text_only, {"poster": 0.6, "chart": 0.5, "mascot": 0.35})
    doc.items.append(f"{name} - official information page")
    doc.items.append(
        f"The {name} was first held in {first} and takes place at {venue}. "
        f"Its mascot is a {mascot_animal}. " + g.para(FESTIVAL_FILLER, 3, **fill)
    )
    doc.fact(name, "first held", first, "text", f"The {name} was first held in ___.")
    doc.fact(name, "venue", venue, "text", f"The {name} takes place at ___.")
    doc.fact(name, "mascot", mascot_animal, "text", f"The mascot of the {name} is a ___.")
    if "poster" not in shown:
        doc.items.append(
            f"This year's headliner is {headliner}. The festival opens on {day} {month}, "
            f"and a day ticket costs {CURRENCY}{price}. " + g.para(FESTIVAL_FILLER, 2, **fill)
        )
        doc.fact(name, "headliner", headliner, "text", f"This year's headliner at the {name} is ___.")
        doc.fact(name, "ticket price", f"{CURRENCY}{price}", "text", f"A day ticket for the {name} costs ___.")
    else:
        poster = ImageSpec.of(
            "sign",
            lines=[name.upper(), f"{headliner.upper()}", f"{day} {month.upper()}", f"DAY TICKET {CURRENCY}{price}"],
            colour=g.pick(DARK_COLOURS),
        )
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
        doc.items.append(
            f"Attendance peaked in {best}, with {max(attendance) * 100:,} visitors. "
            + g.para(FESTIVAL_FILLER, 2, **fill)
        )
        doc.fact(name, "peak attendance year", best, "text", f"Attendance at the {name} peaked in ___.")
    else:
        chart = ImageSpec.of(
            "bar_chart",
            title="Visitors per year (hundreds)",
            labels=[str(y) for y in years],
            values=attendance,
            colour=g.pick(["purple", "red", "orange"]),
        )
        doc.items.append(
            "The festival keeps growing, as the visitor numbers show. " + g.para(FESTIVAL_FILLER, 2, **fill)
        )
        doc.items.append(chart)
        doc.fact(name, "peak attendance year", best, "image", f"Attendance at the {name} peaked in ___.", chart)
    doc.items.append(g.para(FESTIVAL_FILLER, 2, **fill))
    doc.items.append(g.boilerplate())
