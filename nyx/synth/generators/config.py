"""Typed settings of the generators (pydantic, so a profile or the Dagster launchpad can fill them from dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nyx.data.images import ImageConfig


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class ClozeSettings(_Settings):
    """The model-free cloze generator."""

    image_question_prob: float = Field(0.5, ge=0.0, le=1.0)
    """Chance that a question of a chunk with images gets the image nearest to its sentence attached."""
    min_sentence_words: int = Field(6, ge=3)
    """Shorter sentences give no question."""


class OpenAISettings(_Settings):
    """Any OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp server, OpenAI, ...).

    The API key is read from the environment variable named by ``api_key_env`` when the generator is built;
    it is sent in the ``Authorization`` header only, and never logged, cached or reported.
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "OpenGVLab/InternVL3-78B"
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the variable holding the key; None sends no ``Authorization`` header (local servers)."""
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    """Retries after the first try, on 429, 5xx, timeouts and connection errors."""
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0)
    """A server's ``Retry-After`` is honoured up to this many seconds."""
    concurrency: int = Field(8, ge=1)
    """Requests in flight at once (and chunks processed in parallel by ``synthesize_qa``)."""
    temperature: float = 0.0
    max_tokens: int = Field(1024, ge=1)
    json_mode: bool = False
    """Send ``response_format={"type": "json_object"}`` for the JSON passes (if the server supports it)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra fields merged into every request body (e.g. ``top_p``)."""
    cache_dir: str | None = None
    """Folder of the response cache; None disables it."""
    max_consecutive_failures: int = Field(20, ge=1)
    """After this many failed calls in a row the generator raises ``GeneratorUnavailable``."""


class LocalSettings(_Settings):
    """A Qwen2.5-VL run in-process with transformers ``generate``."""

    model_path: str | None = None
    """A model folder (hub layout); None = the tiny offline profile (meaningless output, for tests)."""
    max_new_tokens: int = Field(256, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class GeneratorConfig(_Settings):
    """Which generator, and its settings. ``make_generator(cfg)`` builds it."""

    kind: Literal["cloze", "openai", "local"] = "cloze"
    seed: int = 0
    max_qa_per_chunk: int = Field(5, ge=1)
    max_answer_words: int = Field(5, ge=1)
    multi_image_questions: int = Field(1, ge=0)
    """Extra questions needing >= 2 images per multi-image chunk."""
    prompt_version: str = "v1"
    image: ImageConfig = Field(default_factory=ImageConfig)
    """How images are loaded and sized before they are sent to a model."""
    cloze: ClozeSettings = Field(default_factory=ClozeSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
