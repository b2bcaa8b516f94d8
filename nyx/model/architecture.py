"""The paper model's architecture, for building it with random weights where it cannot be downloaded.

The paper's Matryoshka ladder; constants of ``Qwen/Qwen2.5-VL-3B-Instruct``'s ``config.json`` and
:func:`paper_architecture_config`; only ``benchmarks/gpu_check.py`` builds a model from them (the paper *profile*,
which loads the real checkpoint, is :func:`nyx.model.backbone.paper_profile`).
"""

from __future__ import annotations

from typing import Any

#: The paper's Matryoshka ladder: embedding prefixes trained, evaluated and indexed, and their loss weights. The one
#: definition: a model profile carries it (:attr:`nyx.model.backbone.ModelProfile.mrl_dims`); training, evaluation
#: and the index read it from there.
PAPER_MRL_DIMS: tuple[int, ...] = (2048, 1024, 512, 256)
PAPER_MRL_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 0.2, 0.2)

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
    kwargs: dict[str, Any] = dict(
        **PAPER_TEXT,
        vision_config=dict(PAPER_VISION),
        **ids,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
    )
    return Qwen2_5_VLConfig(
        **kwargs
    )  # text settings flat, as in the hub's config.json (the typed signature lacks them)


__all__ = [
    "PAPER_N_PARAMS",
    "PAPER_TEXT",
    "PAPER_TOKEN_IDS",
    "PAPER_VISION",
    "SPECIAL_TOKEN_ID_KEYS",
    "paper_architecture_config",
]
