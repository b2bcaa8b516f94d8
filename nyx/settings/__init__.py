"""Pipeline profiles: one typed configuration, three named presets.

``sample`` (default): the tiny offline model, the cloze generator, the offline reader, the MiniLM miner, small batches,
one CPU process. ``paper``: the paper's settings (Qwen2.5-VL-3B, generator/reader VLMs behind an OpenAI-compatible
endpoint, 8 GPUs with ZeRO-2, LoRA, the paper's batch sizes and learning rate). ``rehearsal``: the ``paper`` profile
with only weights and sizes scaled down (:data:`REHEARSAL_SCALE`), so that every switch of the paper path runs on a
2-core CPU: LoRA, two processes under torchrun with DeepSpeed ZeRO-2, gradient cache, cross-device negatives, Stage 2
continuing Stage 1's adapter, selection on dev. Select with ``NYX_PROFILE`` or the Dagster launchpad; any field can
be overridden for one run (see docs/profiles.md).
"""

from nyx.settings.presets import MMEB_SUBSETS, PAPER_SOURCES, PROFILES, REHEARSAL_SCALE, load_profile
from nyx.settings.profile import PipelineProfile
from nyx.settings.sections import (
    EvalSettings,
    ExtraEvalSet,
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
    TrainingSource,
)

__all__ = [
    "MMEB_SUBSETS",
    "PAPER_SOURCES",
    "PROFILES",
    "REHEARSAL_SCALE",
    "EvalSettings",
    "ExtraEvalSet",
    "FetchSettings",
    "ImageSettings",
    "IndexSettings",
    "LaunchSettings",
    "MinerSettings",
    "PipelineProfile",
    "PromotionSettings",
    "QASettings",
    "ReaderSettings",
    "SampleDataSettings",
    "Stage2Settings",
    "StageSettings",
    "TrainingSource",
    "load_profile",
]
