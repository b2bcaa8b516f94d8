"""Pipeline profiles: one typed configuration, two named presets.

``sample`` (default): the tiny offline model, the cloze generator, the offline reader, the MiniLM miner, small batches,
CPU. ``paper``: the paper's settings (Qwen2.5-VL-3B, generator/reader VLMs behind an OpenAI-compatible endpoint,
8 GPUs with ZeRO-2, the paper's batch sizes and learning rate). Select with ``NYX_PROFILE`` or the Dagster launchpad;
any field can be overridden for one run (see docs/profiles.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ImageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_pixels: int = 400 * 28 * 28
    min_pixels: int = 4 * 28 * 28


class SampleDataSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_docs: int = 300
    seed: int = 0


class PipelineProfile(BaseModel):
    """Everything an asset needs to know about how to run."""

    model_config = ConfigDict(extra="forbid")
    name: str
    model: str = Field(description="model profile name ('tiny', 'paper'), local folder or hub id of the backbone")
    images: ImageSettings = ImageSettings()
    sample: SampleDataSettings | None = None
    device: str = "auto"

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
    "sample": PipelineProfile(name="sample", model="tiny", sample=SampleDataSettings()),
    "paper": PipelineProfile(name="paper", model="paper", device="cuda"),
}


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> PipelineProfile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return base.with_overrides(overrides)
