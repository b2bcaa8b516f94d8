"""Model profiles: which backbone, with which settings, and how it is loaded.

Two named profiles exist:

* ``paper`` — ``Qwen/Qwen2.5-VL-3B-Instruct`` (text hidden size 2048), Matryoshka prefixes
  ``[2048, 1024, 512, 256]`` weighted ``[1, 1, 0.2, 0.2]``, images between 4 and 400 merged 28x28 tokens;
* ``tiny`` — a randomly initialised ``Qwen2_5_VLForConditionalGeneration`` of the same architecture (a few MB)
  with a byte-level BPE tokenizer trained offline on the bundled sample's text. It is built deterministically
  by :func:`ensure_tiny_model`, saved with ``save_pretrained`` in the Hugging Face layout and then loaded
  through the very same ``from_pretrained`` path as the paper model (:func:`load_backbone`,
  :func:`~nyx.model.processor.load_processor`).

:func:`resolve_profile` also accepts a local model folder or a hub id.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nyx.model.processor import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, NyxQwenProcessor, load_processor
from nyx.utils.io import atomic_dir

log = logging.getLogger(__name__)

PAPER_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
TINY_DIRNAME = "tiny-qwen2.5-vl"
PROFILE_FILENAME = "nyx_profile.json"
STAMP_FILENAME = "nyx_build.json"

#: Qwen's special tokens, in Qwen's id order (151643...151656 in the real vocabulary).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: A compact Qwen2-VL chat template: text and image parts, optional system turn, generation prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"  # noqa: E501
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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
    min_pixels: int = Field(DEFAULT_MIN_PIXELS, gt=0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)
    max_length: int = Field(3072, gt=16)
    hidden_size: int = Field(2048, gt=0)
    mrl_dims: tuple[int, ...] = (2048, 1024, 512, 256)
    mrl_weights: tuple[float, ...] = (1.0, 1.0, 0.2, 0.2)
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
            return str(ensure_tiny_model(folder.parent))
        return self.name_or_path


def default_mrl_dims(hidden_size: int) -> tuple[int, ...]:
    """The paper's prefix ladder scaled to ``hidden_size``: full, 1/2, 1/4, 1/8 (2048 -> 2048/1024/512/256)."""
    dims = [hidden_size // d for d in (1, 2, 4, 8) if hidden_size // d > 0]
    return tuple(dict.fromkeys(dims))


def default_mrl_weights(n: int) -> tuple[float, ...]:
    """The paper's weights (1, 1, 0.2, 0.2), continued with 0.2 for any further prefix."""
    return tuple([1.0, 1.0, 0.2, 0.2][:n] + [0.2] * max(0, n - 4))


# ----------------------------------------------------------------------------------------------------------
# The tiny model
# ----------------------------------------------------------------------------------------------------------

#: Bump when the tiny model's recipe changes in a way the spec hash below does not capture.
TINY_BUILD_VERSION = "1"
TINY_SEED = 0
TINY_VOCAB_SIZE = 4096
TINY_TEXT = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
)
TINY_VISION = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=2,
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1],
    tokens_per_second=2,
    out_hidden_size=TINY_TEXT["hidden_size"],
)
TINY_MAX_LENGTH = 1024


def tiny_spec_hash() -> str:
    """A short hash of everything that defines the tiny build (part of its stamp)."""
    spec = {
        "version": TINY_BUILD_VERSION,
        "seed": TINY_SEED,
        "vocab": TINY_VOCAB_SIZE,
        "text": TINY_TEXT,
        "vision": TINY_VISION,
        "special": QWEN_SPECIAL_TOKENS,
        "chat_template": QWEN_CHAT_TEMPLATE,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$NYX_CACHE_DIR`` or ``.cache/nyx`` under the repository root."""
    env = os.environ.get("NYX_CACHE_DIR")
    from nyx.paths import REPO_ROOT

    return Path(env) if env else REPO_ROOT / ".cache" / "nyx"


def _tiny_training_texts() -> Iterator[str]:
    """The text the tiny tokenizer is trained on: the bundled sample's text."""
    from nyx.data.sample import sample_texts

    yield from sample_texts(seed=0)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE):
    """A byte-level BPE tokenizer carrying Qwen's special tokens, wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def build_tiny_model(out_dir: str | os.PathLike, texts: Iterable[str] | None = None) -> Path:
    """Build the tiny model and its processor into ``out_dir`` (deterministic: fixed seeds, fixed data)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(_tiny_training_texts() if texts is None else texts)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab = ((len(tokenizer) + 63) // 64) * 64  # padded like real checkpoints
    config = Qwen2_5_VLConfig(
        **TINY_TEXT,
        vocab_size=vocab,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        vision_config=dict(TINY_VISION),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    finally:
        torch.random.set_rng_state(rng_state)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(out)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=DEFAULT_MIN_PIXELS,
        max_pixels=DEFAULT_MAX_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    NyxQwenProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    ).save_pretrained(out)
    profile = tiny_profile(out)
    (out / PROFILE_FILENAME).write_text(profile.model_dump_json(indent=2, exclude={"name_or_path", "build"}) + "\n")
    return out


@functools.lru_cache(maxsize=1)
def _training_texts_hash() -> str:
    h = hashlib.sha256()
    for text in _tiny_training_texts():
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def _stamp() -> dict[str, str]:
    """What a cached tiny model must match to be reused: recipe version, spec and training text."""
    return {
        "builder": "nyx.model.profiles.build_tiny_model",
        "version": TINY_BUILD_VERSION,
        "spec": tiny_spec_hash(),
        "texts": _training_texts_hash(),
    }


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / STAMP_FILENAME).read_text()) == _stamp()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the tiny model (``<cache_dir>/tiny-qwen2.5-vl``), built on first use.

    Rebuilt only when missing or when its build stamp differs from the current recipe. Concurrent
    builders (threads, processes, test workers) serialise on a lock file; the model is written into a
    temporary sibling folder and renamed into place, so a reader never sees a half-written model.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / TINY_DIRNAME
    if _is_current(target):
        return target
    with _file_lock(cache / f".{TINY_DIRNAME}.lock"):
        if _is_current(target):  # another builder finished while we waited
            return target
        t0 = time.perf_counter()
        with atomic_dir(target) as tmp:
            build_tiny_model(tmp)
            (tmp / STAMP_FILENAME).write_text(json.dumps(_stamp(), indent=2) + "\n")
        log.info("built the tiny Qwen2.5-VL model in %s (%.1f s)", target, time.perf_counter() - t0)
    return target


# ----------------------------------------------------------------------------------------------------------
# The paper model's architecture (for building it with random weights where it cannot be downloaded)
# ----------------------------------------------------------------------------------------------------------

#: Qwen/Qwen2.5-VL-3B-Instruct ``config.json``, text part (passed flat, like the hub file and the tiny build).
PAPER_TEXT: dict[str, Any] = dict(
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    vocab_size=151936,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
    tie_word_embeddings=True,
)
#: Its ``vision_config``.
PAPER_VISION: dict[str, Any] = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    out_hidden_size=2048,
    hidden_act="silu",
)
#: Its special-token ids (for the record: the random-weight model uses the tiny tokenizer's ids instead).
PAPER_TOKEN_IDS = dict(
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
)
#: Parameters of Qwen2.5-VL-3B-Instruct (tied embeddings), what :func:`paper_architecture_config` must give.
PAPER_N_PARAMS = 3_754_622_976
SPECIAL_TOKEN_ID_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def paper_architecture_config(tokenizer_config: Any):
    """The Qwen2.5-VL-3B architecture (no weights, nothing downloaded) with the special-token ids of
    ``tokenizer_config``: a config whose ids are those of the tokenizer the inputs come from, e.g. the tiny
    model's (all must be < 151,936). ``benchmarks/gpu_check.py`` builds a random-weight paper-size model from it."""
    from transformers import Qwen2_5_VLConfig

    text = tokenizer_config.text_config
    ids = {k: getattr(tokenizer_config, k) for k in SPECIAL_TOKEN_ID_KEYS}
    for k, v in ids.items():
        if v is None or not 0 <= v < PAPER_TEXT["vocab_size"]:
            raise ValueError(f"{k}={v} is not a valid id of the paper vocabulary ({PAPER_TEXT['vocab_size']})")
    return Qwen2_5_VLConfig(
        **PAPER_TEXT,
        vision_config=dict(PAPER_VISION),
        **ids,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
    )


# ----------------------------------------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------------------------------------


def paper_profile() -> ModelProfile:
    return ModelProfile(name="paper", name_or_path=PAPER_MODEL_ID, hidden_size=2048, max_length=3072)


def tiny_profile(folder: str | os.PathLike | None = None) -> ModelProfile:
    """The tiny profile; ``folder`` defaults to ``<cache>/tiny-qwen2.5-vl`` (built on :meth:`materialize`)."""
    folder = Path(folder) if folder is not None else default_cache_dir() / TINY_DIRNAME
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
