"""Model profiles: which backbone, with which settings, and how it is loaded.

Two named profiles exist:

* ``paper`` — ``Qwen/Qwen2.5-VL-3B-Instruct`` (text hidden size 2048), Matryoshka prefixes
  ``[2048, 1024, 512, 256]`` weighted ``[1, 1, 0.2, 0.2]``, images between 4 and 400 merged 28x28 tokens;
* ``tiny`` — a randomly initialised model of the same architecture (a few MB), built offline on first use by
  :func:`nyx.model.tiny.ensure_tiny_model` and then loaded through the very same ``from_pretrained`` path as the
  paper model (:func:`load_backbone`, :func:`~nyx.model.processor.load_processor`).

:func:`resolve_profile` also accepts a local model folder (its ``nyx_profile.json``, see :mod:`nyx.model.config`)
or a hub id.

"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nyx.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from nyx.model.architecture import PAPER_MRL_DIMS, PAPER_MRL_WEIGHTS
from nyx.model.processor import NyxQwenProcessor, load_processor

PAPER_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
TINY_DIRNAME = "tiny-qwen2.5-vl"
#: A model folder's config file (the profile and the encoder's input settings: :mod:`nyx.model.config`).
PROFILE_FILENAME = "nyx_profile.json"
#: Its section with the encoder's other input settings (:func:`nyx.model.config.saved_encoder_settings`).
ENCODER_SECTION = "encoder"


class ModelProfile(BaseModel):
    """Everything needed to load a backbone and embed with it.

    ``dtype="auto"`` means bfloat16 on a GPU and float32 on the CPU. ``mrl_dims`` are the Matryoshka prefix
    sizes (largest first, the first equal to ``hidden_size``) and ``mrl_weights`` their loss weights.
    ``build`` names a local builder (only ``"tiny"``) that creates ``name_or_path`` when it is missing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    name_or_path: str
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str = "sdpa"
    min_pixels: int = Field(default=DEFAULT_MIN_PIXELS, gt=0)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0)
    max_length: int = Field(default=3072, gt=16)
    hidden_size: int = Field(default=2048, gt=0)
    mrl_dims: tuple[int, ...] = PAPER_MRL_DIMS
    mrl_weights: tuple[float, ...] = PAPER_MRL_WEIGHTS
    build: Literal["tiny"] | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelProfile:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")
        if len(self.mrl_dims) != len(self.mrl_weights) or not self.mrl_dims:
            raise ValueError("mrl_dims and mrl_weights must be non-empty and of the same length")
        if list(self.mrl_dims) != sorted(set(self.mrl_dims), reverse=True):
            raise ValueError(f"mrl_dims must be distinct and decreasing, got {list(self.mrl_dims)}")
        if self.mrl_dims[0] > self.hidden_size or self.mrl_dims[-1] <= 0:
            raise ValueError(f"mrl_dims {list(self.mrl_dims)} must lie within 1..hidden_size={self.hidden_size}")
        if any(w < 0 for w in self.mrl_weights):
            raise ValueError("mrl_weights must be non-negative")
        return self

    def materialize(self) -> str:
        """The loadable ``name_or_path``, building the local model first when this profile has a builder."""
        if self.build == "tiny":
            folder = Path(self.name_or_path)
            if folder.name != TINY_DIRNAME:
                raise ValueError(f"the tiny builder writes <cache>/{TINY_DIRNAME}, not {folder}")
            from nyx.model.tiny import ensure_tiny_model

            return str(ensure_tiny_model(folder.parent))
        return self.name_or_path


def default_mrl_dims(hidden_size: int) -> tuple[int, ...]:
    """The paper's prefix ladder scaled to ``hidden_size``: full, 1/2, 1/4, 1/8 (2048 -> 2048/1024/512/256)."""
    dims = [hidden_size * d // PAPER_MRL_DIMS[0] for d in PAPER_MRL_DIMS if hidden_size * d // PAPER_MRL_DIMS[0] > 0]
    return tuple(dict.fromkeys(dims))


def default_mrl_weights(n: int) -> tuple[float, ...]:
    """The paper's weights (1, 1, 0.2, 0.2), continued with 0.2 for any further prefix."""
    return tuple(list(PAPER_MRL_WEIGHTS[:n]) + [PAPER_MRL_WEIGHTS[-1]] * max(0, n - len(PAPER_MRL_WEIGHTS)))


def default_cache_dir() -> Path:
    """``$NYX_CACHE_DIR`` or ``.cache/nyx`` under the repository root."""
    env = os.environ.get("NYX_CACHE_DIR")
    from nyx.paths import REPO_ROOT

    return Path(env) if env else REPO_ROOT / ".cache" / "nyx"


# ----------------------------------------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------------------------------------


def paper_profile() -> ModelProfile:
    return ModelProfile(name="paper", name_or_path=PAPER_MODEL_ID, hidden_size=2048, max_length=3072)


def tiny_profile(folder: str | os.PathLike | None = None) -> ModelProfile:
    """The tiny profile; ``folder`` defaults to ``<cache>/tiny-qwen2.5-vl`` (built on :meth:`materialize`)."""
    folder = Path(folder) if folder is not None else default_cache_dir() / TINY_DIRNAME
    from nyx.model.tiny import TINY_MAX_LENGTH, TINY_TEXT

    h = TINY_TEXT["hidden_size"]
    return ModelProfile(
        name="tiny",
        name_or_path=str(folder),
        hidden_size=h,
        max_length=TINY_MAX_LENGTH,
        mrl_dims=default_mrl_dims(h),
        mrl_weights=default_mrl_weights(4),
        build="tiny",
    )


def _hidden_size_of(config: dict[str, Any]) -> int:
    text = config.get("text_config") or {}
    size = text.get("hidden_size") or config.get("hidden_size")
    if not isinstance(size, int):
        raise ValueError("config.json names no hidden_size")
    return size


def profile_from_folder(folder: str | os.PathLike, name: str | None = None) -> ModelProfile:
    """A profile for a local Hugging Face folder: its ``nyx_profile.json`` if any, else derived from config.json."""
    folder = Path(folder)
    saved = folder / PROFILE_FILENAME
    if saved.is_file():
        data = json.loads(saved.read_text())
        data.pop(ENCODER_SECTION, None)
        data.update(name=name or data.get("name") or folder.name, name_or_path=str(folder), build=None)
        return ModelProfile(**data)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    hidden = _hidden_size_of(json.loads(cfg_path.read_text()))
    dims = default_mrl_dims(hidden)
    return ModelProfile(
        name=name or folder.name,
        name_or_path=str(folder),
        hidden_size=hidden,
        mrl_dims=dims,
        mrl_weights=default_mrl_weights(len(dims)),
    )


def resolve_profile(name_or_path: str | os.PathLike | ModelProfile, **overrides: Any) -> ModelProfile:
    """``"tiny"``, ``"paper"``, a local model folder or a hub id -> :class:`ModelProfile`.

    ``overrides`` replace fields (e.g. ``max_length=512``); the result is validated again.
    """
    if isinstance(name_or_path, ModelProfile):
        profile = name_or_path
    else:
        key = os.fspath(name_or_path)
        if key == "tiny":
            profile = tiny_profile()
        elif key in ("paper", PAPER_MODEL_ID):
            profile = paper_profile()
        elif Path(key).is_dir():
            profile = profile_from_folder(key)
        elif key.count("/") == 1 and not key.startswith((".", "/")):
            profile = _profile_from_hub(key)
        else:
            raise ValueError(f"unknown model {key!r}: expected 'tiny', 'paper', a local model folder or a hub id")
    if overrides:
        profile = ModelProfile(**{**profile.model_dump(), **overrides})
    return profile


def _profile_from_hub(model_id: str) -> ModelProfile:
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(model_id).to_dict()
    except OSError as e:
        raise ValueError(f"cannot read the config of hub model {model_id!r} (offline and not cached?): {e}") from e
    hidden = _hidden_size_of(cfg)
    dims = default_mrl_dims(hidden)
    return ModelProfile(
        name=model_id,
        name_or_path=model_id,
        hidden_size=hidden,
        mrl_dims=dims,
        mrl_weights=default_mrl_weights(len(dims)),
    )


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def resolve_device(device: Any = None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Any = "auto", device: Any = None):
    """``"auto"`` -> bfloat16 on a GPU, float32 on the CPU; names and torch dtypes pass through."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}") from None


def load_backbone(profile_or_path: ModelProfile | str | os.PathLike, device: Any = None, dtype: Any = None):
    """Load the ``Qwen2_5_VLForConditionalGeneration`` of a profile (or anything :func:`resolve_profile` takes).

    ``dtype=None`` uses the profile's dtype (``"auto"``: bf16 on GPU, fp32 on CPU). Returned in eval mode.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    profile = resolve_profile(profile_or_path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(profile.dtype if dtype is None else dtype, dev)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": profile.attn_implementation}
    if profile.revision:
        kwargs["revision"] = profile.revision
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(profile.materialize(), **kwargs)
    return model.to(dev).eval()


def load_profile_processor(profile_or_path: ModelProfile | str | os.PathLike) -> NyxQwenProcessor:
    """:func:`~nyx.model.processor.load_processor` with the profile's path, revision and pixel budget."""
    profile = resolve_profile(profile_or_path)
    return load_processor(
        profile.materialize(), min_pixels=profile.min_pixels, max_pixels=profile.max_pixels, revision=profile.revision
    )
