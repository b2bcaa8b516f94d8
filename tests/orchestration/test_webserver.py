"""The Dagster webserver serves the code location: its GraphQL API lists the assets and checks, and launches a
materialisation of ``raw_documents`` that runs (in a subprocess, by the default run launcher) to success."""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest

from tests.dagster_servers import dagster_server

pytestmark = pytest.mark.slow  # a webserver and a run in subprocesses

# Run history in a temporary instance; telemetry off; runs start at once without the daemon (the default
# QueuedRunCoordinator would wait for `dagster-daemon`); each run executes in its own process.
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: dagster
  class: DefaultRunLauncher
"""

ASSETS_QUERY = """
query {
  assetNodes { assetKey { path } groupName isPartitioned assetChecksOrError { ... on AssetChecks { checks { name } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } }
}
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      assetMaterializations { assetKey { path } }
      eventConnection { events {
        __typename
        ... on MessageEvent { message }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success } }
      } }
    }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _gql(client: httpx.Client, query: str, variables: dict | None = None) -> dict:
    resp = client.post("/graphql", json={"query": query, "variables": variables or {}})
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture
def webserver(tmp_path, sample_raw):
    """``dagster-webserver -m orchestration.definitions`` on a free port, over a temporary instance and sample data."""
    shutil.copytree(sample_raw, tmp_path / "data" / "raw")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        NYX_DATA_DIR=str(tmp_path / "data"),
        NYX_PROFILE="sample",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
        NYX_DVC_REMOTE=str(tmp_path / "remote"),
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
    )
    env.pop("NYX_SCHEDULES", None)
    with dagster_server(
        ["dagster-webserver"],
        env,
        tmp_path / "webserver.log",
        timeout=90,
        ready=lambda c: c.get("/server_info").status_code == 200,
    ) as (_, client):
        yield client, tmp_path


@pytest.mark.timeout(240)
def test_webserver_lists_assets_and_launches_raw_documents_run_to_success(webserver):
    client, tmp_path = webserver

    data = _gql(client, ASSETS_QUERY)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"raw_documents", "corpus_chunks", "data_snapshot", "champion_model"} <= set(nodes)
    assert nodes["corpus_chunks"]["isPartitioned"] and not nodes["raw_documents"]["isPartitioned"]
    checks = {c["name"] for n in nodes.values() for c in (n["assetChecksOrError"] or {}).get("checks", [])}
    assert {"raw_documents_valid", "corpus_chunks_valid"} <= checks
    (repo,) = data["repositoriesOrError"]["nodes"]

    params = {
        "selector": {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["raw_documents"]}],
        },
        "runConfigData": {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "nyx/test", "value": "webserver"}]},
    }
    launched = _gql(client, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + 150
    while True:
        run = _gql(client, RUN_QUERY, {"runId": run_id})["runOrError"]
        if run["status"] in FINISHED or time.monotonic() > deadline:
            break
        time.sleep(1)
    messages = [e.get("message") for e in run["eventConnection"]["events"] if e.get("message")]
    assert run["status"] == "SUCCESS", messages[-20:]
    assert [m["assetKey"]["path"] for m in run["assetMaterializations"]] == [["raw_documents"]]
    evaluations = {
        e["evaluation"]["checkName"]: e["evaluation"]["success"]
        for e in run["eventConnection"]["events"]
        if e["__typename"] == "AssetCheckEvaluationEvent"
    }
    assert evaluations == {"raw_documents_valid": True}  # the blocking check ran with the asset
    docs = sorted(p.name for p in (tmp_path / "data" / "documents").glob("*.jsonl"))
    assert docs == ["shard-00000.jsonl", "shard-00001.jsonl"]
