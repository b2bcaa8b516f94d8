"""The settings of one training run (:class:`TrainConfig`), in a module that imports no torch: the pipeline settings
(:mod:`nyx.settings`) type a stage's ``train`` overrides with it, and ``python -m nyx.train.run --config cfg.json``
reads it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from nyx.utils.io import read_json

#: InfoNCE temperature (the paper's 0.02).
DEFAULT_TEMPERATURE = 0.02
#: LoRA on the language model's attention and MLP projections only (a plain list would also hit the vision MLP).
DEFAULT_LORA_TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
DEFAULT_DEEPSPEED_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "deepspeed_zero2.json"


class SourceConfig(BaseModel):
    """One training source and how much of it enters the mix."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["nyxqa", "triples", "research"]
    path: str = Field(description="BEIR folder (nyxqa) or JSONL file (triples, research)")
    hard_negatives: str | None = Field(None, description="nyxqa: hard-negatives JSONL")
    split: str | None = Field(None, description="nyxqa: qrels split (None: qrels.tsv)")
    image_root: str | None = Field(None, description="research: folder the image paths are relative to")
    cap: int | None = Field(None, ge=1, description="keep at most this many examples (seeded subsample)")
    weight: float = Field(1.0, gt=0, description="sampling multiplier after the cap")


class LoraSettings(BaseModel):
    """LoRA / DoRA on the language model (paper: rank 8; research code: DoRA, rank 16, alpha 64, dropout 0.1)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False: full fine-tuning")
    rank: int = Field(16, ge=1)
    alpha: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    use_dora: bool = False
    target_modules: str | list[str] = DEFAULT_LORA_TARGET


class TrainConfig(BaseModel):
    """Everything one training run needs (JSON-serialisable; ``python -m nyx.train.run --config cfg.json``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("tiny", description="'tiny', 'paper', a local HF folder or a hub id")
    init_adapter: str | None = Field(None, description="LoRA adapter to continue training (e.g. Stage 1 for Stage 2)")
    output_dir: str
    data: list[SourceConfig] = Field(default_factory=list)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False
    learning_rate: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    max_grad_norm: float = Field(5.0, gt=0)
    epochs: int = Field(1, ge=1)
    per_device_batch_size: int = Field(20, ge=1)
    n_negatives: int = Field(1, ge=0, description="hard negatives per query")
    mask_false_negatives: bool = Field(
        True,
        description="leave an in-batch positive out of a query's softmax when it is the same document as "
        "the query's positive or another document relevant to it",
    )
    temperature: float = Field(DEFAULT_TEMPERATURE, gt=0)
    mrl_dims: list[int] | None = Field(None, description="None: the model profile's (paper: 2048/1024/512/256)")
    mrl_weights: list[float] | None = None
    grad_cache: bool = False
    grad_cache_chunk_size: int = Field(4, ge=1)
    deepspeed: str | None = Field(None, description="DeepSpeed JSON (configs/deepspeed_zero2.json) or None")
    seed: int = 42
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    logging_steps: int = Field(10, ge=1)
    bf16: bool | Literal["auto"] = Field("auto", description="auto: on when a bf16-capable GPU is present")
    max_length: int | None = Field(None, ge=16, description="override of the profile's max input tokens")
    max_pixels: int | None = Field(
        None, gt=0, description="image pixel budget (the pipeline's images.max_pixels); None: the model profile's"
    )
    min_pixels: int | None = Field(None, gt=0, description="lower bound of the same resize")
    save_merged: bool = Field(False, description="LoRA: also save the merged model under merged/")
    resume_from_checkpoint: str | None = Field(None, description="'latest' or a checkpoint folder")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.init_adapter and not self.lora.enabled:
            raise ValueError("init_adapter continues a LoRA adapter: lora.enabled must be true")
        if self.mrl_weights is not None and self.mrl_dims is None:
            raise ValueError("mrl_weights given without mrl_dims")
        return self

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.model_validate(read_json(path))


#: :class:`TrainConfig` fields a stage decides (where it writes, what it reads, which adapter it continues) or that
#: are set once elsewhere (the pixel budget: the profile's ``images``): a profile's ``stage*.train`` cannot set them.
STAGE_DECIDED_FIELDS = ("output_dir", "data", "init_adapter", "max_pixels", "min_pixels")

_StageTrainBase: type[BaseModel] = create_model(
    "_StageTrainBase",
    __config__=ConfigDict(extra="forbid"),
    **{  # type: ignore[call-overload]
        name: (Optional[field.annotation], Field(None, description=field.description))  # noqa: UP045
        for name, field in TrainConfig.model_fields.items()
        if name not in STAGE_DECIDED_FIELDS
    },
)


class StageTrainSettings(_StageTrainBase):
    """A profile's training settings of one stage (``stage1.train``): any :class:`TrainConfig` field except
    :data:`STAGE_DECIDED_FIELDS`, typed as there, so that a misspelt setting or a wrong type fails when the profile
    is loaded and not when training starts. Only the settings given count (:meth:`given`); the rest are
    :class:`TrainConfig`'s defaults. Ranges and cross-field rules are checked when the stage builds its
    :class:`TrainConfig`."""

    @model_validator(mode="before")
    @classmethod
    def _not_stage_decided(cls, data: Any) -> Any:
        for key in STAGE_DECIDED_FIELDS if isinstance(data, dict) else ():
            if key in data and key in ("max_pixels", "min_pixels"):
                raise ValueError(f"train.{key}: the pixel budget is set once, in images.{key}")
            if key in data:
                raise ValueError(f"train.{key}: set by the stage itself, not by the profile")
        return data

    def given(self) -> dict[str, Any]:
        """The settings given (an explicit ``None`` too, e.g. ``max_steps: null`` over an inherited value)."""
        return self.model_dump(exclude_unset=True)
