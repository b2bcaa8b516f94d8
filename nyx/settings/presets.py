"""The named profiles (``sample``, ``paper``, ``rehearsal``) and :func:`load_profile`."""

from __future__ import annotations

from typing import Any

from nyx.feedback.preferences import FeedbackConfig
from nyx.settings.profile import PipelineProfile
from nyx.settings.sections import (
    LaunchSettings,
    MinerSettings,
    QASettings,
    ReaderSettings,
    SampleDataSettings,
    Stage2Settings,
    StageSettings,
)
from nyx.synth.chunking import ChunkingConfig
from nyx.synth.generators.config import GeneratorConfig, OpenAISettings
from nyx.synth.nyxqa import NyxQAConfig

#: The 24 MMEB training subsets of the paper's Stage-1 mix (file names under ``external/mmeb/``)
MMEB_SUBSETS = (
    "TAT-DQA",
    "ArxivQA",
    "InfoSeek_it2t",
    "InfoSeek_it2it",
    "ImageNet_1K",
    "N24News",
    "HatefulMemes",
    "SUN397",
    "VOC2007",
    "InfographicsVQA",
    "ChartQA",
    "A-OKVQA",
    "DocVQA",
    "OK-VQA",
    "Visual7W",
    "VisDial",
    "CIRR",
    "NIGHTS",
    "WebQA",
    "VisualNews_i2t",
    "VisualNews_t2i",
    "MSCOCO_i2t",
    "MSCOCO_t2i",
    "MSCOCO",
)
#: The paper's Stage-1 mix besides NyxQA (capped at 20k, ``nyxqa_cap``): each MMEB subset with mmE5's hard negatives
#: (first 30k rows), mmE5-synthetic's Retrieval and VQA subsets, and HotpotQA, 2WikiMultihopQA and MuSiQue train with
#: pre-retrieved passages (top-1 positive, ranks 11+ negatives). Paths are relative to the data root: put the files
#: there (research-format JSONL or parquet, images under ``images/``; the text QA sets as
#: ``<set>/train_with_retrieved_docs.jsonl``). Equal weights.
PAPER_SOURCES: list[dict[str, Any]] = [
    *(
        {
            "name": f"mmeb-{s.lower()}",
            "format": "research",
            "path": f"external/mmeb/{s}.jsonl",
            "image_root": "external/mmeb/images",
            "cap": 30_000,
            "expected_rows": (1, 30_000),
        }
        for s in MMEB_SUBSETS
    ),
    *(
        {
            "name": f"mme5-synthetic-{s.lower()}",
            "format": "research",
            "path": f"external/mme5_synthetic/{s}.jsonl",
            "image_root": "external/mme5_synthetic/images",
            "expected_rows": (1, 10_000_000),
        }
        for s in ("Retrieval", "VQA")
    ),
    *(
        {
            "name": s,
            "format": s,
            "recipe": "retrieved",
            "path": f"external/{s}/train_with_retrieved_docs.jsonl",
            "expected_rows": (1, 10_000_000),
        }
        for s in ("hotpotqa", "2wikimultihopqa", "musique")
    ),
]

PROFILES: dict[str, PipelineProfile] = {
    "sample": PipelineProfile(
        name="sample",
        model="tiny",
        sample=SampleDataSettings(),
        generator=GeneratorConfig(kind="cloze"),
        qa=QASettings(sample_size=None),
        nyxqa=NyxQAConfig(dev_per_group=20, test_per_group=40),
        miner=MinerSettings(retriever="minilm"),
        # the tiny model is random: full fine-tuning at a high learning rate, small batches, a few CPU minutes
        stage1=StageSettings(
            train={
                "model": "tiny",
                "lora": {"enabled": False},
                "learning_rate": 3e-4,
                "per_device_batch_size": 32,
                "n_negatives": 1,
                "save_steps": 20,
                "logging_steps": 5,
                "warmup_ratio": 0.05,
                "max_length": 320,
                "epochs": 4,
            }
        ),
        feedback=FeedbackConfig(top_k=10),
        stage2=Stage2Settings(
            mode="continue",
            train={
                "model": "tiny",
                "lora": {"enabled": False},
                "learning_rate": 1e-4,
                "per_device_batch_size": 32,
                "n_negatives": 1,
                "epochs": 1,
                "save_steps": 20,
                "logging_steps": 5,
                "max_length": 320,
            },
        ),
    ),
    "paper": PipelineProfile(
        name="paper",
        model="paper",
        device="cuda",
        chunking=ChunkingConfig(max_tokens=200, max_images=5, drop_last_partial=True),
        generator=GeneratorConfig(kind="openai", openai=OpenAISettings(model="OpenGVLab/InternVL3-78B")),
        qa=QASettings(sample_size=10_000),  # in total, of 46,741 chunks
        nyxqa=NyxQAConfig(dev_per_group=200, test_per_group=200),
        miner=MinerSettings(retriever="mme5", model="intfloat/mmE5-mllama-11b-instruct"),  # the paper's miner
        stage1=StageSettings(
            train={
                "model": "paper",
                "lora": {"enabled": True, "rank": 8, "alpha": 64, "dropout": 0.1, "use_dora": False},
                "gradient_checkpointing": True,
                "learning_rate": 1e-5,
                "warmup_ratio": 0.05,
                "max_grad_norm": 5.0,
                "epochs": 1,
                "per_device_batch_size": 20,
                "n_negatives": 1,
                "temperature": 0.02,
                "grad_cache": True,
                "grad_cache_chunk_size": 4,
                "deepspeed": "configs/deepspeed_zero2.json",
            },
            extra_sources=PAPER_SOURCES,
            nyxqa_cap=20_000,
        ),
        feedback=FeedbackConfig(top_k=30),
        reader=ReaderSettings(kind="openai"),  # Qwen2.5-VL-7B-Instruct, the paper's reader
        launch=LaunchSettings(kind="torchrun", processes_per_node=8),  # 20 per GPU x 8 GPUs = 160 per step
        stage2=Stage2Settings(
            mode="continue",
            train={
                "model": "paper",
                "lora": {"enabled": True, "rank": 8, "alpha": 64, "dropout": 0.1},
                "gradient_checkpointing": True,
                "learning_rate": 1e-5,
                "per_device_batch_size": 20,
                "n_negatives": 3,
                "grad_cache": True,
                "grad_cache_chunk_size": 4,
                "deepspeed": "configs/deepspeed_zero2.json",
            },
        ),
    ),
}

#: The only differences between ``rehearsal`` and ``paper``: weights (the tiny model), sizes (data, batches, steps,
#: sequence length, top-k), the learning rate that a randomly initialised tiny model needs to move in a few steps,
#: the processes (2 CPU processes instead of 8 GPUs, same launcher) and the offline generator and reader (their
#: HTTP path has its own tests). Every switch (LoRA r 8 / alpha 64 / dropout 0.1 on the language model, ZeRO-2,
#: gradient cache, cross-device negatives, Stage 2 ``continue`` on the adapter, selection on dev) stays as the paper
#: sets it; ``tests/nyx/settings/test_settings.py`` lists these paths and checks that nothing else differs.
_REHEARSAL_TRAIN = {
    "model": "tiny",
    "learning_rate": 5e-4,
    "per_device_batch_size": 4,
    "grad_cache_chunk_size": 2,
    "max_length": 256,
    "max_steps": 8,
    "save_steps": 4,
    "logging_steps": 1,
}
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
    # the paper's miner (mmE5, Llama-3.2-Vision) with the tiny random-weight Llama-3.2-Vision's weights
    "miner": {"model": "tiny"},
    # the paper's mix at fixture scale: a research-format (MMEB-like) and a HotpotQA-format (distractor setting)
    # source, written offline by nyx.data.sample.training_sources (prepare_sample) under the data root
    "stage1": {
        "train": _REHEARSAL_TRAIN,
        "extra_sources": [
            {
                "name": "mmeb-sample",
                "format": "research",
                "path": "external/mmeb_sample/train.jsonl",
                "expected_rows": (8, 8),
            },
            {
                "name": "hotpotqa-sample",
                "format": "hotpotqa",
                "recipe": "gold",
                "path": "external/hotpotqa_sample/train.json",
                "expected_rows": (6, 6),
            },
        ],
    },
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
