"""The pipeline profile: every section, validated together, and nested overrides."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nyx.feedback.preferences import FeedbackConfig
from nyx.settings.sections import (
    EvalSettings,
    FetchSettings,
    ImageSettings,
    IndexSettings,
    LaunchSettings,
    MinerSettings,
    PromotionSettings,
    QASettings,
    ReaderSettings,
    SampleDataSettings,
    Stage2Settings,
    StageSettings,
)
from nyx.synth.chunking import ChunkingConfig
from nyx.synth.generators.config import GeneratorConfig
from nyx.synth.nyxqa import NyxQAConfig


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
    reader: ReaderSettings = Field(default_factory=ReaderSettings)
    launch: LaunchSettings = Field(default_factory=LaunchSettings)
    stage2: Stage2Settings = Field(default_factory=Stage2Settings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)

    @field_validator("reader", mode="before")
    @classmethod
    def _reader_by_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value  # "minilm" / "openai" / "generator"

    def encoder_overrides(self) -> dict[str, int]:
        """The one pixel budget (``images``), as :class:`nyx.model.encoder.EncoderConfig` fields: ingestion,
        training, evaluation and serving all read it from here."""
        return {"max_pixels": self.images.max_pixels, "min_pixels": self.images.min_pixels}

    def with_overrides(self, overrides: dict[str, Any] | None) -> PipelineProfile:
        """A copy with nested overrides applied (``{"images": {"max_pixels": 1000}}``), validated."""
        if not overrides:
            return self
        data = self.model_dump(exclude_unset=True)  # what was given: defaults stay defaults (stage*.train)
        _deep_update(data, overrides)
        return PipelineProfile.model_validate(data)


def _deep_update(base: dict, upd: dict) -> None:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
