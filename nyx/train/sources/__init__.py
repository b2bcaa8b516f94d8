"""External Stage-1 training sets: read in the format their publisher ships, converted once into Nyx triples.

Each :class:`~nyx.settings.TrainingSource` of ``stage1.extra_sources`` becomes
``<data>/training_sources/<name>/``::

    triples.jsonl   one Nyx triple per usable row ({"id", "query", "positive", "negatives"}; nyx.train.dataset)
    images/         every image the triples use, copied under its content hash (the image store of the source)
    manifest.json   what was converted: the source file's md5, the settings, counts and rejects by reason

under the DVC-tracked data folder, and Stage 1 trains on ``triples.jsonl`` (its md5 is part of the Stage-1
fingerprint, :func:`nyx.train.stage.stage_train_config`). A source whose file and settings did not change is not
converted again (:func:`convert_source` compares the manifest).

The rules live in one module each: :mod:`~nyx.train.sources.layout` (where the files are),
:mod:`~nyx.train.sources.formats` (reading each published format), :mod:`~nyx.train.sources.convert` (the
conversion and its manifest), :mod:`~nyx.train.sources.leakage` (evaluation queries) and
:mod:`~nyx.train.sources.check` (the blocking check).
"""

from nyx.train.sources.check import SourceCheck, check_source
from nyx.train.sources.convert import CODE_VERSION, SourceStats, convert_source
from nyx.train.sources.layout import converted_file, resolve_path
from nyx.train.sources.leakage import evaluation_queries, normalize_text

__all__ = [
    "CODE_VERSION",
    "SourceCheck",
    "SourceStats",
    "check_source",
    "convert_source",
    "converted_file",
    "evaluation_queries",
    "normalize_text",
    "resolve_path",
]
