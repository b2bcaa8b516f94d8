"""Step 1 of a stage (:mod:`nyx.train.stage`), what to train: the :class:`~nyx.train.config.TrainConfig` the profile
asks for, with its data sources and the input files whose content it depends on (:class:`StageInputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyx.paths import DataPaths
from nyx.train.config import TrainConfig
from nyx.train.stage.state import STAGES, finished_stage, stage_dir


@dataclass
class StageInputs:
    """The training config of a stage and the files whose content decides whether it must run again."""

    config: TrainConfig
    inputs: dict[str, Path]
    base_model: str

    @property
    def start_model(self) -> str:
        return self.config.init_adapter or self.config.model


def _stage1_sources(paths: DataPaths, profile) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """NyxQA train (capped at ``stage1.nyxqa_cap``) and every declared external source as the Nyx triples the
    ``training_sources`` asset converted it into (:mod:`nyx.train.sources`), with its mixing weight. Each converted
    file is an input (``source.<name>``): its md5 enters the fingerprint and the MLflow tag
    ``dvc.md5.source.<name>``, so an edited source file (converted again) trains Stage 1 again."""
    from nyx.train.sources import converted_file

    sources = [
        {
            "name": "nyxqa",
            "kind": "nyxqa",
            "path": str(paths.nyxqa / "train"),
            "hard_negatives": str(paths.hard_negatives / "train.jsonl"),
            "cap": profile.stage1.nyxqa_cap,
        }
    ]
    inputs = {"nyxqa": paths.nyxqa / "train", "hard_negatives": paths.hard_negatives / "train.jsonl"}
    for src in profile.stage1.extra_sources:
        triples = converted_file(paths, src.name)
        if not triples.is_file():
            raise FileNotFoundError(
                f"training source {src.name!r} is not converted ({triples} missing): materialise training_sources first"
            )
        sources.append({"name": src.name, "kind": "triples", "path": str(triples), "weight": src.weight})
        inputs[f"source.{src.name}"] = triples
    return sources, inputs


def stage_train_config(profile, stage: str, paths: DataPaths) -> StageInputs:
    """The :class:`TrainConfig` of ``stage`` under ``profile`` (output under ``paths.checkpoints``)."""
    out = stage_dir(paths, stage)
    base_model = str(profile.model)
    if stage == "stage1":
        train = {"model": base_model, **profile.stage1.train.given()}
        base_model = str(train["model"])
        sources, inputs = _stage1_sources(paths, profile)
    elif stage == "stage2":
        feedback = paths.feedback / "train_triples.jsonl"
        if not feedback.exists() or not feedback.read_text().strip():
            raise FileNotFoundError(f"no feedback triples in {feedback}: materialise feedback_preferences first")
        sources = [{"name": "feedback", "kind": "triples", "path": str(feedback)}]
        inputs = {"feedback": feedback}
        train = {"model": base_model, **profile.stage2.train.given()}
        base_model = str(train["model"])
        if profile.stage2.mode == "continue":
            s1 = finished_stage(paths, "stage1")
            assert s1.final_dir is not None  # finished_stage checked it
            base_model = s1.base_model
            lora = dict(train.get("lora") or {})
            stage2_lora = lora.get("enabled", True)
            if s1.is_adapter and stage2_lora:
                # continue Stage 1's adapter on Stage 1's base: Stage 2 at step 0 *is* Stage 1, and its saved
                # adapter names the base model, so it reloads as base + (Stage 1 trained further)
                train.update(model=s1.base_model, init_adapter=s1.final_dir)
            else:
                # full Stage-1 weights (or a Stage-1 adapter merged on load, for a fully fine-tuned Stage 2)
                train["model"] = s1.final_dir
            inputs["stage1"] = Path(s1.final_dir)
        else:
            s1_sources, s1_inputs = _stage1_sources(paths, profile)
            sources = s1_sources + sources
            inputs.update(s1_inputs)
    else:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    # the pixel budget cannot be in ``train`` (StageTrainSettings refuses it): ``images`` sets it
    train.update({"data": sources, "output_dir": str(out), **profile.encoder_overrides()})
    return StageInputs(config=TrainConfig.model_validate(train), inputs=inputs, base_model=base_model)
