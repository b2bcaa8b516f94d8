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


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny offline Qwen2.5-VL, built into a temporary cache (once per test module)."""
    from nyx.model.profiles import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("nyx-cache"))


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    """A NyxEncoder over the tiny model, on the CPU, without progress bars."""
    from nyx.model.encoder import NyxEncoder

    return NyxEncoder.from_pretrained(tiny_dir, device="cpu", show_progress=False)
