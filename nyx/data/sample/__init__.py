"""The bundled sample corpus. IT IS SYNTHETIC: every town, product, species, festival and number in it is
invented by this package from a seeded random generator; none of it describes the real world.

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

Modules, in the order the data flows:

* :mod:`~nyx.data.sample.vocabulary` - word lists and sentence pools;
* :mod:`~nyx.data.sample.spec`       - :class:`DocSpec`, :class:`ImageSpec` and the seeded :class:`DocGen`;
* :mod:`~nyx.data.sample.families`   - one document builder per family (a module each);
* :mod:`~nyx.data.sample.corpus`     - names, family counts, :func:`build_corpus`, :func:`sample_texts`;
* :mod:`~nyx.data.sample.render`     - the PIL image renderers;
* :mod:`~nyx.data.sample.write`      - :func:`generate_sample` (shards and PNGs), :func:`main`;
* :mod:`~nyx.data.sample.training_sources` - small files of every external training-source format (a separate
  fixture set, not part of the corpus).

CLI: ``python -m nyx.data.sample --out data/raw [--n-docs 300] [--seed 0] [--shards 3]``.
"""

from nyx.data.sample.corpus import DEFAULT_N_DOCS, build_corpus, sample_texts
from nyx.data.sample.spec import DocSpec, ImageSpec
from nyx.data.sample.write import DEFAULT_SHARDS, generate_sample, main, summarize, tree_digest

__all__ = [
    "DEFAULT_N_DOCS",
    "DEFAULT_SHARDS",
    "DocSpec",
    "ImageSpec",
    "build_corpus",
    "generate_sample",
    "main",
    "sample_texts",
    "summarize",
    "tree_digest",
]
