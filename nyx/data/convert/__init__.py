"""Benchmark converters: the paper's evaluation sets, in the files their authors publish, to BEIR folders.

``nyx convert FORMAT SRC --out DIR`` (or :func:`convert`) writes a folder that ``nyx evaluate``, ``nyx report`` and
``eval_report`` (as an extra evaluation set, ``eval.extra_sets`` in the profile) read; its layout and the answer
fields are described in :mod:`nyx.data.convert.common`. One module per format, each stating the published file and
fields it reads:

=========== ============================================================ ==========================================
format      reads                                                        gold documents
=========== ============================================================ ==========================================
mmqa        MMQA_<split>.jsonl + MMQA_texts/tables/images.jsonl + images supporting_context (texts, tables, images)
scienceqa   problems.json + pid_splits.json + images/<split>/<pid>/      the question's image+hint; its lecture
hotpotqa    hotpot_dev_distractor_v1.json                                supporting-fact paragraphs
2wiki       2WikiMultihopQA dev.json                                     supporting-fact paragraphs
musique     musique_ans_v1.0_dev.jsonl                                   is_supporting paragraphs
bamboogle   the Bamboogle CSV (Question, Answer)                         none: no corpus ships with it
pagedoc     a PDF folder + samples.json (MMLongBench-Doc layout)         the evidence pages, ids <stem>__pNNN
=========== ============================================================ ==========================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nyx.data.convert.bamboogle import convert_bamboogle
from nyx.data.convert.common import ConvertError, ConvertResult
from nyx.data.convert.hotpotqa import convert_hotpotqa
from nyx.data.convert.mmqa import convert_mmqa
from nyx.data.convert.musique import convert_musique
from nyx.data.convert.pagedoc import convert_pagedoc
from nyx.data.convert.scienceqa import convert_scienceqa
from nyx.data.convert.twowiki import convert_2wiki

#: A converter: ``(src, out, split=None, limit=None, image_config=None) -> ConvertResult``
Converter = Callable[..., ConvertResult]

CONVERTERS: dict[str, Converter] = {
    "mmqa": convert_mmqa,
    "scienceqa": convert_scienceqa,
    "hotpotqa": convert_hotpotqa,
    "2wiki": convert_2wiki,
    "musique": convert_musique,
    "bamboogle": convert_bamboogle,
    "pagedoc": convert_pagedoc,
}


def convert(
    fmt: str,
    src: str | Path,
    out: str | Path,
    split: str | None = None,
    limit: int | None = None,
    image_config: Any = None,
) -> ConvertResult:
    """Convert ``src`` (in ``fmt``'s published layout) into the BEIR folder ``out``.

    ``split``: the set's split where it has several (default: its evaluation split); ``limit``: the first N
    questions only; ``image_config``: the pixel budget of rendered PDF pages (``pagedoc``)."""
    if fmt not in CONVERTERS:
        raise ConvertError(f"unknown format {fmt!r}: one of {', '.join(CONVERTERS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return CONVERTERS[fmt](Path(src), Path(out), split=split, limit=limit, image_config=image_config)


__all__ = ["CONVERTERS", "ConvertError", "ConvertResult", "Converter", "convert"]
