"""Town guides: founding, river, twin town, population (on the town sign), flag, rainfall chart."""

from __future__ import annotations

from nyx.data.sample.spec import DocGen, DocSpec, ImageSpec, distinct_max, fmt_int
from nyx.data.sample.vocabulary import DARK_COLOURS, EXPORTS, MONTH_NAMES, MONTHS, RIVER_NAMES, TOWN_FILLER


def build_town(doc: DocSpec, g: DocGen, name: str, others: list[str], text_only: bool) -> None:
    founded = g.rng.randint(1150, 1890)
    population = g.rng.randint(18, 2400) * 100
    river = g.pick(RIVER_NAMES)
    export = g.pick(EXPORTS)
    twin = g.pick(others)
    neighbour = g.pick(others)
    elevation = g.rng.randint(5, 900)
    flag = g.sample(DARK_COLOURS + ["white", "yellow"], 2)
    layout = g.pick(["horizontal", "vertical", "cross"])
    months = MONTHS[g.rng.randrange(0, 7) :][:6]
    rain = distinct_max(g, 6, 20, 190)
    wettest = months[rain.index(max(rain))]
    site = g.pick(["Wanderlore", "Townbook", "The Byways Guide", "Atlas of Small Towns"])
    fill = dict(neighbour=neighbour)
    doc.items.append(f"{name} | {site}")
    doc.items.append(
        f"{name} is a market town on the River {river}, founded in {founded}. "
        f"It lies at an elevation of {elevation} metres and is twinned with {twin}. " + g.para(TOWN_FILLER, 2, **fill)
    )
    doc.fact(name, "founded", founded, "text", f"{name} was founded in ___.")
    doc.fact(name, "river", river, "text", f"{name} is a market town on the River ___.")
    doc.fact(name, "twin town", twin, "text", f"{name} is twinned with ___.")
    doc.fact(name, "elevation", f"{elevation} metres", "text", f"{name} lies at an elevation of ___.")
    doc.items.append(
        f"For centuries the town's wealth came from {export}, and the trade still employs many families. "
        + g.para(TOWN_FILLER, 3, **fill)
    )
    doc.fact(name, "main export", export, "text", f"The wealth of {name} came from ___.")
    shown = g.images(text_only, {"rain_chart": 0.55, "sign": 0.45, "flag": 0.45})
    if "sign" not in shown:
        doc.items.append(
            f"According to the last census, {name} has a population of {fmt_int(population)}. "
            + g.para(TOWN_FILLER, 2, **fill)
        )
        doc.fact(name, "population", fmt_int(population), "text", f"{name} has a population of ___.")
    else:
        sign = ImageSpec.of(
            "sign",
            lines=[f"WELCOME TO {name.upper()}", f"POP. {fmt_int(population)}", f"EST. {founded}"],
            colour=g.pick(["green", "blue", "brown"]),
        )
        doc.items.append("The sign at the northern entrance to the town greets drivers coming off the main road.")
        doc.items.append(sign)
        doc.fact(
            name,
            "population",
            fmt_int(population),
            "image",
            f"The town sign of {name} gives its population as ___.",
            sign,
        )
    if "flag" not in shown:
        doc.items.append(
            f"The flag of {name} is {flag[0]} and {flag[1]}, in {layout} stripes. " + g.para(TOWN_FILLER, 2, **fill)
        )
        doc.fact(name, "flag colours", f"{flag[0]} and {flag[1]}", "text", f"The flag of {name} is ___.")
    else:
        flag_img = ImageSpec.of("flag", colours=flag, layout=layout)
        doc.items.append(
            "The town flag, shown below, flies above the council hall on market days. " + g.para(TOWN_FILLER, 1, **fill)
        )
        doc.items.append(flag_img)
        doc.fact(
            name, "flag colours", f"{flag[0]} and {flag[1]}", "text+image", f"The flag of {name} is ___.", flag_img
        )
    if "rain_chart" not in shown:
        doc.items.append(
            f"Rainfall peaks in {MONTH_NAMES[wettest]}, with about {max(rain)} mm. " + g.para(TOWN_FILLER, 2, **fill)
        )
        doc.fact(name, "wettest month", MONTH_NAMES[wettest], "text", f"Rainfall in {name} peaks in ___.")
        doc.fact(
            name,
            f"rainfall in {MONTH_NAMES[wettest]}",
            f"{max(rain)} mm",
            "text",
            f"In {MONTH_NAMES[wettest]}, {name} gets about ___ of rain.",
        )
    else:
        chart = ImageSpec.of(
            "bar_chart",
            title=f"Monthly rainfall in {name} (mm)",
            labels=months,
            values=rain,
            colour=g.pick(["blue", "teal", "grey"]),
        )
        doc.items.append(
            "Visitors often ask when to come. The chart gives the average rainfall of a typical year. "
            + g.para(TOWN_FILLER, 2, **fill)
        )
        doc.items.append(chart)
        doc.fact(name, "wettest month", MONTH_NAMES[wettest], "image", f"Rainfall in {name} peaks in ___.", chart)
        doc.fact(
            name,
            f"rainfall in {MONTH_NAMES[wettest]}",
            f"{max(rain)} mm",
            "image",
            f"In {MONTH_NAMES[wettest]}, {name} gets about ___ of rain.",
            chart,
        )
    doc.items.append(g.para(TOWN_FILLER, 3, **fill) + f" Plan your visit to {name} with our other guides.")
    doc.items.append(g.boilerplate())
