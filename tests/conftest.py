"""Test-wide settings and the fixtures shared by every test module: nothing reaches the network; every store lives in
a temporary folder.

The tests mirror the code: ``tests/nyx/<package>/`` for ``nyx/<package>/`` (``tests/nyx/`` for its top-level modules),
``tests/assets/``, ``tests/orchestration/``, ``tests/benchmarks/``, and ``tests/e2e/`` for whole-graph runs. Helpers
shared by several modules sit at the top: ``tests/graph_runs.py``, ``tests/tolerances.py``, ``tests/paths.py`` (the
repository and ``tests/fixtures/``).

``make test`` (and CI) runs everything. For a quick loop while editing, leave out the tests marked ``slow`` (whole-graph
runs, the webserver, subprocess pipelines, multi-process training, the benchmarks' end-to-end modes)::

    .venv/bin/python -m pytest -m "not slow" -q          # ~620 tests, about 2 min of test time instead of ~18
    .venv/bin/python -m pytest tests/nyx/model -q        # or one folder

Mark a test (or a module, with ``pytestmark = pytest.mark.slow``) ``slow`` when it takes more than a few seconds.

Fixture scopes: what no test changes is built once per session (the generated sample corpora, the loaded Dagster
definitions); tests copy a corpus before writing into it. What tests write to (stores, resources) is per test, under
``tmp_path``.
"""

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


from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny offline Qwen2.5-VL, built into a temporary cache (once per test module)."""
    from nyx.model.tiny import ensure_tiny_model

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


# -- generated sample corpora (read-only: copy one before writing into it) -------------------------------------------


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory):
    """``sample_corpus(n_docs, n_shards, seed=5)``: the synthetic OBELICS sample's raw folder (shards + images),
    generated once per session for each set of arguments. Shared by every test that asks: never write into it."""
    from nyx.data.sample import generate_sample

    made: dict[tuple[int, int, int], Path] = {}

    def make(n_docs: int, n_shards: int, seed: int = 5) -> Path:
        key = (n_docs, n_shards, seed)
        if key not in made:
            root = tmp_path_factory.mktemp(f"sample-{n_docs}docs-{n_shards}shards-seed{seed}")
            generate_sample(root / "raw", n_docs=n_docs, seed=seed, n_shards=n_shards)
            made[key] = root / "raw"
        return made[key]

    return make


@pytest.fixture(scope="session")
def sample_raw(sample_corpus) -> Path:
    """12 documents in two shards (``shard-00000``, ``shard-00001``) + images; read-only."""
    return sample_corpus(12, 2)


@pytest.fixture(scope="session")
def sample_raw_24(sample_corpus) -> Path:
    """24 documents in two shards + images (enough for the NyxQA chain's splits); read-only."""
    return sample_corpus(24, 2)


@pytest.fixture(scope="session")
def sample_raw3(sample_corpus) -> Path:
    """12 documents in three shards + images; read-only."""
    return sample_corpus(12, 3)


# -- Dagster ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def definitions():
    """The code location (``orchestration.definitions.defs()``), loaded once: for tests that read its structure (asset
    graph, jobs, schedules, sensors). Its resources are built from the environment at load time, so a test that runs
    something against its own stores passes its own resources (``tmp_resources``) or loads the definitions itself."""
    from orchestration.definitions import defs

    return defs()


@pytest.fixture
def tmp_resources(tmp_path) -> dict:
    """The pipeline's resources with every store under this test's ``tmp_path``: the ``sample`` profile over
    ``tmp_path/data``, DVC in ``tmp_path``, MLflow in ``tmp_path/mlflow.db`` (artifacts in ``tmp_path/artifacts``)."""
    from orchestration.resources import DvcResource, MlflowResource, NyxSettings

    return {
        "settings": NyxSettings(profile="sample", data_dir=str(tmp_path / "data")),
        "dvc": DvcResource(repo_dir=str(tmp_path)),
        "mlflow": MlflowResource(
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts")
        ),
    }


# -- MLflow ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> Iterator[str]:
    """The MLflow library pointed at a temporary sqlite store (``tmp_path/mlflow.db``, the same one ``tmp_resources``
    uses) for this test only: ``MLFLOW_TRACKING_URI`` and the library's tracking and registry URIs are restored
    afterwards."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored afterwards (set_tracking_uri also writes it)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


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
