"""A tiny, randomly initialised Llama-3.2-Vision (``MllamaForConditionalGeneration``), built offline.

It stands in for mmE5 (``intfloat/mmE5-mllama-11b-instruct``, a Llama-3.2-11B-Vision fine-tune) wherever weights
cannot be downloaded: the ``rehearsal`` profile's hard-negative miner and the tests. Same architecture as the real
model (vision tower with tiles and aspect-ratio embeddings, gated cross-attention layers in the text decoder), a few
hundred thousand parameters:

* tokenizer: a byte-level BPE trained on the bundled sample's text (as the tiny Qwen's), carrying Llama 3's special
  tokens (``<|begin_of_text|>``, ``<|image|>``, ...). Like the real Llama-3.2-Vision processor path, the BOS token is
  written into the prompt by ``MllamaProcessor`` (the tokenizer adds none itself);
* image processor: transformers' Mllama image processor (the PIL backend, ``MllamaImageProcessorPil``: no
  torchvision on the CPU machines) with its defaults (4 tiles, the 8 default aspect ratios, ImageNet mean/std,
  bilinear) but 28x28-pixel tiles instead of 560x560;
* weights: ``torch.manual_seed(TINY_MLLAMA_SEED)``, with the tanh gates a fresh init closes opened (else the
  images would not reach the text at all), saved with ``save_pretrained`` in the hub layout, so it loads
  through the very same ``from_pretrained`` path as the real model.

:func:`ensure_tiny_mllama` caches it in ``<cache>/tiny-mllama`` (``$NYX_CACHE_DIR`` or ``.cache/nyx``), built under a
file lock into a temporary folder renamed into place, and rebuilt only when its stamp differs from the recipe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from nyx.model.backbone import default_cache_dir
from nyx.model.tiny import tiny_training_texts, train_byte_level_bpe, training_texts_hash
from nyx.utils.build_cache import ensure_built

log = logging.getLogger(__name__)

TINY_MLLAMA_DIRNAME = "tiny-mllama"
TINY_MLLAMA_NAME = "tiny-mllama"

#: Bump when the recipe changes in a way the spec hash does not capture.
TINY_MLLAMA_BUILD_VERSION = "1"
TINY_MLLAMA_SEED = 0
TINY_MLLAMA_VOCAB_SIZE = 2048

#: Llama 3's special tokens used by the Llama-3.2-Vision tokenizer and processor.
LLAMA_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
)

TINY_MLLAMA_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,  # layer 1 is a gated cross-attention layer (the real model: every 5th of 40)
    cross_attention_layers=[1],
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 500_000.0},
    tie_word_embeddings=False,
)
TINY_MLLAMA_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_global_layers=1,
    attention_heads=2,
    num_channels=3,
    image_size=28,
    patch_size=14,
    max_num_tiles=4,
    intermediate_layers_indices=[0],
    vision_output_dim=64,  # hidden_size * (1 + len(intermediate_layers_indices))
    norm_eps=1e-5,
)
#: Tile size of the tiny image processor (= vision ``image_size``); everything else is the processor's default.
TINY_MLLAMA_TILE = {"height": 28, "width": 28}


def tiny_mllama_spec_hash() -> str:
    spec = {
        "version": TINY_MLLAMA_BUILD_VERSION,
        "seed": TINY_MLLAMA_SEED,
        "gate": TINY_MLLAMA_GATE,
        "vocab": TINY_MLLAMA_VOCAB_SIZE,
        "special": LLAMA_SPECIAL_TOKENS,
        "text": TINY_MLLAMA_TEXT,
        "vision": TINY_MLLAMA_VISION,
        "tile": TINY_MLLAMA_TILE,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def train_tiny_llama_tokenizer(texts: Iterable[str], vocab_size: int = TINY_MLLAMA_VOCAB_SIZE):
    """A byte-level BPE tokenizer with Llama 3's special tokens, wrapped as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_byte_level_bpe(texts, vocab_size, LLAMA_SPECIAL_TOKENS),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        additional_special_tokens=[
            t for t in LLAMA_SPECIAL_TOKENS if t not in ("<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>")
        ],
        model_max_length=131072,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


#: Value given to the tanh gates that a fresh Mllama initialises to zero (see :func:`_open_gates`).
TINY_MLLAMA_GATE = 1.0


def _open_gates(model) -> None:
    """Set the tanh gates that ``_init_weights`` zeroes to :data:`TINY_MLLAMA_GATE`.

    A fresh Mllama starts with closed gates on the text decoder's cross-attention (``cross_attn_attn_gate``,
    ``cross_attn_mlp_gate``) and on the tile embeddings: with them at zero the images would have no effect at all on
    the text's hidden states. A trained model's gates are open, so the tiny stand-in opens them too; every other
    weight stays random."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")) or (
                "tile_positional_embedding" in name and name.endswith(".gate")
            ):
                p.fill_(TINY_MLLAMA_GATE)


def build_tiny_mllama(out_dir: str | os.PathLike, texts: Iterable[str] | None = None) -> Path:
    """Build the tiny Llama-3.2-Vision model and its processor into ``out_dir`` (deterministic)."""
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_llama_tokenizer(tiny_training_texts() if texts is None else texts)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAMA_SPECIAL_TOKENS}
    config = MllamaConfig(
        text_config=dict(
            TINY_MLLAMA_TEXT,
            vocab_size=len(tokenizer),
            bos_token_id=ids["<|begin_of_text|>"],
            eos_token_id=ids["<|eot_id|>"],
            pad_token_id=ids["<|finetune_right_pad_id|>"],
        ),
        vision_config=dict(TINY_MLLAMA_VISION),
        image_token_index=ids["<|image|>"],
    )
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_MLLAMA_SEED)
        # transformers wraps PreTrainedModel.to in functools.wraps(torch.nn.Module.to), and typeshed's _Wrapped is
        # not a descriptor, so mypy takes the dtype for `self`: a third-party typing gap, the call is correct.
        model = MllamaForConditionalGeneration(config).to(torch.float32).eval()  # type: ignore[arg-type]
        _open_gates(model)
    finally:
        torch.random.set_rng_state(rng_state)
    model.save_pretrained(out)
    image_processor = MllamaImageProcessorPil(size=dict(TINY_MLLAMA_TILE))
    MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def build_stamp() -> dict[str, str]:
    return {
        "builder": "nyx.model.tiny_mllama.build_tiny_mllama",
        "version": TINY_MLLAMA_BUILD_VERSION,
        "spec": tiny_mllama_spec_hash(),
        "texts": training_texts_hash(),
    }


def ensure_tiny_mllama(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the tiny mllama (``<cache_dir>/tiny-mllama``), built on first use (see the module doc)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return ensure_built(
        cache / TINY_MLLAMA_DIRNAME, build_stamp(), build_tiny_mllama, "the tiny Llama-3.2-Vision model"
    )


__all__ = [
    "LLAMA_SPECIAL_TOKENS",
    "TINY_MLLAMA_NAME",
    "build_tiny_mllama",
    "ensure_tiny_mllama",
    "tiny_mllama_spec_hash",
    "train_tiny_llama_tokenizer",
]
