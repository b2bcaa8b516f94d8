"""The tiny model: a randomly initialised ``Qwen2_5_VLForConditionalGeneration`` of the paper's architecture (a few
MB), with a byte-level BPE tokenizer trained offline, for tests, rehearsals and CPU benchmarks.

It is built deterministically (fixed seeds, fixed text) by :func:`ensure_tiny_model`, saved with
``save_pretrained`` in the Hugging Face layout and then loaded through the very same ``from_pretrained`` path as the
paper model (:func:`~nyx.model.backbone.load_backbone`, :func:`~nyx.model.processor.load_processor`); its profile
is :func:`~nyx.model.backbone.tiny_profile`.

The tokenizer's training text (:func:`tiny_training_texts`) is a frozen copy of the bundled sample's text
(``nyx.data.sample.sample_texts(seed=0)``) shipped beside this module as ``tiny_corpus.jsonl.gz``, so the model layer
does not depend on the sample generator, and the tiny model stays the same when the generator changes
(``tests/nyx/model/test_model_save.py`` checks that the copy still equals the sample; :func:`write_tiny_corpus`
renews it). The tiny Llama-3.2-Vision (:mod:`nyx.model.tiny_mllama`) trains its tokenizer on the same text.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nyx.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from nyx.model.backbone import TINY_DIRNAME, default_cache_dir, tiny_profile
from nyx.model.config import save_model_config
from nyx.model.processor import NyxQwenProcessor
from nyx.utils.build_cache import ensure_built

log = logging.getLogger(__name__)

#: The tokenizer's training text, one JSON string a line (gzip, no timestamp: the same bytes on every write).
TINY_CORPUS = Path(__file__).resolve().parent / "tiny_corpus.jsonl.gz"

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

#: Bump when the tiny model's recipe changes in a way the spec hash below does not capture.
TINY_BUILD_VERSION = "1"
TINY_SEED = 0
TINY_VOCAB_SIZE = 4096
TINY_TEXT: dict[str, Any] = dict(
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
TINY_VISION: dict[str, Any] = dict(
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


def tiny_training_texts(path: str | os.PathLike = TINY_CORPUS) -> Iterator[str]:
    """The text the tiny tokenizers are trained on (the bundled sample's text, frozen: see the module doc)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def write_tiny_corpus(texts: Iterable[str], path: str | os.PathLike = TINY_CORPUS) -> Path:
    """Write ``texts`` as the frozen training text (deterministic bytes). Renewing it changes the tiny models."""
    data = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts).encode("utf-8")
    Path(path).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return Path(path)


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str]):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` with ``special_tokens`` first in its vocabulary:
    what both tiny builders (Qwen here, Llama in :mod:`nyx.model.tiny_mllama`) wrap."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE):
    """A byte-level BPE tokenizer carrying Qwen's special tokens, wrapped as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_byte_level_bpe(texts, vocab_size, QWEN_SPECIAL_TOKENS),
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
    tokenizer = train_tiny_tokenizer(tiny_training_texts() if texts is None else texts)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab = ((len(tokenizer) + 63) // 64) * 64  # padded like real checkpoints
    # the text settings are passed flat, as the hub's config.json has them (a dict: the typed signature lacks them)
    config_kwargs: dict[str, Any] = dict(
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
    config = Qwen2_5_VLConfig(**config_kwargs)
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        model: Any = Qwen2_5_VLForConditionalGeneration(config)
        model = model.to(torch.float32).eval()
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
    save_model_config(out, tiny_profile(out))  # the profile, and the default input settings
    return out


@functools.lru_cache(maxsize=1)
def training_texts_hash() -> str:
    h = hashlib.sha256()
    for text in tiny_training_texts():
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def build_stamp() -> dict[str, str]:
    """What a cached tiny model must match to be reused: recipe version, spec and training text."""
    return {
        "builder": "nyx.model.backbone.build_tiny_model",  # its old home: kept, so built caches stay current
        "version": TINY_BUILD_VERSION,
        "spec": tiny_spec_hash(),
        "texts": training_texts_hash(),
    }


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the tiny model (``<cache_dir>/tiny-qwen2.5-vl``), built on first use.

    Rebuilt only when missing or when its build stamp differs from the current recipe. Concurrent
    builders (threads, processes, test workers) serialise on a lock file; the model is written into a
    temporary sibling folder and renamed into place, so a reader never sees a half-written model.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return ensure_built(cache / TINY_DIRNAME, build_stamp(), build_tiny_model, "the tiny Qwen2.5-VL model")


__all__ = [
    "QWEN_CHAT_TEMPLATE",
    "QWEN_SPECIAL_TOKENS",
    "TINY_MAX_LENGTH",
    "TINY_TEXT",
    "TINY_VISION",
    "TINY_VOCAB_SIZE",
    "build_tiny_model",
    "ensure_tiny_model",
    "tiny_spec_hash",
    "tiny_training_texts",
    "train_tiny_tokenizer",
    "write_tiny_corpus",
]
