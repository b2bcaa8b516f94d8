"""Running the whole asset graph as `make run` does (same driver), in a temporary git repository with its own
Dagster, MLflow and DVC stores: shared by the end-to-end tests of each profile."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg


def graph_env(root: Path, profile: str, overrides: dict[str, Any]) -> dict[str, str]:
    """The environment that points every store of the pipeline under ``root``."""
    return {
        "NYX_DATA_DIR": str(root / "data"),
        "NYX_REPO_DIR": str(root),
        "NYX_DVC_REMOTE": str(root / "remote"),
        "DAGSTER_HOME": str(root / "dh"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "NYX_PROFILE_OVERRIDES": json.dumps(overrides),
        "NYX_PROFILE": profile,
    }


def run_whole_graph(
    root: Path,
    profile: str,
    overrides: dict[str, Any],
    *,
    n_docs: int,
    seed: int,
    n_shards: int = 2,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A synthetic sample of ``n_docs`` documents in ``n_shards`` shards, then every asset materialised."""
    from nyx.data.sample import generate_sample

    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "dh").mkdir()
    (root / "dh" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    generate_sample(root / "data" / "raw", n_docs=n_docs, seed=seed, n_shards=n_shards)
    env = {**graph_env(root, profile, overrides), **(extra_env or {})}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from nyx.retrieval.dense import DOCUMENTS_ENCODED
        from orchestration.definitions import defs as lazy
        from orchestration.pipeline import materialize_graph

        defs = lazy()
        instance = dg.DagsterInstance.from_config(str(root / "dh"))
        before = DOCUMENTS_ENCODED.copy()
        results = materialize_graph(defs, instance)
        encoded = DOCUMENTS_ENCODED - before
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "root": root,
        "results": results,
        "defs": defs,
        "instance": instance,
        "documents_encoded": dict(encoded),
    }  # per (model id, revision), by dense retrievers in this process
