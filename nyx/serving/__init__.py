"""Serving: the MLflow pyfunc embedding model (:mod:`nyx.serving.pyfunc`) and ``nyx serve``, the search API
(:mod:`nyx.serving.server`, batching in :mod:`nyx.serving.batching`)."""

from nyx.serving.batching import MicroBatcher
from nyx.serving.server import (
    API_KEY_ENV,
    CORPUS_PATH_TAG,
    INDEX_DIR_TAG,
    ServeError,
    ServeSettings,
    create_app,
    parse_source,
)

__all__ = [
    "API_KEY_ENV",
    "CORPUS_PATH_TAG",
    "INDEX_DIR_TAG",
    "MicroBatcher",
    "ServeError",
    "ServeSettings",
    "create_app",
    "parse_source",
]
