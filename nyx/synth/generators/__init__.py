"""Question/answer generators for NyxQA: ``cloze`` (no model), ``openai`` (HTTP endpoint), ``local`` (transformers).

Build one with :func:`make_generator` from a :class:`GeneratorConfig`.
"""

from __future__ import annotations

from nyx.synth.generators.base import GenerationError, Generator, GeneratorUnavailable, QAPair
from nyx.synth.generators.chat import ChatGenerator, ChatRequest
from nyx.synth.generators.cloze import ClozeGenerator
from nyx.synth.generators.config import ClozeSettings, GeneratorConfig, LocalSettings, OpenAISettings
from nyx.synth.generators.prompts import Prompt, load_prompt


def make_generator(cfg: GeneratorConfig | dict | None = None) -> Generator:
    """The generator named by ``cfg.kind`` (a dict is validated into a :class:`GeneratorConfig`)."""
    if cfg is None:
        cfg = GeneratorConfig()
    elif isinstance(cfg, dict):
        cfg = GeneratorConfig.model_validate(cfg)
    common = {
        "max_qa_per_chunk": cfg.max_qa_per_chunk,
        "max_answer_words": cfg.max_answer_words,
        "multi_image_questions": cfg.multi_image_questions,
    }
    if cfg.kind == "cloze":
        return ClozeGenerator(
            seed=cfg.seed,
            image_question_prob=cfg.cloze.image_question_prob,
            min_sentence_words=cfg.cloze.min_sentence_words,
            **common,
        )
    if cfg.kind == "openai":
        from nyx.synth.generators.openai import OpenAIGenerator

        return OpenAIGenerator(
            cfg.openai, image_cfg=cfg.image, seed=cfg.seed, prompt_version=cfg.prompt_version, **common
        )
    if cfg.kind == "local":
        from nyx.synth.generators.local import LocalGenerator

        return LocalGenerator(cfg.local, image_cfg=cfg.image, prompt_version=cfg.prompt_version, **common)
    raise ValueError(f"unknown generator kind {cfg.kind!r} (expected 'cloze', 'openai' or 'local')")


__all__ = [
    "ChatGenerator",
    "ChatRequest",
    "ClozeGenerator",
    "ClozeSettings",
    "GenerationError",
    "Generator",
    "GeneratorConfig",
    "GeneratorUnavailable",
    "LocalSettings",
    "OpenAISettings",
    "Prompt",
    "QAPair",
    "load_prompt",
    "make_generator",
]
