"""The Dagster code location loads with its jobs, schedules and sensors (stopped by default), selection strings parse
(with DVC installed), and raw_documents materialises."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.paths import REPO


def test_code_location_loads_with_every_asset_and_check(definitions):
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "raw_documents" in keys
    checks = {c.name for c in graph.asset_check_keys}
    assert "raw_documents_valid" in checks


def test_asset_selection_string_parses_with_dvc_installed():
    # DVC's hydra-core pulls antlr4 4.9, which breaks this parser (dagster#27487); our pins must prevent it.
    import antlr4
    import dvc  # noqa: F401  (installed in the same environment)

    sel = dg.AssetSelection.from_string('key:"raw_documents"+ or group:"data"')
    assert sel is not None
    assert antlr4.__name__  # imported from the pinned runtime
    from importlib.metadata import version

    assert version("antlr4-python3-runtime").startswith("4.13")


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(tmp_path / "dh"),
            "NYX_DATA_DIR": str(tmp_path / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        }
    )
    (tmp_path / "dh").mkdir(exist_ok=True)
    (tmp_path / "dh" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return env


def test_dg_check_defs_validates_the_project(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded successfully" in (proc.stdout + proc.stderr)


@pytest.mark.slow
def test_dagster_cli_materializes_raw_documents_with_dvc_data_version(tmp_path):
    from nyx.data.sample import generate_sample
    from nyx.versioning.dvc import dvc_md5

    generate_sample(tmp_path / "data" / "raw", n_docs=12, seed=3)
    env = _env(tmp_path)
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "orchestration.definitions",
            "--select",
            "raw_documents",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the materialisation recorded DVC's md5 of data/raw as its data version
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dh"))
    ev = instance.get_latest_materialization_event(dg.AssetKey("raw_documents"))
    assert ev is not None
    tags = ev.asset_materialization.tags or {}
    assert tags.get("dagster/data_version") == dvc_md5(tmp_path / "data" / "raw")
    assert list((tmp_path / "data" / "documents").glob("*.jsonl"))


def test_asset_groups_follow_the_flow_without_a_group_level_loop(definitions):
    """Groups collapsed in the lineage view (the UI's default) must read as a chain, not a loop such as
    data -> versioning -> training -> data (issue 15, item 6)."""
    graph = definitions.resolve_asset_graph()
    group = {k: graph.get(k).group_name for k in graph.get_all_asset_keys()}
    edges = {(group[p], group[k]) for k in group for p in graph.get(k).parent_keys if group[p] != group[k]}
    order = ["data", "versioning", "stage1", "feedback", "stage2", "evaluation", "registry"]
    assert set(group.values()) == set(order), set(group.values())
    assert all(order.index(a) < order.index(b) for a, b in edges), sorted(edges)
    assert group[dg.AssetKey("feedback_preferences")] == "feedback"


def test_code_location_has_jobs_schedules_and_sensor_stopped_by_default(monkeypatch, definitions):
    monkeypatch.delenv("NYX_SCHEDULES", raising=False)
    monkeypatch.delenv("NYX_PROFILE", raising=False)
    defs = definitions
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs} >= {"nightly_incremental", "weekly_retrain"}
    nightly = defs.resolve_job_def("nightly_incremental")
    weekly = defs.resolve_job_def("weekly_retrain")
    assert {k.to_user_string() for k in nightly.asset_layer.executable_asset_keys} >= {"raw_documents", "corpus_chunks"}
    assert "champion_model" in {k.to_user_string() for k in weekly.asset_layer.executable_asset_keys}
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["nightly_incremental_schedule"].job_name == "nightly_incremental"
    assert schedules["weekly_retrain_schedule"].job_name == "weekly_retrain"
    import orchestration.schedules as mod

    importlib.reload(mod)
    assert {s.default_status for s in mod.SCHEDULES} == {dg.DefaultScheduleStatus.STOPPED}
    assert defs.resolve_sensor_def("new_shard_sensor").default_status == dg.DefaultSensorStatus.STOPPED
