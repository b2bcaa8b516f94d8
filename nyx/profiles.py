"""Pipeline profiles: one typed configuration, two named presets.

``sample`` (default): the tiny offline model, the cloze generator, the offline reader, the MiniLM miner, small batches,
CPU. ``paper``: the paper's settings (Qwen2.5-VL-3B, generator/reader VLMs behind an OpenAI-compatible endpoint,
8 GPUs with ZeRO-2, the paper's batch sizes and learning rate). Select with ``NYX_PROFILE`` or the Dagster launchpad;
any field can be overridden for one run (see docs/profiles.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
    ),
    "paper": PipelineProfile(
        name="paper", model="paper", device="cuda",
        chunking=ChunkingConfig(max_tokens=200, max_images=5, drop_last_partial=True),
        generator=GeneratorConfig(kind="openai", openai=OpenAISettings(model="OpenGVLab/InternVL3-78B")),
        qa=QASettings(sample_size_per_shard=10_000),
        nyxqa=NyxQAConfig(dev_per_group=200, test_per_group=200),
        miner=MinerSettings(retriever="minilm"),
    ),
}


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> PipelineProfile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return base.with_overrides(overrides)
