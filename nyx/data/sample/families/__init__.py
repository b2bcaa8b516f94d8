"""One document builder per family, one module each: each writes its paragraphs and images into a
:class:`~nyx.data.sample.spec.DocSpec` and records every fact it states, with where it is stated (text, image or
both) and a cloze statement. The builders share their vocabulary and sentence pools
(:mod:`nyx.data.sample.vocabulary`), so documents of one family compete with each other."""

from nyx.data.sample.families.festival import build_festival
from nyx.data.sample.families.product import build_product
from nyx.data.sample.families.roadtrip import build_roadtrip
from nyx.data.sample.families.species import build_species
from nyx.data.sample.families.town import build_town

__all__ = ["build_festival", "build_product", "build_roadtrip", "build_species", "build_town"]
