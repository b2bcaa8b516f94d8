"""Product reviews: price, weight, warranty, colour (the review unit), endurance chart against two rivals,
score card."""

from __future__ import annotations

from nyx.data.sample.spec import DocGen, DocSpec, ImageSpec, distinct_max, fmt_int
from nyx.data.sample.vocabulary import COLOURS, CURRENCY, DARK_COLOURS, PRODUCT_FILLER, PRODUCT_TYPES


def build_product(
    doc: DocSpec, g: DocGen, brand: str, model: str, ptype: str, rivals: list[str], text_only: bool
) -> None:
    name = f"{brand} {model}"
    full = f"{name} {ptype}"
    price = g.rng.randint(19, 399)
    weight = g.rng.randint(250, 4800)
    warranty = g.rng.randint(1, 5)
    warranty_text = f"{warranty} year" + ("s" if warranty > 1 else "")
    colour = g.pick(list(COLOURS))
    score = g.rng.randint(40, 98) / 10
    runtimes = distinct_max(g, 3, 2, 60)
    rival_names = g.sample(rivals, 2)
    fill = dict(rival=rival_names[0])
    shown = g.images(text_only, {"device": 0.6, "chart": 0.5, "scorecard": 0.35})
    doc.items.append(f"{full} review: worth it? | {g.pick(['GadgetBench', 'HomeTested', 'The Kit Report'])}")
    doc.items.append(
        f"The {full} costs {CURRENCY}{price} and weighs {fmt_int(weight)} grams. "
        f"It comes with a warranty of {warranty_text}. " + g.para(PRODUCT_FILLER, 3, **fill)
    )
    doc.fact(full, "price", f"{CURRENCY}{price}", "text", f"The {full} costs ___.")
    doc.fact(full, "weight", f"{fmt_int(weight)} grams", "text", f"The {full} weighs ___.")
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
        doc.items.append(
            f"In our endurance test the {name} ran for {runtimes[0]} hours, against "
            f"{runtimes[1]} for the {labels[1]} and {runtimes[2]} for the {labels[2]}. "
            + g.para(PRODUCT_FILLER, 1, **fill)
        )
        doc.fact(full, "test runtime", f"{runtimes[0]} hours", "text", f"In the endurance test the {name} ran for ___.")
    else:
        chart = ImageSpec.of(
            "bar_chart",
            title="Endurance test (hours)",
            labels=labels,
            values=runtimes,
            colour=g.pick(["orange", "purple", "teal"]),
        )
        doc.items.append(
            "We ran each model until it stopped; the chart compares the results. " + g.para(PRODUCT_FILLER, 1, **fill)
        )
        doc.items.append(chart)
        doc.fact(
            full,
            "test runtime",
            f"{runtimes[0]} hours",
            "image",
            f"In the endurance test the {name} ran for ___.",
            chart,
        )
    if "scorecard" in shown:
        card = ImageSpec.of("scorecard", big=f"{score:.1f}", small="OUR SCORE / 10", colour=g.pick(DARK_COLOURS))
        doc.items.append("Verdict: " + g.para(PRODUCT_FILLER, 2, **fill))
        doc.items.append(card)
        doc.fact(full, "review score", f"{score:.1f}", "image", f"The {full} received a review score of ___.", card)
    else:
        doc.items.append(
            f"Verdict: we give the {name} a score of {score:.1f} out of 10. " + g.para(PRODUCT_FILLER, 2, **fill)
        )
        doc.fact(full, "review score", f"{score:.1f}", "text", f"The {full} received a review score of ___.")
    doc.items.append(g.boilerplate())
