"""NyxEncoder: interleaved text-and-image records -> L2-normalised embeddings with a Qwen2.5-VL backbone.

The flow for one batch, shared by inference and training::

    records --prepare--> PreparedInput (text with one <|image_pad|> per image, loaded images, exact length)
            --collate--> model inputs (input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw)
            --embed----> last-token pooled, L2-normalised torch tensor (with grad when grad is enabled)

* Each image part becomes ``<|vision_start|><|image_pad|><|vision_end|>`` in reading order; the processor expands
  the pad token into ``grid_thw.prod() // merge_size**2`` copies.
* Queries are wrapped in an instruction (:class:`QueryTemplate`, per task); documents carry none.
* Fitting a record into its token limit (:meth:`NyxEncoder.prepare`): a record that fits is left as it is.
  Otherwise images are first shrunk (aspect ratio kept, never below ``min_pixels``) just enough that the text
  keeps ``min(its length, min_text_share`` of the budget``)``; then text parts are cut, before tokenisation and
  expansion, with image tokens budgeted from each image's grid. An image's tokens are never cut; only trailing
  images that do not fit even at the pixel floor are dropped (counted, and logged with the record id), so
  "Image features and image tokens do not match" cannot happen.
* Token limits: training (:meth:`NyxEncoder.collate`) cuts at ``EncoderConfig.max_length``, the length the
  model is (or was) trained with; inference (:meth:`NyxEncoder.encode`, :meth:`NyxEncoder.prepare`) cuts at
  :attr:`NyxEncoder.inference_max_length`, which :meth:`NyxEncoder.from_pretrained` sets to the model's own
  context limit unless ``max_length`` is given.
* Positions (Qwen's 3-D mRoPE) are computed from the attention mask, so left and right padding give the
  same embedding, and a record gives the same embedding alone or in any batch.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionPatchEmbed,
    Qwen2_5_VLVisionAttention,
    apply_rotary_pos_emb_vision,
)

from nyx.data.images import ImageConfig, load_image
from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.model.pooling import last_token_pool, mrl_truncate, normalize
from nyx.model.processor import NyxQwenProcessor, set_pixel_budget
from nyx.model.profiles import (
    ModelProfile,
    load_backbone,
    load_profile_processor,
    resolve_device,
    resolve_dtype,
    resolve_profile,
)
from nyx.utils.io import atomic_write, read_json, write_json
from nyx.utils.prefetch import prefetch

log = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
PAPER_INSTRUCTION = "Please retrieve the most relevant document to answer the question."
#: The counters of :attr:`NyxEncoder.input_stats`.
INPUT_STAT_KEYS = (
    "records",
    "text_truncated",
    "images_shrunk",
    "images_dropped",
    "records_with_shrunk_images",
    "records_with_dropped_images",
)
#: Tokenizers without a limit report ``model_max_length`` as a huge sentinel (transformers' 1e30).
_NO_TOKENIZER_LIMIT = 10**9


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryTemplate:
    """The instruction a query is wrapped in. ``{question}`` stands for the query's interleaved content.

    ``with_choices`` is used when the query record's ``extra["choices"]`` is present (a list of options or a
    ready string), ``without_choices`` otherwise. Options are written as ``choice_format`` joined by
    ``choice_separator`` (``{letter}``: A, B, C...; ``{index}``: 0, 1, 2...; ``{text}``: the option).
    """

    with_choices: str = PAPER_INSTRUCTION + "\nQuestion: {question}\nChoices: {choices}"
    without_choices: str = PAPER_INSTRUCTION + "\nQuestion: {question}"
    choice_format: str = "({letter}) {text}"
    choice_separator: str = " "

    def __post_init__(self) -> None:
        for name in ("with_choices", "without_choices"):
            if getattr(self, name).count("{question}") != 1:
                raise ValueError(f"QueryTemplate.{name} must contain '{{question}}' exactly once")

    def format_choices(self, choices: Any) -> str:
        if isinstance(choices, str):
            return choices
        return self.choice_separator.join(
            self.choice_format.replace("{letter}", _letter(i)).replace("{index}", str(i)).replace("{text}", str(c))
            for i, c in enumerate(choices)
        )

    def frame(self, record: Record) -> tuple[str, str]:
        """``(text before the question, text after it)`` for this query record."""
        choices = record.extra.get("choices")
        template = self.with_choices if choices not in (None, "", []) else self.without_choices
        before, after = template.split("{question}")
        if choices not in (None, "", []):
            formatted = self.format_choices(choices)
            before, after = before.replace("{choices}", formatted), after.replace("{choices}", formatted)
        return before, after


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else str(i)


@dataclass(frozen=True)
class EncoderConfig:
    """How records become model inputs and how batches are run.

    ``input_style``: ``"plain"`` is ``{instruction+content}{eos_token}``; ``"chat"`` wraps the same in a user
    turn followed by an assistant prompt, then ``eos_token``. The embedding is the final hidden state of the
    last token (the paper's <EOS>). ``query_templates`` maps a task (``record.extra["task"]``) to its
    template; ``"default"`` serves every other query. ``dim`` truncates outputs to a Matryoshka prefix.

    ``max_length`` is the training token limit (what :meth:`NyxEncoder.collate` cuts at and a trained folder
    records); inference uses :attr:`NyxEncoder.inference_max_length`. ``min_text_share``: the share of a
    record's token budget (after the instruction frame) kept for its text when images must be shrunk to fit.
    """

    max_length: int = 3072
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 400 * 28 * 28
    padding_side: Literal["left", "right"] = "right"
    input_style: Literal["plain", "chat"] = "plain"
    eos_token: str = "<|endoftext|>"
    query_templates: dict[str, QueryTemplate] = field(default_factory=lambda: {"default": QueryTemplate()})
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

    def __post_init__(self) -> None:
        if "default" not in self.query_templates:
            raise ValueError("query_templates needs a 'default' entry")
        if self.batch_size < 1 or self.sort_window_batches < 1:
            raise ValueError("batch_size and sort_window_batches must be positive")
        if self.prefetch_batches < 0:
            raise ValueError("prefetch_batches must be >= 0")
        if not 0.0 <= self.min_text_share <= 1.0:
            raise ValueError("min_text_share must lie within 0..1")
        if self.autocast not in (None, "bfloat16"):
            raise ValueError(f"autocast must be None or 'bfloat16', got {self.autocast!r}")

    @classmethod
    def from_profile(cls, profile: ModelProfile, **overrides: Any) -> EncoderConfig:
        """The profile's input settings (its ``max_length`` is the training length), then ``overrides``."""
        base = cls(max_length=profile.max_length, min_pixels=profile.min_pixels, max_pixels=profile.max_pixels)
        return replace(base, **overrides)

    def template_for(self, record: Record) -> QueryTemplate:
        return self.query_templates.get(str(record.extra.get("task", "default")), self.query_templates["default"])


@dataclass
class PreparedInput:
    """One record ready for the processor: text with one ``<|image_pad|>`` per kept image, and the images."""

    record_id: str
    text: str
    images: list[Any]
    image_tokens: list[int]
    length: int  # exact number of tokens after the processor's expansion
    truncated: bool = False  # text cut or images dropped
    dropped_images: int = 0  # trailing images left out: they do not fit even at the pixel floor
    shrunk_images: int = 0  # kept images scaled down (below the pixel budget) to fit
    #: token ids of ``text`` (one ``<|image_pad|>`` per image, not yet expanded); lets collation skip
    #: re-tokenising. ``None``: the processor tokenises ``text``.
    input_ids: list[int] | None = None

    @property
    def n_images(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class EncodeWindow:
    """A sort window's records that were prepared, in input order (:meth:`NyxEncoder.iter_batches`)."""

    ids: list[str]


@dataclass(frozen=True)
class EncodeBatch:
    """Model inputs of one batch; ``rows`` index the batch's records in the current :class:`EncodeWindow`."""

    rows: list[int]
    inputs: dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# The torch module (what a trainer wraps with DDP / DeepSpeed)
# ----------------------------------------------------------------------------------------------------------


class EmbeddingModel(torch.nn.Module):
    """Backbone + last-token pooling + L2 normalisation: ``forward(**inputs) -> (B, hidden)`` float32.

    ``backbone`` is a ``Qwen2_5_VLForConditionalGeneration`` or a peft model wrapping one (LoRA layers are
    injected in place, so the inner ``Qwen2_5_VLModel`` runs them). The language-model head is never run.
    """

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone
        self.train(backbone.training)  # a new Module starts in training mode; follow the backbone's instead
        speed_up_vision_tower(self.vl_model())

    def vl_model(self) -> torch.nn.Module:
        m = self.backbone
        if hasattr(m, "get_base_model"):  # peft
            m = m.get_base_model()
        return m.model  # Qwen2_5_VLModel

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        model = self.vl_model()
        if mm_token_type_ids is None:
            mm_token_type_ids = (input_ids == model.config.image_token_id).to(torch.int32)
        # Positions from the mask: padding (either side) never shifts a sequence's positions.
        position_ids, _ = model.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            attention_mask=attention_mask,
        )
        # With right padding (or none) a causal mask alone is exact for every real token: token i only sees
        # j <= i, all real. Dropping the padding mask lets SDPA run its causal kernel instead of building and
        # applying a (B, 1, L, L) mask; padded positions' outputs change but are never pooled.
        lm_mask = None if _is_right_padded(attention_mask) else attention_mask
        out = model(
            input_ids=input_ids,
            attention_mask=lm_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            use_cache=False,
        )
        pooled = last_token_pool(out.last_hidden_state, attention_mask)
        return normalize(pooled.float())


def _is_right_padded(attention_mask: torch.Tensor) -> bool:
    """True when every row of the mask is ones followed by zeros (right padding, or no padding at all)."""
    mask = attention_mask.to(torch.bool)
    # Right padding <=> the mask never goes 0 -> 1 along a row.
    return not bool((~mask[:, :-1] & mask[:, 1:]).any())


# ----------------------------------------------------------------------------------------------------------
# Vision-tower speed-ups (same weights and same maths; applied in place by EmbeddingModel)
# ----------------------------------------------------------------------------------------------------------


class _MatmulPatchEmbed(Qwen2_5_VisionPatchEmbed):
    """The patch embedding as one matrix product.

    The original ``Conv3d`` has kernel == stride == the whole flattened patch, so it is exactly
    ``patches @ W.view(out, -1).T``; oneDNN's 3-D convolution is 5-7x slower than that matmul on CPU
    (measured: 6720 patches, 96 ms vs 14 ms on one core). Weights, state-dict keys and outputs (to float
    rounding, ~4e-6) are unchanged.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        return torch.nn.functional.linear(
            hidden_states.to(dtype=weight.dtype).reshape(-1, weight[0].numel()), weight.reshape(weight.shape[0], -1)
        )


class _GroupedVisionAttention(Qwen2_5_VLVisionAttention):
    """Vision attention over ``cu_seqlens`` chunks with one SDPA call per distinct chunk length.

    Without flash-attention, transformers runs one SDPA call per chunk (per window in the windowed layers,
    per image in the full-attention ones) in a Python loop. Chunks of equal length (most windows of a
    batch) are independent problems of the same shape, so they are stacked and solved in one call: the
    same maths, fewer calls. Flash-attention configurations keep the parent's varlen path.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        max_seqlen: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.config._attn_implementation != "sdpa":
            return super().forward(
                hidden_states, cu_seqlens, position_embeddings=position_embeddings, max_seqlen=max_seqlen, **kwargs
            )
        seq_length = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)  # (S, heads, head_dim)
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        starts = cu_seqlens[:-1].tolist()
        out = torch.empty_like(q)
        dropout = self.attention_dropout if self.training else 0.0
        by_length: dict[int, list[int]] = {}
        for start, n in zip(starts, lengths):
            if n > 0:
                by_length.setdefault(n, []).append(start)
        for n, group in by_length.items():
            # (chunks, n) token indices -> (chunks, heads, n, head_dim)
            idx = (
                torch.tensor(group, device=q.device).unsqueeze(1) + torch.arange(n, device=q.device).unsqueeze(0)
            ).reshape(-1)
            qs, ks, vs = (
                t.index_select(0, idx).reshape(len(group), n, self.num_heads, -1).transpose(1, 2) for t in (q, k, v)
            )
            o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout, scale=self.scaling)
            out.index_copy_(0, idx, o.transpose(1, 2).reshape(len(group) * n, self.num_heads, -1))
        return self.proj(out.reshape(seq_length, -1))


def speed_up_vision_tower(vl_model: torch.nn.Module) -> None:
    """Swap the vision tower's patch embedding and attention for the faster equivalents above, in place.

    Only modules of exactly the stock transformers classes are swapped (a ``Qwen2_5_VLModel`` from another
    version or a custom subclass is left alone); parameters and state-dict keys do not change.
    """
    visual = getattr(vl_model, "visual", None)
    if visual is None:
        return
    if type(getattr(visual, "patch_embed", None)) is Qwen2_5_VisionPatchEmbed:
        visual.patch_embed.__class__ = _MatmulPatchEmbed
    for block in getattr(visual, "blocks", []):
        if type(getattr(block, "attn", None)) is Qwen2_5_VLVisionAttention:
            block.attn.__class__ = _GroupedVisionAttention


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates
    them and bf16 autocast is slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def compile_backbone(vl_model: torch.nn.Module, dynamic: bool = True) -> list[str]:
    """``torch.compile`` the regular, hot parts of a ``Qwen2_5_VLModel`` in place (``nn.Module.compile``:
    parameters and state-dict keys are unchanged): every language-model decoder layer, and the vision tower's
    block MLPs, norms and patch merger. The data-dependent glue (mRoPE positions, vision windows, the grouped
    vision attention's per-length loop) stays eager. ``dynamic=True``: one graph for every batch shape.
    Returns the names of the compiled modules."""
    names: list[str] = []
    targets: list[tuple[str, torch.nn.Module]] = []
    lm = getattr(vl_model, "language_model", None)
    for i, layer in enumerate(getattr(lm, "layers", [])):
        targets.append((f"language_model.layers.{i}", layer))
    visual = getattr(vl_model, "visual", None)
    for i, block in enumerate(getattr(visual, "blocks", [])):
        for part in ("norm1", "norm2", "mlp"):
            if getattr(block, part, None) is not None:
                targets.append((f"visual.blocks.{i}.{part}", getattr(block, part)))
    if getattr(visual, "merger", None) is not None:
        targets.append(("visual.merger", visual.merger))
    for name, module in targets:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile(dynamic=dynamic)
        names.append(name)
    return names


# ----------------------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------------------


class NyxEncoder:
    """Embeds queries and documents (:class:`~nyx.data.records.Record`) into one space.

    Build it with :meth:`from_pretrained` (``"tiny"``, ``"paper"``, a local folder or a hub id, plus an
    optional LoRA adapter folder), or directly from a loaded backbone and processor.

    ``inference_max_length`` is the token limit of :meth:`prepare` and :meth:`encode` (default
    ``config.max_length``; :meth:`from_pretrained` sets the model's :attr:`context_length` unless told a
    ``max_length``); :meth:`collate`, the trainer's path, cuts at ``config.max_length``.

    :attr:`input_stats` counts, cumulatively over every :meth:`prepare` (encoding and collation alike) since
    construction or :meth:`reset_input_stats`: ``records`` prepared, ``text_truncated`` (records whose text was
    cut), ``images_shrunk`` / ``images_dropped`` (images scaled down to fit / left out, as they do not fit even
    at the pixel floor) and ``records_with_shrunk_images`` / ``records_with_dropped_images``.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        processor: NyxQwenProcessor,
        profile: ModelProfile,
        config: EncoderConfig | None = None,
        adapter_path: str | None = None,
        inference_max_length: int | None = None,
    ):
        self.profile = profile
        self.config = config or EncoderConfig.from_profile(profile)
        self.inference_max_length = int(inference_max_length or self.config.max_length)
        self._stats_lock = threading.Lock()
        self._input_stats = dict.fromkeys(INPUT_STAT_KEYS, 0)
        self.processor = processor
        self.module = EmbeddingModel(backbone)
        self.adapter_path = adapter_path
        self.image_config = ImageConfig(max_pixels=self.config.max_pixels, min_pixels=self.config.min_pixels)
        set_pixel_budget(processor, self.config.min_pixels, self.config.max_pixels)
        self.tokenizer = processor.tokenizer
        specials = sorted(
            set(self.tokenizer.all_special_tokens)
            | {
                IMAGE_PLACEHOLDER,
                "<|vision_pad|>",
                "<|video_pad|>",
                "<|image_pad|>",
                "<|vision_start|>",
                "<|vision_end|>",
            },
            key=len,
            reverse=True,
        )
        self._special_re = re.compile("|".join(re.escape(s) for s in specials if s))
        self._frame_lengths: dict[str, int] = {}
        self._image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        # Collation may reuse prepare()'s token ids when tokenising them again (as the processor does, with
        # the tokenizer's default special tokens) could not differ: the tokenizer adds no special tokens.
        probe = "a <|image_pad|> b"
        self._reuse_ids = (
            getattr(processor, "image_token_id", None) == self._image_token_id
            and self.tokenizer(probe)["input_ids"] == self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        )
        unk = self.tokenizer.unk_token_id
        for tok in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", self.config.eos_token):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if tid is None or (unk is not None and tid == unk):
                raise ValueError(f"the tokenizer has no {tok!r} token")
        if self.config.dim is not None and not 0 < self.config.dim <= self.hidden_size:
            raise ValueError(f"dim {self.config.dim} outside 1..{self.hidden_size}")
        if self.config.autocast == "bfloat16" and self.device.type == "cpu" and not cpu_supports_bf16():
            raise ValueError(
                "autocast='bfloat16' needs a CPU with native bf16 (avx512_bf16 or AMX); this one "
                "would emulate it, slower than float32"
            )
        self.compiled_modules = compile_backbone(self.module.vl_model()) if self.config.compile else []

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | ModelProfile,
        adapter_path: str | os.PathLike | None = None,
        device: Any = None,
        dtype: Any = "auto",
        merge_adapter: bool = True,
        **config_overrides: Any,
    ) -> NyxEncoder:
        """Load a profile's backbone and processor (and a peft LoRA adapter), ready for :meth:`encode`.

        ``name_or_path`` may also be an adapter folder (with ``adapter_config.json``): its base model is then
        loaded and the adapter applied. ``config_overrides`` set :class:`EncoderConfig` fields
        (``batch_size=16``, ``padding_side="left"``, ``dim=256``, ...). An adapter folder's own
        ``nyx_profile.json`` (written by the trainer) supplies the input settings it was trained with
        (``max_length``, ``max_pixels``, ``min_pixels``) unless overridden here.

        The pixel budget carries over to inference (a model property); the training ``max_length`` does not:
        :attr:`inference_max_length` is the model's :attr:`context_length` unless ``max_length`` is given
        here, which then sets both. ``config.max_length`` keeps the training length, so training from the
        loaded encoder (:meth:`collate`) still cuts where it did.
        """
        if config_overrides.get("max_length", 0) is None:
            del config_overrides["max_length"]
        explicit_max_length = config_overrides.get("max_length")
        trained_with: dict[str, Any] = {}
        for folder in (adapter_path, name_or_path):
            if folder is not None and not isinstance(folder, ModelProfile):
                trained_with = {**_trained_input_settings(Path(folder)), **trained_with}
        if not isinstance(name_or_path, ModelProfile) and (Path(name_or_path) / "adapter_config.json").is_file():
            if adapter_path is not None:
                raise ValueError(f"{name_or_path} is an adapter folder and adapter_path was also given")
            adapter_path = name_or_path
            name_or_path = read_json(Path(name_or_path) / "adapter_config.json")["base_model_name_or_path"]
        profile = resolve_profile(name_or_path)
        dev = resolve_device(device)
        backbone = load_backbone(
            profile, device=dev, dtype=resolve_dtype(dtype if dtype is not None else profile.dtype, dev)
        )
        if adapter_path is not None:
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, os.fspath(adapter_path), is_trainable=False)
            if merge_adapter:
                backbone = backbone.merge_and_unload()
            backbone = backbone.to(dev).eval()
        processor = load_profile_processor(profile)
        config = EncoderConfig.from_profile(profile, **{**trained_with, **config_overrides})
        encoder = cls(
            backbone,
            processor,
            profile,
            config,
            adapter_path=os.fspath(adapter_path) if adapter_path is not None else None,
            inference_max_length=explicit_max_length,
        )
        if explicit_max_length is None:
            encoder.inference_max_length = encoder.context_length
        return encoder

    # -- identity -----------------------------------------------------------------------------------------

    @property
    def backbone(self) -> torch.nn.Module:
        return self.module.backbone

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.module.vl_model().config.text_config.hidden_size)

    @property
    def dim(self) -> int:
        """Size of the embeddings :meth:`encode` returns (the Matryoshka prefix when ``config.dim`` is set)."""
        return self.config.dim or self.hidden_size

    @property
    def context_length(self) -> int:
        """The longest input the model takes: its text backbone's ``max_position_embeddings``, or the
        tokenizer's ``model_max_length`` when that is set and smaller."""
        limit = int(self.module.vl_model().config.text_config.max_position_embeddings)
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_TOKENIZER_LIMIT:
            limit = min(limit, tokenizer_limit)
        return limit

    @property
    def input_stats(self) -> dict[str, int]:
        """A copy of the cumulative input counters (see the class docstring), e.g. for an index manifest."""
        with self._stats_lock:
            return dict(self._input_stats)

    def reset_input_stats(self) -> None:
        """Set every :attr:`input_stats` counter back to 0."""
        with self._stats_lock:
            self._input_stats = dict.fromkeys(INPUT_STAT_KEYS, 0)

    def _count_input(self, prepared: PreparedInput, text_truncated: bool) -> None:
        with self._stats_lock:
            st = self._input_stats
            st["records"] += 1
            st["text_truncated"] += int(text_truncated)
            st["images_shrunk"] += prepared.shrunk_images
            st["images_dropped"] += prepared.dropped_images
            st["records_with_shrunk_images"] += int(prepared.shrunk_images > 0)
            st["records_with_dropped_images"] += int(prepared.dropped_images > 0)

    @property
    def model_id(self) -> str:
        return self.profile.name_or_path

    @property
    def revision(self) -> str | None:
        return self.profile.revision

    def info(self) -> dict[str, Any]:
        """What an index manifest records to tell whether two sets of embeddings are comparable."""
        cfg = asdict(self.config)
        return {
            "profile": self.profile.name,
            "model_id": self.model_id,
            "revision": self.revision,
            "adapter_path": self.adapter_path,
            "dim": self.dim,
            "hidden_size": self.hidden_size,
            "max_length": self.inference_max_length,
            "min_text_share": self.config.min_text_share,
            "image_fit": "shrink",  # oversize images are scaled down, not dropped (embeddings differ from "drop")
            "min_pixels": self.config.min_pixels,
            "max_pixels": self.config.max_pixels,
            "input_style": self.config.input_style,
            "eos_token": self.config.eos_token,
            "query_templates": cfg["query_templates"],
            "pooling": "last_token",
            "normalized": True,
            # only when set: bf16 embeddings differ from float32 ones beyond rounding (compile does not change them)
            **({"autocast": self.config.autocast} if self.config.autocast else {}),
        }

    # -- input building ---------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        """Remove Qwen control tokens from user text (a literal ``<|image_pad|>`` would break the batch)."""
        return self._special_re.sub("", text)

    def _frame(self, record: Record, is_query: bool) -> tuple[str, str]:
        before, after = self.config.template_for(record).frame(record) if is_query else ("", "")
        if self.config.input_style == "chat":
            before = "<|im_start|>user\n" + before
            after = after + "<|im_end|>\n<|im_start|>assistant\n"
        return before, after + self.config.eos_token

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added), in one tokenizer call."""
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def _n_tokens(self, text: str) -> int:
        """Token count of a frame string (instruction, chat wrapper, EOS): few distinct values, cached."""
        if text not in self._frame_lengths:
            if len(self._frame_lengths) > 1024:
                self._frame_lengths.clear()
            self._frame_lengths[text] = len(self._token_ids([text])[0]) if text else 0
        return self._frame_lengths[text]

    def prepare(self, record: Record, is_query: bool, max_length: int | None = None) -> PreparedInput:
        """Load the record's images and build its text within ``max_length`` tokens (default
        :attr:`inference_max_length`).

        The fitting rule, where ``budget`` is ``max_length`` less the instruction frame (template, chat wrapper,
        EOS) and ``keep = min(the record's text tokens, ceil(config.min_text_share * budget))``:

        1. a record that fits is left exactly as it is;
        2. when the images leave less than ``keep`` tokens for the text, they are shrunk (aspect ratio kept,
           the largest first, to one common per-image token cap, never below ``min_pixels``) just enough to
           leave ``keep``; only trailing images that do not fit ``budget`` even at the pixel floor are dropped
           (logged with the record id);
        3. then the text is cut to what the images leave (its end first); an image's tokens are never cut.

        So a page image with a long text layer always reaches the model as an image, and a short caption is
        never cut to make room for a picture. :attr:`input_stats` counts what was cut, shrunk and dropped.
        Raises :class:`RecordError` naming the record when an image cannot be loaded, or when the frame alone
        does not fit.
        """
        before, after = self._frame(record, is_query)
        pieces: list[tuple[str, Any]] = []  # ("text", str) or ("image", index into images)
        images, image_tokens = [], []
        for part in record.content:
            if part.type == "image":
                img = load_image(part.image, self.image_config, record_id=record.id)
                pieces.append(("image", len(images)))
                images.append(img)
                image_tokens.append(self.processor.num_image_tokens(img.height, img.width))
            elif part.text:
                text = self._clean(part.text)
                if text:
                    if pieces and pieces[-1][0] == "text":
                        text = "\n" + text
                    pieces.append(("text", text))
        piece_ids = iter(self._token_ids([v for k, v in pieces if k == "text"]))
        text_ids = [next(piece_ids) if k == "text" else None for k, _ in pieces]
        max_len = self.inference_max_length if max_length is None else int(max_length)
        frame_len = self._n_tokens(before) + self._n_tokens(after)
        total_text = sum(len(ids) for ids in text_ids if ids is not None)

        images, image_tokens, shrunk = self._fit_images(
            record.id, images, image_tokens, max_len - frame_len, total_text
        )
        n_keep = len(images)
        dropped = sum(1 for kind, _ in pieces if kind == "image") - n_keep
        if dropped:
            log.warning(
                "record %r: %d image(s) dropped, they do not fit max_length=%d even at min_pixels=%d",
                record.id,
                dropped,
                max_len,
                self.config.min_pixels,
            )

        budget = max_len - frame_len - sum(t + 2 for t in image_tokens)
        for _ in range(8):
            text, kept_text = self._assemble(before, after, pieces, text_ids, n_keep, budget)
            ids = self._token_ids([text])[0]
            length = len(ids) + sum(t - 1 for t in image_tokens[:n_keep])
            if length <= max_len or budget <= 0:
                break
            budget -= length - max_len  # re-tokenisation across part boundaries can differ by a few tokens
        if length > max_len:
            raise RecordError(
                f"cannot fit max_length={max_len}: instruction and images need {length} tokens", record_id=record.id
            )
        prepared = PreparedInput(
            record_id=record.id,
            text=text,
            images=images,
            image_tokens=image_tokens,
            length=length,
            truncated=kept_text < total_text or dropped > 0,
            dropped_images=dropped,
            shrunk_images=shrunk,
            input_ids=ids,
        )
        self._count_input(prepared, kept_text < total_text)
        return prepared

    def _fit_images(
        self, record_id: str, images: list[Any], image_tokens: list[int], budget: int, text_tokens: int
    ) -> tuple[list[Any], list[int], int]:
        """Step 2 of :meth:`prepare`'s rule: ``(kept images, their token counts, how many were shrunk)`` for a
        record with ``budget`` tokens beside its frame and ``text_tokens`` of text. Unchanged when the images
        leave the text its share; trailing images that do not fit ``budget`` at the pixel floor are left out."""
        cost = sum(t + 2 for t in image_tokens)  # + <|vision_start|> and <|vision_end|>
        keep_text = min(text_tokens, math.ceil(self.config.min_text_share * max(budget, 0)))
        if cost <= budget - keep_text:
            return images, image_tokens, 0
        proc = self.processor
        floor_tokens = max(1, self.config.min_pixels // proc.factor**2)

        def tokens_at(cap: int) -> list[tuple[int, int, int]]:
            """``(height, width, tokens)`` of each image under a per-image cap of ``cap`` tokens."""
            out = []
            for img, t in zip(images, image_tokens):
                if t <= cap:
                    out.append((img.height, img.width, t))
                else:
                    h, w = proc.shrunk_size(img.height, img.width, cap)
                    out.append((h, w, min(t, proc.num_image_tokens(h, w))))
            return out

        floors = tokens_at(floor_tokens)
        n_keep = len(images)
        while n_keep > 0 and sum(t + 2 for *_, t in floors[:n_keep]) > budget:
            n_keep -= 1
        images, image_tokens = images[:n_keep], image_tokens[:n_keep]
        target = max(budget - keep_text, sum(t + 2 for *_, t in floors[:n_keep]))
        if sum(t + 2 for t in image_tokens) <= target:
            return images, image_tokens, 0
        # the largest common per-image cap whose total fits (the floor fits by construction)
        low, high = floor_tokens, max(image_tokens)
        while low < high:
            mid = (low + high + 1) // 2
            if sum(t + 2 for *_, t in tokens_at(mid)) <= target:
                low = mid
            else:
                high = mid - 1
        sized, shrunk = tokens_at(low), 0
        fitted, fitted_tokens = [], []
        for img, t, (h, w, new_t) in zip(images, image_tokens, sized):
            if new_t < t:
                img = img.resize((w, h), resample=self.image_config.resample)
                shrunk += 1
            fitted.append(img)
            fitted_tokens.append(new_t)
        if shrunk:
            log.debug("record %r: %d image(s) shrunk to fit %d tokens", record_id, shrunk, budget)
        return fitted, fitted_tokens, shrunk

    def _assemble(
        self,
        before: str,
        after: str,
        pieces: list[tuple[str, Any]],
        text_ids: list[list[int] | None],
        n_images: int,
        budget: int,
    ) -> tuple[str, int]:
        """The input text with the first ``budget`` text tokens (in reading order) and the first images."""
        out, left, kept = [before], max(budget, 0), 0
        for (kind, value), ids in zip(pieces, text_ids):
            if kind == "image":
                if value < n_images:
                    out.append(IMAGE_PLACEHOLDER)
            elif left > 0:
                if len(ids) <= left:
                    out.append(value)
                    left, kept = left - len(ids), kept + len(ids)
                else:
                    out.append(self.tokenizer.decode(ids[:left], skip_special_tokens=False))
                    left, kept = 0, kept + left
        out.append(after)
        return "".join(out), kept

    def collate_prepared(self, prepared: Sequence[PreparedInput]) -> dict[str, torch.Tensor]:
        """Run the processor on prepared inputs: padded token ids, masks, pixels and image grids (CPU tensors).

        When every input carries its token ids (from :meth:`prepare`), the text is not tokenised again:
        the ids are expanded and padded here exactly as the processor would, and only the images go
        through the image processor.
        """
        images = [img for p in prepared for img in p.images]
        extra: dict[str, Any] = {}
        if images and all(self.processor.is_resized(img.height, img.width) for img in images):
            extra["do_resize"] = False  # load_image already smart-resized them: skip PIL's identity resize
        if self._reuse_ids and all(p.input_ids is not None for p in prepared):
            return self._collate_ids(prepared, images, extra)
        batch = self.processor(
            text=[p.text for p in prepared],
            images=images or None,
            return_tensors="pt",
            padding=True,
            padding_side=self.config.padding_side,
            truncation=False,
            **extra,
        )
        return {k: v for k, v in batch.items() if k != "token_type_ids"}

    def _collate_ids(
        self, prepared: Sequence[PreparedInput], images: list[Any], image_kwargs: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """The processor's output built from prepared token ids: each ``<|image_pad|>`` expanded to its
        image's ``grid_thw.prod() // merge_size**2`` copies, then padded (``collate_prepared``'s fast path)."""
        out: dict[str, torch.Tensor] = {}
        counts = np.zeros(0, dtype=np.int64)
        if images:
            pixels = self.processor.image_processor(images=images, return_tensors="pt", **image_kwargs)
            out["pixel_values"], out["image_grid_thw"] = pixels["pixel_values"], pixels["image_grid_thw"]
            counts = (pixels["image_grid_thw"].prod(-1) // self.processor.merge_size**2).numpy()
        img_id, seqs, used = self._image_token_id, [], 0
        for p in prepared:
            ids = np.asarray(p.input_ids, dtype=np.int64)
            is_img = ids == img_id
            n_img = int(is_img.sum())
            if n_img != p.n_images:
                raise RecordError(f"{n_img} image tokens in the text for {p.n_images} images", record_id=p.record_id)
            reps = np.ones(len(ids), dtype=np.int64)
            reps[is_img] = counts[used : used + n_img]
            used += n_img
            seqs.append(np.repeat(ids, reps))
        longest = max(len(q) for q in seqs)
        input_ids = np.full((len(seqs), longest), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), longest), dtype=np.int64)
        for row, q in enumerate(seqs):
            cols = slice(0, len(q)) if self.config.padding_side == "right" else slice(longest - len(q), longest)
            input_ids[row, cols], mask[row, cols] = q, 1
        ids_t = torch.from_numpy(input_ids)
        return {
            "input_ids": ids_t,
            "attention_mask": torch.from_numpy(mask),
            "mm_token_type_ids": (ids_t == img_id).to(torch.int64),
            **out,
        }

    def collate(self, records: Sequence[Record], is_query: bool) -> dict[str, torch.Tensor]:
        """Records -> model inputs (the trainer's collator uses this), cut at the training ``config.max_length``."""
        return self.collate_prepared([self.prepare(r, is_query, self.config.max_length) for r in records])

    # -- embedding ----------------------------------------------------------------------------------------

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs -> L2-normalised float32 embeddings (B, hidden); differentiable when grad is on."""
        dev = self.device
        moved = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self.config.autocast is None:
            return self.module(**moved)
        with torch.autocast(dev.type, dtype=getattr(torch, self.config.autocast)):
            return self.module(**moved)

    def forward_embeddings(
        self, batch: Sequence[Record] | dict[str, torch.Tensor], is_query: bool = False
    ) -> torch.Tensor:
        """Embeddings WITH grad for training: records (collated here) or already collated inputs."""
        inputs = batch if isinstance(batch, dict) else self.collate(batch, is_query)
        return self.embed(inputs)

    # -- batched inference --------------------------------------------------------------------------------

    def encode(
        self,
        records: Iterable[Record],
        is_query: bool = False,
        batch_size: int | None = None,
        dim: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed records -> float32 array (N, dim), rows in input order, L2-normalised.

        A record whose image cannot be loaded raises :class:`RecordError` (use :meth:`encode_to_shards`
        with a ``RejectLog`` to skip and log bad records instead).
        """
        records = list(records)
        out = np.zeros((len(records), dim or self.dim), dtype=np.float32)
        row = 0
        for _, emb in self._iter_encoded(
            records, is_query, batch_size, dim, show_progress, rejects=None, total=len(records)
        ):
            out[row : row + len(emb)] = emb
            row += len(emb)
        return out

    def encode_queries(self, records: Iterable[Record], **kwargs: Any) -> np.ndarray:
        return self.encode(records, is_query=True, **kwargs)

    def encode_documents(self, records: Iterable[Record], **kwargs: Any) -> np.ndarray:
        return self.encode(records, is_query=False, **kwargs)

    def _iter_encoded(
        self,
        records: Iterable[Record],
        is_query: bool,
        batch_size: int | None,
        dim: int | None,
        show_progress: bool | None,
        rejects: RejectLog | None,
        total: int | None = None,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, embeddings)`` window by window, in input order (rejected records left out).

        Within a window of ``batch_size * sort_window_batches`` records, batches are formed from records of
        similar length and image count, which cuts padding; the order is restored before yielding. Image
        loading, tokenisation and collation (:meth:`iter_batches`) run ``config.prefetch_batches`` batches ahead
        of the model in a background thread.
        """
        bs = batch_size or self.config.batch_size
        show = self.config.show_progress if show_progress is None else show_progress
        want = dim or self.dim
        depth = self.config.prefetch_batches if total is None or total > bs else 0  # one batch: nothing to overlap
        was_training = self.module.training
        if was_training:
            self.module.eval()
        try:
            with (
                tqdm(total=total, disable=not show, unit="rec", desc="query" if is_query else "document") as bar,
                torch.inference_mode(),
            ):
                for item in prefetch(self.iter_batches(records, is_query, bs), depth, name="nyx-encode-prefetch"):
                    if isinstance(item, RecordError):
                        if rejects is None:
                            raise item
                        rejects.add(item)
                        bar.update(1)
                    elif isinstance(item, EncodeWindow):
                        ids, pending = item.ids, len(item.ids)
                        emb = np.zeros((pending, want), dtype=np.float32)
                        if not pending:  # every record of the window was rejected
                            yield ids, emb
                    else:
                        emb[item.rows] = mrl_truncate(self.embed(item.inputs), want).cpu().numpy()
                        pending -= len(item.rows)
                        bar.update(len(item.rows))
                        if not pending:
                            yield ids, emb
        finally:
            if was_training:
                self.module.train()

    def iter_batches(
        self, records: Iterable[Record], is_query: bool, batch_size: int
    ) -> Iterator[RecordError | EncodeWindow | EncodeBatch]:
        """The CPU side of encoding as a stream. Per window of ``batch_size * sort_window_batches`` records:
        a :class:`RecordError` for each record that cannot be prepared, then an :class:`EncodeWindow` with the
        ids of the others, then an :class:`EncodeBatch` per length-sorted batch."""
        for chunk in _chunks(records, batch_size * self.config.sort_window_batches):
            prepared: list[PreparedInput] = []
            for r in chunk:
                try:
                    prepared.append(self.prepare(r, is_query))
                except RecordError as e:
                    yield e
            yield EncodeWindow([p.record_id for p in prepared])
            order = sorted(range(len(prepared)), key=lambda i: (-prepared[i].length, -prepared[i].n_images))
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                yield EncodeBatch(rows, self.collate_prepared([prepared[i] for i in rows]))

    def encode_to_shards(
        self,
        records: Iterable[Record],
        out_dir: str | os.PathLike,
        shard_size: int = 10_000,
        is_query: bool = False,
        batch_size: int | None = None,
        dim: int | None = None,
        rejects: RejectLog | None = None,
        show_progress: bool | None = None,
    ) -> dict[str, Any]:
        """Stream embeddings to ``out_dir`` as ``.npy`` shards with their ids (for corpora larger than memory).

        Writes ``embeddings-00000.npy`` + ``ids-00000.json`` per ``shard_size`` records, then ``manifest.json``
        (shards, count, dim, :meth:`info`). Each file is written atomically. Records that cannot be prepared go
        to ``rejects`` when given (and are left out), otherwise they raise. Returns the manifest.
        """
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        want = dim or self.dim
        shards: list[dict[str, Any]] = []
        ids_buf: list[str] = []
        emb_buf: list[np.ndarray] = []
        buffered = 0
        total = len(records) if hasattr(records, "__len__") else None  # type: ignore[arg-type]

        def flush() -> None:
            nonlocal ids_buf, emb_buf, buffered
            if not buffered:
                return
            k = len(shards)
            emb = np.concatenate(emb_buf)[:buffered]
            emb_name, ids_name = f"embeddings-{k:05d}.npy", f"ids-{k:05d}.json"
            with atomic_write(out / emb_name, "wb") as f:
                np.save(f, emb)
            write_json(ids_buf, out / ids_name)
            shards.append({"embeddings": emb_name, "ids": ids_name, "count": buffered})
            ids_buf, emb_buf, buffered = [], [], 0

        for ids, emb in self._iter_encoded(records, is_query, batch_size, want, show_progress, rejects, total):
            pos = 0
            while pos < len(ids):
                take = min(shard_size - buffered, len(ids) - pos)
                ids_buf.extend(ids[pos : pos + take])
                emb_buf.append(emb[pos : pos + take])
                buffered += take
                pos += take
                if buffered == shard_size:
                    flush()
        flush()
        manifest = {
            "count": sum(s["count"] for s in shards),
            "dim": want,
            "dtype": "float32",
            "is_query": is_query,
            "shards": shards,
            "encoder": {**self.info(), "dim": want},
            "rejected": len(rejects) if rejects is not None else 0,
        }
        write_json(manifest, out / "manifest.json")
        return manifest


def read_shards(out_dir: str | os.PathLike, mmap: bool = True) -> Iterator[tuple[list[str], np.ndarray]]:
    """Iterate ``(ids, embeddings)`` over the shards written by :meth:`NyxEncoder.encode_to_shards`."""
    out = Path(out_dir)
    manifest = read_json(out / "manifest.json")
    for shard in manifest["shards"]:
        emb = np.load(out / shard["embeddings"], mmap_mode="r" if mmap else None)
        ids = read_json(out / shard["ids"])
        if len(ids) != len(emb):
            raise ValueError(f"shard {shard['embeddings']}: {len(emb)} embeddings but {len(ids)} ids")
        yield ids, emb


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for item in items:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


__all__ = [
    "EmbeddingModel",
    "EncodeBatch",
    "EncodeWindow",
    "EncoderConfig",
    "NyxEncoder",
    "PreparedInput",
    "QueryTemplate",
    "compile_backbone",
    "cpu_supports_bf16",
    "read_shards",
]


def _trained_input_settings(folder: Path) -> dict[str, Any]:
    """``max_length`` / ``max_pixels`` / ``min_pixels`` recorded in an *adapter* folder's ``nyx_profile.json`` (a full
    model folder's profile is read by :func:`resolve_profile` already)."""
    from nyx.model.profiles import PROFILE_FILENAME

    if not (folder / "adapter_config.json").is_file() or not (folder / PROFILE_FILENAME).is_file():
        return {}
    saved = read_json(folder / PROFILE_FILENAME)
    return {k: saved[k] for k in ("max_length", "max_pixels", "min_pixels") if saved.get(k) is not None}
