"""Test-wide settings: nothing reaches the network; every store lives in a temporary folder."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GIT_AUTHOR_NAME", "nyx-tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@nyx.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "nyx-tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@nyx.invalid")
