"""The encoder's settings (:class:`EncoderConfig`) and the self-describing config a model folder carries.

A model folder (the tiny build, a trained ``final/``, ``merged/`` or checkpoint ``model/``, anything
:meth:`NyxEncoder.save_pretrained <nyx.model.encoder.NyxEncoder.save_pretrained>` writes) holds one config file,
``nyx_profile.json`` (:data:`~nyx.model.backbone.PROFILE_FILENAME`), written only by :func:`save_model_config`:

* the :class:`~nyx.model.backbone.ModelProfile` fields (without ``name_or_path`` and ``build``), where
  ``max_length``, ``min_pixels`` and ``max_pixels`` are the encoder's: the input settings the model was trained
  (or saved) with;
* ``"encoder"``: the other :class:`EncoderConfig` fields that change what a record becomes, and so its embedding
  (:data:`SAVED_ENCODER_FIELDS`).

:func:`saved_encoder_settings` reads them back as :class:`EncoderConfig` overrides. A folder written before the
``"encoder"`` section existed (only the profile) loads exactly as it did: every such field keeps its default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from nyx.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from nyx.data.records import Record
from nyx.model.backbone import ENCODER_SECTION, PROFILE_FILENAME, ModelProfile
from nyx.model.templates import QueryTemplate
from nyx.utils.config import ConfigModel
from nyx.utils.io import read_json, write_json

#: The profile fields an :class:`EncoderConfig` carries: the input settings a model is trained with.
PROFILE_INPUT_FIELDS = ("max_length", "min_pixels", "max_pixels")
#: The other :class:`EncoderConfig` fields saved with a model (its ``"encoder"`` section): they change embeddings.
SAVED_ENCODER_FIELDS = ("query_templates", "input_style", "eos_token", "padding_side", "min_text_share")


class EncoderConfig(ConfigModel):
    """How records become model inputs and how batches are run.

    ``input_style``: ``"plain"`` is ``{instruction+content}{eos_token}``; ``"chat"`` wraps the same in a user
    turn followed by an assistant prompt, then ``eos_token``. The embedding is the final hidden state of the
    last token (the paper's <EOS>). ``query_templates`` maps a task (``record.extra["task"]``) to its
    template; ``"default"`` serves every other query. ``dim`` truncates outputs to a Matryoshka prefix.

    ``max_length`` is the training token limit (what :meth:`NyxEncoder.collate` cuts at and a trained folder
    records); inference uses :attr:`NyxEncoder.inference_max_length`. ``min_text_share``: the share of a
    record's token budget (after the instruction frame) kept for its text when images must be shrunk to fit.
    """

    model_config = ConfigDict(frozen=True)

    max_length: int = 3072
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    padding_side: Literal["left", "right"] = "right"
    input_style: Literal["plain", "chat"] = "plain"
    eos_token: str = "<|endoftext|>"
    query_templates: dict[str, QueryTemplate] = Field(default_factory=lambda: {"default": QueryTemplate()})
    batch_size: int = 8
    sort_window_batches: int = 32
    dim: int | None = None
    min_text_share: float = 0.25
    show_progress: bool = True
    #: batches prepared (images loaded, tokenised, collated) ahead of the model in a background thread;
    #: 0 prepares each batch in the calling thread just before it runs
    prefetch_batches: int = 4
    #: ``torch.compile`` (inductor, ``dynamic=True``) the language model's decoder layers and the vision tower's
    #: MLPs and merger, in place, when the encoder is built: fuses their element-wise kernels (norms, rotary,
    #: SiLU-gating). Same maths (embeddings within float32 rounding); costs a compilation (~30 s on one CPU
    #: thread the first time, seconds from inductor's on-disk cache), so off by default (docs/scaling.md).
    compile: bool = False
    #: ``"bfloat16"``: run the model under ``torch.autocast`` in bf16 (matrix products and attention in bf16,
    #: float32 pooling and normalisation). Changes embeddings beyond float32 rounding (cosine to float32
    #: ~0.9999 on the tiny model); on a CPU only where it has native bf16 (avx512_bf16 or AMX), see
    #: :func:`cpu_supports_bf16`. ``None``: the model's own dtype.
    autocast: Literal["bfloat16"] | None = None

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if "default" not in self.query_templates:
            raise ValueError("query_templates needs a 'default' entry")
        if self.batch_size < 1 or self.sort_window_batches < 1:
            raise ValueError("batch_size and sort_window_batches must be positive")
        if self.prefetch_batches < 0:
            raise ValueError("prefetch_batches must be >= 0")
        if not 0.0 <= self.min_text_share <= 1.0:
            raise ValueError("min_text_share must lie within 0..1")
        return self

    @classmethod
    def from_profile(cls, profile: ModelProfile, **overrides: Any) -> EncoderConfig:
        """The profile's input settings (its ``max_length`` is the training length), then ``overrides``."""
        return cls(
            **{"max_length": profile.max_length, "min_pixels": profile.min_pixels, "max_pixels": profile.max_pixels}
            | overrides
        )

    def template_for(self, record: Record) -> QueryTemplate:
        return self.query_templates.get(str(record.extra.get("task", "default")), self.query_templates["default"])


def model_config(profile: ModelProfile, config: EncoderConfig | None = None) -> dict[str, Any]:
    """The content of a model folder's ``nyx_profile.json``: ``profile`` with ``config``'s input settings (default:
    the profile's own, :meth:`EncoderConfig.from_profile`) and its ``"encoder"`` section."""
    config = config if config is not None else EncoderConfig.from_profile(profile)
    data = profile.model_dump(mode="json", exclude={"name_or_path", "build"})
    for key in PROFILE_INPUT_FIELDS:  # what the model was trained with travels with it
        data[key] = getattr(config, key)
    saved = config.model_dump(mode="json")
    data[ENCODER_SECTION] = {key: saved[key] for key in SAVED_ENCODER_FIELDS}
    return data


def save_model_config(folder: str | os.PathLike, profile: ModelProfile, config: EncoderConfig | None = None) -> Path:
    """Write ``folder/nyx_profile.json`` (:func:`model_config`), atomically; the one writer of that file."""
    return write_json(model_config(profile, config), Path(folder) / PROFILE_FILENAME)


def saved_encoder_settings(folder: str | os.PathLike) -> dict[str, Any]:
    """:class:`EncoderConfig` overrides saved in a model folder's ``nyx_profile.json`` (``{}`` without one).

    The ``"encoder"`` section's fields, and for an *adapter* folder (``adapter_config.json``) also ``max_length``,
    ``max_pixels`` and ``min_pixels`` (a full model folder's are its profile's, read by
    :func:`~nyx.model.backbone.resolve_profile`)."""
    folder = Path(folder)
    path = folder / PROFILE_FILENAME
    if not path.is_file():
        return {}
    saved = read_json(path)
    out: dict[str, Any] = {}
    if (folder / "adapter_config.json").is_file():
        out.update({k: saved[k] for k in ("max_length", "max_pixels", "min_pixels") if saved.get(k) is not None})
    section = saved.get(ENCODER_SECTION) or {}
    out.update({k: section[k] for k in SAVED_ENCODER_FIELDS if k in section})
    if "query_templates" in out:
        out["query_templates"] = {task: QueryTemplate.model_validate(t) for task, t in out["query_templates"].items()}
    return out


__all__ = [
    "EncoderConfig",
    "model_config",
    "save_model_config",
    "saved_encoder_settings",
]
