"""TrainingReporter: a resumed run does not log again the steps its MLflow run already holds."""

from __future__ import annotations

import time

import pytest


@pytest.fixture()
def run_id(tmp_path, monkeypatch, mlflow_uri):
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    c = MlflowClient(tracking_uri=mlflow_uri)
    exp = c.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    rid = c.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    # the killed process logged steps 1..5; its last checkpoint was at step 3
    c.log_batch(rid, metrics=[Metric("loss", 10.0 - s, ts, s) for s in range(1, 6)])
    monkeypatch.setenv("MLFLOW_RUN_ID", rid)
    return c, rid


def test_resumed_reporter_skips_steps_already_logged_and_records_how_the_replay_compared(run_id):
    from nyx.tracking import TrainingReporter

    client, rid = run_id
    reporter = TrainingReporter(enabled=True, pipes=False)
    for step in range(4, 9):  # resumed from the step-3 checkpoint: steps 4 and 5 are replayed
        reporter.on_log(step, {"loss": 10.0 - step + (0.25 if step == 5 else 0.0), "lr": 1e-3})
    reporter.finish()
    history = client.get_metric_history(rid, "loss")
    steps = [m.step for m in history]
    assert sorted(steps) == list(range(1, 9)) and len(steps) == len(set(steps))
    assert {m.step: m.value for m in history}[5] == 5.0  # the value logged first is kept
    assert [m.step for m in client.get_metric_history(rid, "lr")] == [6, 7, 8]
    tags = client.get_run(rid).data.tags
    assert tags["nyx.replayed_steps"] == "2" and float(tags["nyx.replayed_max_abs_loss_diff"]) == 0.25


def test_fresh_reporter_logs_every_step_and_sets_no_replay_tags(run_id, monkeypatch):
    from mlflow import MlflowClient

    from nyx.tracking import TrainingReporter

    client, rid = run_id
    fresh = client.create_run(client.get_run(rid).info.experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", fresh)
    reporter = TrainingReporter(enabled=True, pipes=False)
    for step in (1, 2):
        reporter.on_log(step, {"loss": 1.0})
    reporter.finish()
    assert [m.step for m in MlflowClient().get_metric_history(fresh, "loss")] == [1, 2]
    assert "nyx.replayed_steps" not in client.get_run(fresh).data.tags
