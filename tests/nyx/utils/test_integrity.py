"""Zeroed and truncated weights are caught by name: in a manifest check, when resuming, before a finished stage is
skipped, evaluated or registered, and when the registered model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nyx.utils.integrity import MANIFEST, IntegrityError, verify_manifest, write_manifest
from tests.nyx.train.test_stage import QUICK, _triples


def _zero(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, other content


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_manifest_names_a_zeroed_a_truncated_and_a_missing_file(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.bin", "sub/b.bin", "c.json"):
        (tmp_path / name).write_bytes(b"weights " + name.encode() * 100)
    digest = write_manifest(tmp_path)
    assert verify_manifest(tmp_path) == digest == verify_manifest(tmp_path, expected_digest=digest)
    _zero(tmp_path / "a.bin")
    with pytest.raises(IntegrityError, match=r"a\.bin does not match the SHA-256") as err:
        verify_manifest(tmp_path)
    assert err.value.path == tmp_path / "a.bin"
    write_manifest(tmp_path)
    _truncate(tmp_path / "sub" / "b.bin")
    with pytest.raises(IntegrityError, match=r"b\.bin has \d+ bytes, \d+ were written"):
        verify_manifest(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / "c.json").unlink()
    with pytest.raises(IntegrityError, match=r"c\.json is missing"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(IntegrityError, match="has no nyx_manifest.json"):
        verify_manifest(tmp_path)
    write_manifest(tmp_path)
    with pytest.raises(IntegrityError, match="other weights than expected"):
        verify_manifest(tmp_path, expected_digest=digest)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 5-step LoRA run with checkpoints at steps 2 and 4."""
    from nyx.train.config import TrainConfig
    from nyx.train.trainer import train

    root = tmp_path_factory.mktemp("integrity")
    data = _triples(root / "t.jsonl")
    cfg = TrainConfig(
        model="tiny",
        output_dir=str(root / "stage1"),
        save_steps=2,
        save_total_limit=None,
        data=[{"name": "t", "kind": "triples", "path": str(data)}],
        lora={"enabled": True, "rank": 8, "alpha": 64, "dropout": 0.1},
        **{**QUICK, "max_steps": 5, "epochs": 3},
    )
    return cfg, train(cfg)


def test_every_folder_the_trainer_writes_verifies(trained):
    from nyx.train.checkpoints import find_latest_checkpoint

    cfg, result = trained
    verify_manifest(result.final_dir)
    checkpoints = sorted((Path(cfg.output_dir) / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    for c in checkpoints:
        verify_manifest(c)
    assert find_latest_checkpoint(cfg.output_dir) == checkpoints[-1]


def test_resume_skips_a_truncated_checkpoint_for_the_last_one_that_verifies(trained, tmp_path, caplog):
    import shutil

    from nyx.train.checkpoints import find_latest_checkpoint

    cfg, _ = trained
    copy = tmp_path / "stage1"
    shutil.copytree(cfg.output_dir, copy)
    latest = copy / "checkpoints" / "step-00000004"
    _truncate(latest / "model" / "adapter_model.safetensors")
    with caplog.at_level("WARNING"):
        assert find_latest_checkpoint(copy) == copy / "checkpoints" / "step-00000002"
    assert "adapter_model.safetensors has" in caplog.text and "step-00000004" in caplog.text


def test_a_finished_stage_with_zeroed_weights_is_trained_again_never_skipped(trained, tmp_path):
    import shutil

    from nyx.train.stage import StageInputs, StageState, plan_stage

    cfg, result = trained
    copy = tmp_path / "stage1"
    shutil.copytree(cfg.output_dir, copy)
    spec = StageInputs(config=cfg.model_copy(update={"output_dir": str(copy)}), inputs={}, base_model="tiny")
    first = plan_stage("stage1", spec, run_exists=lambda rid: True)
    StageState(
        stage="stage1",
        status="finished",
        fingerprint=first.fingerprint,
        mlflow_run_id="r",
        registered_model="m",
        base_model="tiny",
        start_model="tiny",
        final_dir=str(copy / "final"),
        is_adapter=True,
        model_version="1",
    ).save(copy)
    assert plan_stage("stage1", spec, run_exists=lambda rid: True).action == "skip"
    _zero(copy / "final" / "adapter_model.safetensors")
    plan = plan_stage("stage1", spec, run_exists=lambda rid: True)
    assert plan.action == "resume" and "adapter_model.safetensors does not match" in plan.note
    assert plan.state.status == "running"
    assert plan_stage("stage1", spec, run_exists=lambda rid: False).action == "fresh"


def test_the_registered_model_refuses_to_load_altered_weights(trained, tmp_path, mlflow_uri):
    import mlflow

    from nyx.serving.pyfunc import log_retriever_model

    _, result = trained
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = log_retriever_model(result.final_dir, name="model")
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "copy")))
    mlflow.pyfunc.load_model(str(local))  # verifies and loads
    weights = next(local.rglob("adapter_model.safetensors"))
    _zero(weights)
    with pytest.raises(IntegrityError, match="adapter_model.safetensors does not match"):
        mlflow.pyfunc.load_model(str(local))
    assert json.loads((weights.parent / MANIFEST).read_text())["digest"]
