"""Pipeline profiles: one typed configuration, two named presets.

``sample`` (default): the tiny offline model, the cloze generator, the offline reader, the MiniLM miner, small batches,
CPU. ``paper``: the paper's settings (Qwen2.5-VL-3B, generator/reader VLMs behind an OpenAI-compatible endpoint,
8 GPUs with ZeRO-2, the paper's batch sizes and learning rate). Select with ``NYX_PROFILE`` or the Dagster launchpad;
any field can be overridden for one run (see docs/profiles.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nyx.feedback.preferences import FeedbackConfig
from nyx.synth.chunking import ChunkingConfig
from nyx.synth.generators.config import GeneratorConfig, OpenAISettings
from nyx.synth.mining import MiningConfig
from nyx.synth.nyxqa import NyxQAConfig


class ImageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_pixels: int = 400 * 28 * 28
    min_pixels: int = 4 * 28 * 28


class SampleDataSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_docs: int = 300
    seed: int = 0


class QASettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_size_per_shard: int | None = Field(None, description="chunks sampled for QA per shard (None: all)")
    stratify: bool = True
    seed: int = 0


class MinerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retriever: str = Field("minilm", description="'minilm', 'bm25', or a saved retriever folder (e.g. a Nyx index)")
    mining: MiningConfig = Field(default_factory=MiningConfig)


class StageSettings(BaseModel):
    """Training settings of one stage: any :class:`nyx.train.trainer.TrainConfig` field except paths and data."""

    model_config = ConfigDict(extra="forbid")
    train: dict[str, Any] = Field(default_factory=dict)
    extra_sources: list[dict[str, Any]] = Field(
        default_factory=list, description="extra training sets (SourceConfig dicts: triples or research format)")


class Stage2Settings(StageSettings):
    mode: Literal["continue", "retrain"] = Field(
        "continue", description="continue from Stage 1 on feedback triples, or retrain from the base on the "
                                "Stage-1 mix plus feedback (what the released model did)")
    feedback_split: str = "train"


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str = "test"
    baselines: list[str] = Field(default_factory=lambda: ["bm25", "minilm", "untrained"])
    top_n: int = 1
    dims: list[int] | None = Field(None, description="None: the model's Matryoshka dims")


class PromotionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gate_metrics: dict[str, float] = Field(
        default_factory=lambda: {"ndcg@10": 0.0, "recall@10": 0.0},
        description="metric -> margin the challenger must beat the champion by (test split, full dim)")
    registered_model: str = "nyx-retriever"


class PipelineProfile(BaseModel):
    """Everything an asset needs to know about how to run."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    name: str
    model: str = Field(description="model profile name ('tiny', 'paper'), local folder or hub id of the backbone")
    images: ImageSettings = ImageSettings()
    sample: SampleDataSettings | None = None
    device: str = "auto"
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    qa: QASettings = Field(default_factory=QASettings)
    nyxqa: NyxQAConfig = Field(default_factory=NyxQAConfig)
    miner: MinerSettings = Field(default_factory=MinerSettings)
    stage1: StageSettings = Field(default_factory=StageSettings)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    reader: str = Field("minilm", description="feedback/RAG reader: 'minilm' (offline stand-in) or 'generator'")
    stage2: Stage2Settings = Field(default_factory=Stage2Settings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)

    def with_overrides(self, overrides: dict[str, Any] | None) -> "PipelineProfile":
        """A copy with nested overrides applied (``{"images": {"max_pixels": 1000}}``), validated."""
        if not overrides:
            return self
        data = self.model_dump()
        _deep_update(data, overrides)
        return PipelineProfile.model_validate(data)


def _deep_update(base: dict, upd: dict) -> None:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


PROFILES: dict[str, PipelineProfile] = {
    "sample": PipelineProfile(
        name="sample", model="tiny", sample=SampleDataSettings(),
        generator=GeneratorConfig(kind="cloze"),
        qa=QASettings(sample_size_per_shard=None),
        nyxqa=NyxQAConfig(dev_per_group=20, test_per_group=40),
        miner=MinerSettings(retriever="minilm"),
        # the tiny model is random: full fine-tuning at a high learning rate, small batches, a few CPU minutes
        stage1=StageSettings(train={"model": "tiny", "lora": {"enabled": False}, "learning_rate": 3e-4,
                                    "per_device_batch_size": 32, "n_negatives": 1, "save_steps": 20,
                                    "logging_steps": 5, "warmup_ratio": 0.05, "max_length": 320, "epochs": 4}),
        feedback=FeedbackConfig(top_k=10),
        stage2=Stage2Settings(mode="continue", train={"model": "tiny", "lora": {"enabled": False},
                                                      "learning_rate": 1e-4, "per_device_batch_size": 32,
                                                      "n_negatives": 1, "epochs": 1, "save_steps": 20,
                                                      "logging_steps": 5, "max_length": 320}),
    ),
    "paper": PipelineProfile(
        name="paper", model="paper", device="cuda",
        chunking=ChunkingConfig(max_tokens=200, max_images=5, drop_last_partial=True),
        generator=GeneratorConfig(kind="openai", openai=OpenAISettings(model="OpenGVLab/InternVL3-78B")),
        qa=QASettings(sample_size_per_shard=10_000),
        nyxqa=NyxQAConfig(dev_per_group=200, test_per_group=200),
        miner=MinerSettings(retriever="minilm"),  # the paper used mmE5; any saved retriever folder works here
        stage1=StageSettings(train={"model": "paper", "lora": {"enabled": True, "rank": 8, "alpha": 64,
                                                               "dropout": 0.1, "use_dora": False},
                                    "gradient_checkpointing": True, "learning_rate": 1e-5, "warmup_ratio": 0.05,
                                    "max_grad_norm": 5.0, "epochs": 1, "per_device_batch_size": 20,
                                    "n_negatives": 1, "temperature": 0.02,
                                    "deepspeed": "configs/deepspeed_zero2.json"}),
        feedback=FeedbackConfig(top_k=30),
        reader="generator",
        stage2=Stage2Settings(mode="continue", train={"model": "paper", "lora": {"enabled": True, "rank": 8},
                                                      "gradient_checkpointing": True, "learning_rate": 1e-5,
                                                      "per_device_batch_size": 20, "n_negatives": 3,
                                                      "deepspeed": "configs/deepspeed_zero2.json"}),
    ),
}


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> PipelineProfile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return base.with_overrides(overrides)
