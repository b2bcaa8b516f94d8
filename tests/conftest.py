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


@pytest.fixture(scope="module")
def encoder64(tiny_dir):
    """The same encoder in float64, for exactness tests whose routes differ only by rounding (tests/tolerances.py)."""
    import torch

    from nyx.model.encoder import NyxEncoder

    return NyxEncoder.from_pretrained(tiny_dir, device="cpu", dtype=torch.float64, show_progress=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The worst |difference| / tolerance of every exactness check that ran (see tests/tolerances.py)."""
    from tests import tolerances

    if not tolerances.MARGINS:
        return
    terminalreporter.section("exactness margins: worst |difference| / tolerance (above 0.1 is too thin)")
    for line in tolerances.report_lines():
        terminalreporter.write_line(line)
    if os.environ.get("NYX_TOLERANCE_REPORT"):
        tolerances.write_report(os.environ["NYX_TOLERANCE_REPORT"])
