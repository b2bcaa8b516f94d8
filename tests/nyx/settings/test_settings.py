"""Pipeline profiles: the rehearsal is the paper profile with only weights and sizes scaled down."""

from __future__ import annotations

from typing import Any

import pytest

from nyx.settings import PROFILES, REHEARSAL_SCALE, load_profile


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


#: Every setting in which the rehearsal may differ from the paper: weights, sizes, the tiny model's learning rate,
#: the process count, and the offline generator and reader. Anything else differing is drift.
REHEARSAL_DIFFERS = {
    "name",
    "model",
    "device",
    "sample.n_docs",
    "sample.seed",
    "generator.kind",
    "reader.kind",
    "launch.processes_per_node",
    "nyxqa.dev_per_group",
    "nyxqa.test_per_group",
    "feedback.top_k",
    *(
        f"{stage}.train.{key}"
        for stage in ("stage1", "stage2")
        for key in (
            "model",
            "learning_rate",
            "per_device_batch_size",
            "grad_cache_chunk_size",
            "max_length",
            "save_steps",
            "logging_steps",
        )
    ),
    "stage1.train.max_steps",
    "stage2.train.epochs",
    "miner.model",  # the tiny randomly initialised Llama-3.2-Vision instead of mmE5's weights
    "stage1.extra_sources",  # offline fixtures of each published format instead of the paper's files
}


def test_rehearsal_differs_from_paper_only_in_weights_sizes_and_processes():
    paper, rehearsal = _flat(PROFILES["paper"].model_dump()), _flat(PROFILES["rehearsal"].model_dump())
    differing = {k for k in paper.keys() | rehearsal.keys() if paper.get(k) != rehearsal.get(k)}
    assert differing == REHEARSAL_DIFFERS, (differing - REHEARSAL_DIFFERS, REHEARSAL_DIFFERS - differing)


def test_every_paper_switch_holds_in_the_rehearsal():
    r = PROFILES["rehearsal"]
    for stage in (r.stage1, r.stage2):
        t = stage.train.given()
        assert t["lora"]["enabled"] and t["lora"]["rank"] == 8 and t["lora"]["alpha"] == 64
        assert t["lora"]["dropout"] == 0.1
        assert t["deepspeed"] == "configs/deepspeed_zero2.json" and t["grad_cache"] and t["gradient_checkpointing"]
    assert r.stage2.mode == "continue"
    assert r.launch.kind == "torchrun" and r.launch.world_size == 2
    assert PROFILES["paper"].launch.world_size == 8
    assert r.reader.openai.model == PROFILES["paper"].reader.openai.model == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_the_rehearsal_is_built_from_the_paper_definition():
    """Changing a paper setting changes the rehearsal too: one definition, two scales."""
    changed = load_profile("paper", {"stage1": {"train": {"temperature": 0.05}}}).with_overrides(REHEARSAL_SCALE)
    assert changed.stage1.train.temperature == 0.05
    assert PROFILES["rehearsal"].stage1.train.temperature == PROFILES["paper"].stage1.train.temperature


def test_paper_reader_is_qwen_7b_not_the_generator():
    p = PROFILES["paper"]
    assert p.reader.kind == "openai" and p.reader.openai.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert p.generator.openai.model == "OpenGVLab/InternVL3-78B"


def test_reader_can_still_be_named_by_a_string_override():
    assert load_profile("sample", {"reader": "generator"}).reader.kind == "generator"
    with pytest.raises(ValueError):
        load_profile("sample", {"reader": "gpt"})


@pytest.mark.parametrize(
    "train, message",
    [
        ({"learning_rte": 1e-4}, "learning_rte"),  # a misspelt setting fails when the profile loads
        ({"epochs": "two"}, "epochs"),  # so does a wrong type
        ({"max_pixels": 1000}, "the pixel budget is set once, in images.max_pixels"),
        ({"output_dir": "/tmp/x"}, "set by the stage itself"),
    ],
)
def test_stage_training_settings_are_checked_when_the_profile_loads(train, message):
    with pytest.raises(ValueError, match=message):
        load_profile("sample", {"stage1": {"train": train}})


def test_stage_training_settings_keep_only_what_was_given():
    """A profile's ``stage*.train`` holds what it sets; the rest are TrainConfig's defaults (an explicit null too)."""
    paper = load_profile("paper")
    assert "save_steps" not in paper.stage1.train.given()
    changed = paper.with_overrides({"stage1": {"train": {"max_steps": None, "lora": {"rank": 4}}}})
    given = changed.stage1.train.given()
    assert given["max_steps"] is None and given["lora"] == {**paper.stage1.train.given()["lora"], "rank": 4}
    assert changed.stage2.train.given() == paper.stage2.train.given()
