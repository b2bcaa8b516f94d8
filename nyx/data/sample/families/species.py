"""Bird field notes: habitat, wingspan, status, plumage (the bird), clutch (the nest), sightings chart."""

from __future__ import annotations

from nyx.data.sample.spec import DocGen, DocSpec, ImageSpec, distinct_max
from nyx.data.sample.vocabulary import BIRD_FILLER, COLOURS, HABITATS, STATUSES


def build_species(doc: DocSpec, g: DocGen, name: str, towns: list[str], rivals: list[str], text_only: bool) -> None:
    wingspan = g.rng.randint(14, 75)
    habitat = g.pick(HABITATS)
    status = g.pick(STATUSES)
    colour = g.pick([c for c in COLOURS if c != "white"])
    eggs = g.rng.randint(2, 7)
    town = g.pick(towns)
    years = list(range(2019, 2025))
    counts = distinct_max(g, 6, 10, 240)
    best = years[counts.index(max(counts))]
    fill = dict(rival=g.pick(rivals), town=g.pick(towns))
    shown = g.images(text_only, {"bird": 0.6, "chart": 0.5, "nest": 0.35})
    doc.items.append(f"{name}: field notes | {g.pick(['Birdline', 'The Hedgerow Journal', 'Wingbeat'])}")
    doc.items.append(
        f"The {name} is a bird of {habitat} with a wingspan of about {wingspan} cm. "
        f"Its conservation status is {status}. " + g.para(BIRD_FILLER, 2, **fill)
    )
    doc.fact(name, "habitat", habitat, "text", f"The {name} is a bird of ___.")
    doc.fact(name, "wingspan", f"{wingspan} cm", "text", f"The {name} has a wingspan of about ___.")
    doc.fact(name, "conservation status", status, "text", f"The conservation status of the {name} is ___.")
    doc.items.append(
        f"The first confirmed record of the species in the region came from near {town}. "
        + g.para(BIRD_FILLER, 3, **fill)
    )
    doc.fact(name, "first record near", town, "text", f"The first regional record of the {name} came from near ___.")
    if "bird" not in shown:
        doc.items.append(f"Adults have {colour} plumage. " + g.para(BIRD_FILLER, 1, **fill))
        doc.fact(name, "plumage colour", colour, "text", f"The {name} has ___ plumage.")
    else:
        bird = ImageSpec.of(
            "bird",
            colour=colour,
            accent=g.pick(["black", "white", "yellow", "orange"]),
            facing=g.pick(["left", "right"]),
        )
        doc.items.append("An adult photographed last spring:")
        doc.items.append(bird)
        doc.fact(name, "plumage colour", colour, "text+image", f"The {name} has ___ plumage.", bird)
    if "nest" in shown:
        nest = ImageSpec.of("eggs", n=eggs, colour=g.pick(["white", "blue", "teal", "yellow"]))
        doc.items.append(
            "A nest found during the survey, photographed from a safe distance. " + g.para(BIRD_FILLER, 2, **fill)
        )
        doc.items.append(nest)
        doc.fact(name, "clutch size", eggs, "text+image", f"A typical clutch of the {name} holds ___ eggs.", nest)
    else:
        doc.items.append(f"A typical clutch holds {eggs} eggs. " + g.para(BIRD_FILLER, 2, **fill))
        doc.fact(name, "clutch size", eggs, "text", f"A typical clutch of the {name} holds ___ eggs.")
    if "chart" not in shown:
        doc.items.append(
            f"Most sightings were logged in {best}, when volunteers counted {max(counts)} birds. "
            + g.para(BIRD_FILLER, 2, **fill)
        )
        where, chart = "text", None
    else:
        chart = ImageSpec.of(
            "bar_chart",
            title=f"{name} sightings per year",
            labels=[str(y) for y in years],
            values=counts,
            colour=g.pick(["green", "brown", "teal"]),
        )
        doc.items.append(
            "Survey volunteers logged the following numbers of sightings. " + g.para(BIRD_FILLER, 2, **fill)
        )
        doc.items.append(chart)
        where = "image"
    doc.fact(name, "best year", best, where, f"Most sightings of the {name} were logged in ___.", chart)
    doc.fact(
        name,
        f"sightings in {best}",
        max(counts),
        where,
        f"In {best}, volunteers logged ___ sightings of the {name}.",
        chart,
    )
    doc.items.append(g.para(BIRD_FILLER, 2, **fill))
    doc.items.append(g.boilerplate())
