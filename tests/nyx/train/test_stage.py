"""The stage life cycle (nyx.train.stage): what Stage 2 builds on, skip/resume/fresh, choosing a stage on dev."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nyx.data.records import Part, Record
from nyx.paths import DataPaths
from nyx.settings import load_profile
from nyx.train.backend import make_accelerator
from nyx.train.config import TrainConfig
from nyx.train.model_setup import load_encoder
from nyx.train.stage import (
    StageInputs,
    StageNotFinished,
    StageState,
    best_stage,
    finished_stage,
    plan_stage,
    stage_train_config,
)
from nyx.train.trainer import ContrastiveTrainer, train
from nyx.utils.integrity import write_manifest

TOPICS = [
    "apples grow on trees in the orchard",
    "the train leaves the station at noon",
    "cats sleep most of the day",
    "rivers flow into the sea",
    "the moon orbits the earth",
    "bread is baked in an oven",
    "snow falls in winter",
    "bees make honey from nectar",
]
#: Stage-2 settings of the rehearsal (= paper) profile, made quick: one process, no DeepSpeed, 2 steps
QUICK = {
    "deepspeed": None,
    "grad_cache": False,
    "max_steps": 2,
    "learning_rate": 1e-2,
    "per_device_batch_size": 4,
    "n_negatives": 1,
    "gradient_checkpointing": False,
}


def _triples(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, t in enumerate(TOPICS):
            f.write(
                json.dumps(
                    {
                        "query": {"id": f"q{i}", "content": [{"type": "text", "text": f"what about {t.split()[1]}?"}]},
                        "positive": {"id": f"d{i}", "content": [{"type": "text", "text": t}]},
                        "negatives": [{"id": f"n{i}", "content": [{"type": "text", "text": TOPICS[(i + 3) % 8]}]}],
                    }
                )
                + "\n"
            )
    return path


def _docs() -> list[Record]:
    return [Record(f"d{i}", [Part.of_text(t)]) for i, t in enumerate(TOPICS)]


def _encode(model: str | Path) -> np.ndarray:
    from nyx.model.encoder import NyxEncoder

    return NyxEncoder.from_pretrained(str(model), dtype=torch.float64, show_progress=False).encode(_docs())


def _finished_stage1(paths: DataPaths, lora: bool) -> StageState:
    """A real (2-step) Stage 1 on the tiny model, recorded as finished."""
    out = paths.checkpoints / "stage1"
    data = _triples(paths.root / "s1.jsonl")
    result = train(
        TrainConfig(
            model="tiny",
            output_dir=str(out),
            data=[{"name": "s1", "kind": "triples", "path": str(data)}],
            lora={"enabled": lora, "rank": 8, "alpha": 64, "dropout": 0.1},
            **QUICK,
        )
    )
    state = StageState(
        stage="stage1",
        status="finished",
        fingerprint="f",
        mlflow_run_id="r",
        registered_model="nyx-retriever",
        base_model="tiny",
        start_model="tiny",
        final_dir=str(result.final_dir),
        is_adapter=lora,
        model_version="1",
        dev=[{"dim": 128, "ndcg@10": 0.5}],
    )
    state.save(out)
    return state


def _profile(mode: str = "continue", lora: bool = True):
    overrides = {"stage2": {"mode": mode, "train": dict(QUICK)}}
    if not lora:
        overrides["stage2"]["train"]["lora"] = {"enabled": False}
    return load_profile("rehearsal", overrides)


#: Embeddings of the same weights in float64, returned as float32: equal up to one float32 rounding
SAME = 8 * float(np.finfo(np.float32).eps)
#: Two steps at lr 1e-2 move the tiny model's unit embeddings by far more than this
MOVED = 1e-3


@pytest.fixture(scope="module")
def lora_stages(tmp_path_factory):
    paths = DataPaths.at(tmp_path_factory.mktemp("stages") / "data")
    s1 = _finished_stage1(paths, lora=True)
    _triples(paths.feedback / "train_triples.jsonl")
    return paths, s1


def test_stage2_continue_on_lora_continues_the_stage1_adapter_on_the_base(lora_stages):
    paths, s1 = lora_stages
    spec = stage_train_config(_profile(), "stage2", paths)
    assert spec.config.model == "tiny" and spec.config.init_adapter == s1.final_dir
    assert spec.start_model == s1.final_dir and spec.base_model == "tiny"
    assert spec.inputs["stage1"] == Path(s1.final_dir)  # a new Stage 1 makes Stage 2 run again


def test_stage2_saved_at_step_0_reloads_as_stage1_and_after_training_differs_from_stage1_and_base(lora_stages):
    """The defect this guards: Stage 2 used to record the *base* model in its adapter, so it reloaded as the base."""
    paths, s1 = lora_stages
    spec = stage_train_config(_profile(), "stage2", paths)
    stage1, base = _encode(s1.final_dir), _encode("tiny")
    assert np.abs(stage1 - base).max() > MOVED  # Stage 1 really moved away from the base

    trainer = ContrastiveTrainer(spec.config)  # the model Stage 2 starts from, saved as training would save it
    trainer.accelerator = make_accelerator(spec.config)
    trainer.encoder = load_encoder(spec.config, trainer.accelerator.device)
    trainer.model = trainer.encoder.module
    step0 = paths.root / "stage2-step0"
    trainer._save_model(step0)
    adapter = json.loads((step0 / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] != s1.final_dir  # an adapter on the base, not on a merged copy
    assert np.abs(_encode(step0) - stage1).max() <= SAME

    result = train(spec.config)
    stage2 = _encode(result.final_dir)
    assert np.abs(stage2 - stage1).max() > MOVED and np.abs(stage2 - base).max() > MOVED
    assert result.run_info["init_adapter"] == s1.final_dir and result.run_info["lora_rank"] == 8


def test_stage2_retrain_starts_from_the_base_on_the_stage1_mix_plus_feedback(lora_stages):
    paths, _ = lora_stages
    profile = _profile("retrain")
    from nyx.data.sample.training_sources import ensure_sample_sources
    from nyx.train.sources import convert_source

    ensure_sample_sources(paths, profile)
    for src in profile.stage1.extra_sources:  # the rehearsal's research-format and HotpotQA-format fixtures
        convert_source(src, paths)
    spec = stage_train_config(profile, "stage2", paths)
    assert spec.config.model == "tiny" and spec.config.init_adapter is None
    assert [s.name for s in spec.config.data] == ["nyxqa", "mmeb-sample", "hotpotqa-sample", "feedback"]
    assert set(spec.inputs) == {"nyxqa", "hard_negatives", "feedback", "source.mmeb-sample", "source.hotpotqa-sample"}


def test_stage2_continue_without_lora_loads_full_stage1_weights(tmp_path):
    paths = DataPaths.at(tmp_path / "data")
    s1 = _finished_stage1(paths, lora=False)
    _triples(paths.feedback / "train_triples.jsonl")
    spec = stage_train_config(_profile(lora=False), "stage2", paths)
    assert spec.config.model == s1.final_dir and spec.config.init_adapter is None


def test_stage2_needs_a_finished_stage1_and_feedback(tmp_path):
    paths = DataPaths.at(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="no feedback triples"):
        stage_train_config(_profile(), "stage2", paths)
    _triples(paths.feedback / "train_triples.jsonl")
    with pytest.raises(StageNotFinished, match="stage1 has not finished"):
        stage_train_config(_profile(), "stage2", paths)


def test_plan_skips_a_finished_match_resumes_a_running_one_and_starts_fresh_on_change(tmp_path):
    out = tmp_path / "stage1"
    spec = StageInputs(config=TrainConfig(output_dir=str(out)), inputs={"a": tmp_path / "a.txt"}, base_model="tiny")
    (tmp_path / "a.txt").write_text("one")
    first = plan_stage("stage1", spec, run_exists=lambda rid: True)
    assert first.action == "fresh"
    state = StageState(
        stage="stage1",
        status="running",
        fingerprint=first.fingerprint,
        mlflow_run_id="r1",
        registered_model="m",
        base_model="tiny",
        start_model="tiny",
    )
    out.mkdir()
    state.save(out)
    assert plan_stage("stage1", spec, run_exists=lambda rid: True).action == "resume"
    assert plan_stage("stage1", spec, run_exists=lambda rid: False).action == "fresh"  # its MLflow run is gone
    final = out / "final"
    final.mkdir()
    (final / "adapter_model.safetensors").write_bytes(b"weights")
    write_manifest(final)
    state.model_copy(update={"status": "finished", "final_dir": str(final)}).save(out)
    assert plan_stage("stage1", spec, run_exists=lambda rid: True).action == "skip"
    assert plan_stage("stage1", spec, run_exists=lambda rid: True, force=True).action == "fresh"
    (tmp_path / "a.txt").write_text("two")  # an input changed
    assert plan_stage("stage1", spec, run_exists=lambda rid: True).action == "fresh"


def test_state_file_that_is_not_a_stage_state_is_a_clear_error(tmp_path):
    (tmp_path / "nyx_state.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(ValueError, match="is not a Nyx stage state"):
        StageState.load(tmp_path)


def _finished(paths: DataPaths, stage: str, ndcg: float, test_ndcg: float | None = None) -> None:
    out = paths.checkpoints / stage
    out.mkdir(parents=True, exist_ok=True)
    StageState(
        stage=stage,
        status="finished",
        fingerprint="f",
        mlflow_run_id="r",
        registered_model="m",
        base_model="tiny",
        start_model="tiny",
        final_dir=str(out),
        model_version=stage[-1],
        dev=[{"dim": 128, "ndcg@10": ndcg}],
    ).save(out)


def test_best_stage_is_chosen_on_dev_and_stage1_wins_when_better(tmp_path):
    paths = DataPaths.at(tmp_path / "data")
    with pytest.raises(StageNotFinished):
        best_stage(paths, "ndcg@10")
    _finished(paths, "stage1", 0.40)
    _finished(paths, "stage2", 0.30)
    best, values = best_stage(paths, "ndcg@10")
    assert best.stage == "stage1" and values == {"stage1": 0.40, "stage2": 0.30}
    _finished(paths, "stage2", 0.40)  # a tie goes to Stage 2
    assert best_stage(paths, "ndcg@10")[0].stage == "stage2"
    with pytest.raises(ValueError, match="has no dev recall@10"):
        best_stage(paths, "recall@10")
    assert finished_stage(paths, "stage1").model_uri == "models:/m/1"


def test_one_pixel_budget_reaches_training_the_saved_model_evaluation_and_the_vlms(lora_stages, tmp_path):
    from assets.lib.profile import generator_config
    from nyx.model.encoder import NyxEncoder
    from nyx.retrieval import NyxRetriever

    paths, _ = lora_stages
    budget = 64 * 28 * 28  # not the model profile's 400 * 28 * 28
    profile = _profile().with_overrides({"images": {"max_pixels": budget, "min_pixels": 8 * 28 * 28}})
    spec = stage_train_config(profile, "stage2", paths)
    assert (spec.config.max_pixels, spec.config.min_pixels) == (budget, 8 * 28 * 28)
    result = train(spec.config.model_copy(update={"output_dir": str(tmp_path / "s2")}))
    reloaded = NyxEncoder.from_pretrained(str(result.final_dir), show_progress=False)  # an adapter folder
    assert (reloaded.config.max_pixels, reloaded.config.min_pixels) == (budget, 8 * 28 * 28)
    assert dict(reloaded.processor.image_processor.size)["longest_edge"] == budget
    untrained = NyxRetriever(model=profile.model, encoder_overrides=profile.encoder_overrides())
    assert untrained.encoder.config.max_pixels == budget
    assert generator_config(profile, paths).image.max_pixels == budget
    with pytest.raises(ValueError, match="set once, in images.max_pixels"):
        stage_train_config(_profile().with_overrides({"stage2": {"train": {"max_pixels": budget}}}), "stage2", paths)


def test_loss_trend_compares_the_same_examples_when_there_are_two_epochs():
    from nyx.train.stage import loss_trend

    # one epoch of 4 batches, easy batches first: the batch order alone makes the loss "rise"
    one_epoch = [(s, loss, s / 4) for s, loss in zip(range(1, 5), [1.0, 1.2, 2.0, 2.4])]
    t = loss_trend(one_epoch)
    assert t["last"] > t["first"] and "first vs last" in t["how"]
    # the same batches again in epoch 2, each a little lower: epoch means compare the model, not the batches
    two = one_epoch + [(s + 4, loss * 0.9, (s + 4) / 4) for s, loss in zip(range(1, 5), [2.4, 2.0, 1.2, 1.0])]
    t = loss_trend(two)
    assert "epoch 1 vs epoch 2" in t["how"] and t["last"] == pytest.approx(0.9 * t["first"], rel=1e-12)
    assert loss_trend([(1, float("nan"), 0.5), (2, 1.0, 1.0)])["finite"] is False
    assert loss_trend([(1, 1.0, 1.0)])["comparable"] is False
