"""Pipeline profiles: one typed configuration, three named presets.

``sample`` (default): the tiny offline model, the cloze generator, the offline reader, the MiniLM miner, small batches,
one CPU process. ``paper``: the paper's settings (Qwen2.5-VL-3B, generator/reader VLMs behind an OpenAI-compatible
endpoint, 8 GPUs with ZeRO-2, LoRA, the paper's batch sizes and learning rate). ``rehearsal``: the ``paper`` profile
with only weights and sizes scaled down (:data:`REHEARSAL_SCALE`), so that every switch of the paper path runs on a
2-core CPU: LoRA, two processes under torchrun with DeepSpeed ZeRO-2, gradient cache, cross-device negatives, Stage 2
continuing Stage 1's adapter, selection on dev. Select with ``NYX_PROFILE`` or the Dagster launchpad; any field can
be overridden for one run (see docs/profiles.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nyx.feedback.preferences import FeedbackConfig
from nyx.index.manifest import IndexConfig
from nyx.retrieval.dense import DenseConfig
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
    """Which chunks get synthetic questions: ``sample_size`` chunks *in total* over all corpus shards (the paper:
    10k of 46,741), not per shard; each shard keeps the chunks whose fixed hash key falls under its group's cutoff
    (``nyx.synth.qa.plan_sample``), so the shards together take the budget and adding a shard moves the cutoffs
    only."""

    model_config = ConfigDict(extra="forbid")
    sample_size: int | None = Field(None, ge=1, description="chunks sampled for QA in total over all shards (None: all)")
    stratify: bool = True
    seed: int = 0


class MinerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retriever: str = Field("minilm", description="'minilm', 'bm25', or a saved retriever folder (e.g. a Nyx index)")
    mining: MiningConfig = Field(default_factory=MiningConfig)


class LaunchSettings(BaseModel):
    """How many training processes the profile means, and how they are started (the ``launcher`` resource adds
    where: addresses, rendezvous, host files). The global batch is ``per_device_batch_size * world_size``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["python", "torchrun", "deepspeed"] = "python"
    processes_per_node: int = Field(1, ge=1)
    nodes: int = Field(1, ge=1)

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.nodes


class ReaderSettings(BaseModel):
    """The reader that answers from retrieved documents (VLM feedback and RAG evaluation).

    ``minilm``: the offline option reader (a text-only stand-in); ``openai``: a VLM behind an OpenAI-compatible
    endpoint (the paper: Qwen2.5-VL-7B-Instruct); ``generator``: the QA generator's own model and endpoint."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["minilm", "openai", "generator"] = "minilm"
    openai: OpenAISettings = Field(default_factory=lambda: OpenAISettings(model="Qwen/Qwen2.5-VL-7B-Instruct"))


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


class IndexSettings(BaseModel):
    """Each model's corpus embeddings (stored per model and encoded once: dev evaluation, feedback, the report and
    the corpus index assets share them, :mod:`nyx.index.store`) and the index built from them. ``config`` says
    which FAISS index and how vectors are stored (float32 or float16: one setting for the stored embeddings and
    the index)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1, description="records per encoder forward pass")
    shard_size: int = Field(1024, ge=1, description="records per stored segment: a killed encode keeps the finished ones")
    config: IndexConfig = Field(default_factory=IndexConfig)

    def dense_config(self) -> DenseConfig:
        """The settings a dense retriever builds the corpus index with."""
        return DenseConfig(batch_size=self.batch_size, shard_size=self.shard_size, index=self.config)


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
    reader: ReaderSettings = Field(default_factory=ReaderSettings)
    launch: LaunchSettings = Field(default_factory=LaunchSettings)
    stage2: Stage2Settings = Field(default_factory=Stage2Settings)
    index: IndexSettings = Field(default_factory=IndexSettings)
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
        qa=QASettings(sample_size=None),
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
        qa=QASettings(sample_size=10_000),  # in total, of 46,741 chunks
        nyxqa=NyxQAConfig(dev_per_group=200, test_per_group=200),
        miner=MinerSettings(retriever="minilm"),  # the paper used mmE5; any saved retriever folder works here
        stage1=StageSettings(train={"model": "paper", "lora": {"enabled": True, "rank": 8, "alpha": 64,
                                                               "dropout": 0.1, "use_dora": False},
                                    "gradient_checkpointing": True, "learning_rate": 1e-5, "warmup_ratio": 0.05,
                                    "max_grad_norm": 5.0, "epochs": 1, "per_device_batch_size": 20,
                                    "n_negatives": 1, "temperature": 0.02,
                                    "grad_cache": True, "grad_cache_chunk_size": 4,
                                    "deepspeed": "configs/deepspeed_zero2.json"}),
        feedback=FeedbackConfig(top_k=30),
        reader=ReaderSettings(kind="openai"),  # Qwen2.5-VL-7B-Instruct, the paper's reader
        launch=LaunchSettings(kind="torchrun", processes_per_node=8),  # 20 per GPU x 8 GPUs = 160 per step
        stage2=Stage2Settings(mode="continue", train={"model": "paper", "lora": {"enabled": True, "rank": 8,
                                                                                 "alpha": 64, "dropout": 0.1},
                                                      "gradient_checkpointing": True, "learning_rate": 1e-5,
                                                      "per_device_batch_size": 20, "n_negatives": 3,
                                                      "grad_cache": True, "grad_cache_chunk_size": 4,
                                                      "deepspeed": "configs/deepspeed_zero2.json"}),
    ),
}

#: The only differences between ``rehearsal`` and ``paper``: weights (the tiny model), sizes (data, batches, steps,
#: sequence length, top-k), the learning rate that a randomly initialised tiny model needs to move in a few steps,
#: the processes (2 CPU processes instead of 8 GPUs, same launcher) and the offline generator and reader (their
#: HTTP path has its own tests). Every switch (LoRA r 8 / alpha 64 / dropout 0.1 on the language model, ZeRO-2,
#: gradient cache, cross-device negatives, Stage 2 ``continue`` on the adapter, selection on dev) stays as the paper
#: sets it; ``tests/test_profiles.py`` lists these paths and checks that nothing else differs.
_REHEARSAL_TRAIN = {"model": "tiny", "learning_rate": 5e-4, "per_device_batch_size": 4, "grad_cache_chunk_size": 2,
                    "max_length": 256, "max_steps": 8, "save_steps": 4, "logging_steps": 1}
REHEARSAL_SCALE: dict[str, Any] = {
    "name": "rehearsal",
    "model": "tiny",
    "device": "auto",
    "sample": {"n_docs": 60, "seed": 0},
    "generator": {"kind": "cloze"},
    "reader": {"kind": "minilm"},
    "launch": {"processes_per_node": 2},
    "nyxqa": {"dev_per_group": 4, "test_per_group": 6},
    "feedback": {"top_k": 5},
    "stage1": {"train": _REHEARSAL_TRAIN},
    # two epochs of the (few) feedback triples, so that the loss check compares the same examples early and late
    "stage2": {"train": {**_REHEARSAL_TRAIN, "max_steps": None, "epochs": 2}},
}
PROFILES["rehearsal"] = PROFILES["paper"].with_overrides(REHEARSAL_SCALE)


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> PipelineProfile:
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return base.with_overrides(overrides)
