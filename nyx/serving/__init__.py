"""Serving: the MLflow pyfunc embedding model (:mod:`nyx.serving.pyfunc`) and ``nyx serve``, the search API
(the app in :mod:`nyx.serving.server`, which lists the modules it is built from; batching in
:mod:`nyx.serving.batching`)."""

from nyx.registry import CORPUS_PATH_TAG, INDEX_DIR_TAG
from nyx.serving.batching import MicroBatcher
from nyx.serving.config import API_KEY_ENV, ServeSettings
from nyx.serving.errors import ServeError
from nyx.serving.server import create_app
from nyx.serving.source import REGISTRY_PREFIX, parse_source

__all__ = [
    "API_KEY_ENV",
    "CORPUS_PATH_TAG",
    "INDEX_DIR_TAG",
    "MicroBatcher",
    "REGISTRY_PREFIX",
    "ServeError",
    "ServeSettings",
    "create_app",
    "parse_source",
]
