"""Prepare a persistent, offline Dagster instance under ``$DAGSTER_HOME`` (default ``.dagster_home/``)."""

from __future__ import annotations

import os
from pathlib import Path

from nyx.paths import REPO_ROOT

DAGSTER_YAML = """\
# Written by orchestration/instance_setup.py. Run history persists here (git-ignored).
telemetry:
  enabled: false
concurrency:
  pools:
    # Training assets run in pool `gpu`, DVC calls in pool `dvc`: one at a time each.
    default_limit: 1
# With the daemon (`make ui` / `dagster dev`): runs whose worker died are marked failed, and pool slots still held
# by a run that has ended are freed after a minute. `make run` has no daemon: it cleans up explicitly before
# starting (orchestration/stale_runs.py).
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 60
"""

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def ensure_instance(home: str | os.PathLike | None = None) -> Path:
    """Create ``DAGSTER_HOME`` with telemetry off; set the offline environment for this process."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    home = Path(home or os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() != DAGSTER_YAML:
        cfg.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


if __name__ == "__main__":
    print(f"DAGSTER_HOME={ensure_instance()}")
