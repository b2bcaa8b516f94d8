"""The encoder's speed-ups compute exactly what the slow, stock paths compute.

Each fast path of ``nyx.model.encoder`` is checked against its reference on the tiny model:

* collation from ``prepare()``'s token ids == the processor (tokenizer + image processor) on the same text;
* the swapped vision tower (matmul patch embedding, grouped window attention) == the stock transformers
  tower with the same weights, in outputs and in parameter gradients;
* right padding without a padding mask == left padding with the mask == one record at a time;
* skipping the image processor's identity resize (``NyxQwenProcessor.is_resized``) == the processor's own
  preprocessing, for an image already at its target size and for one that still needs resizing.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from nyx.data.records import Part, Record
from nyx.model.backbone import load_backbone
from nyx.model.collator import PreparedInput
from nyx.model.encoder import NyxEncoder
from nyx.model.processor import NyxQwenProcessor
from nyx.model.vision_speedups import _GroupedVisionAttention, _MatmulPatchEmbed
from tests.tolerances import EPS32, EPS64, F32_OUTPUT_TOL, assert_within, rounding_tol


@pytest.fixture(scope="module")
def encoder(encoder64):
    """Every comparison here runs in float64, so only a real difference of route can exceed the tolerances."""
    return encoder64


def _tower_tol(reference: torch.Tensor, n_patches: int) -> float:
    """Float64 rounding of a vision-tower result: reductions over up to all ``n_patches`` of an image (full attention
    blocks) and over a patch's 1,176 pixel values, on values of the reference's size."""
    return rounding_tol(EPS64, max(n_patches, 1176), float(reference.abs().max()))


#: Image sizes (width, height). All are multiples of 28 within the pixel budget, so ``load_image`` keeps them
#: as they are; 280x196 and 196x308 give vision windows of several different lengths (64, 48, 32, 24, 16
#: patches) beside equal-length ones, so both the grouped and the single-window attention paths are used.
AT_SIZE = [(224, 224), (280, 196), (196, 308), (56, 84)]
#: Not a multiple of 28: the processor has to resize it (to 252x168).
NEEDS_RESIZE = (250, 170)


def _write(folder, name: str, size: tuple[int, int], seed: int) -> str:
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = folder / name
    Image.fromarray(pixels, "RGB").save(path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    return [_write(folder, f"{i}.png", size, seed=i) for i, size in enumerate(AT_SIZE)]


@pytest.fixture(scope="module")
def raw_image(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("raw"), "raw.png", NEEDS_RESIZE, seed=99)


@pytest.fixture(scope="module")
def records(images):
    t, im = Part.of_text, Part.of_image
    long_text = "Many words about bridges, rivers and the history of the old harbour town. " * 12
    return [
        Record("text-short", [t("A red bridge crosses the river.")], extra={"choices": ["Thames", "Seine"]}),
        Record("text-long", [t("The museum opened in 1901 and holds paintings, maps and coins. " * 4)]),
        Record("one-image", [t("A photograph of the harbour:"), im(images[0]), t("taken at dawn.")]),
        Record("two-images", [im(images[1]), t("Left: the old town.\nRight: the station."), im(images[2])]),
        Record("image-only", [im(images[3])]),
        Record("long-mixed", [t(long_text), im(images[3]), t(long_text)]),
    ]


def _with(encoder: NyxEncoder, **overrides) -> NyxEncoder:
    """The same backbone and processor with other :class:`EncoderConfig` settings."""
    return NyxEncoder(encoder.backbone, encoder.processor, encoder.profile, encoder.config.replace(**overrides))


def _processor_reference(encoder: NyxEncoder, prepared: list[PreparedInput]) -> dict[str, torch.Tensor]:
    """What the stock processor makes of the prepared texts and images (its defaults: tokenise, resize)."""
    images = [img for p in prepared for img in p.images]
    out = encoder.processor(
        text=[p.text for p in prepared],
        images=images or None,
        return_tensors="pt",
        padding=True,
        padding_side=encoder.config.padding_side,
        truncation=False,
    )
    return {k: v for k, v in out.items() if k != "token_type_ids"}


def _assert_same_tensors(fast: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], where: str) -> None:
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        if key not in ref:
            assert key not in fast, f"{where}: {key} only in the fast path"
            continue
        a, b = fast[key], ref[key]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (where, key, a.dtype, a.shape, b.dtype, b.shape)
        assert torch.equal(a, b), f"{where}: {key} differs"


@pytest.fixture
def processor_call_forbidden(monkeypatch):
    """Makes any call of the processor itself (its tokenizer path) fail: proves the fast path is taken."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the fast collate path called the processor")

    monkeypatch.setattr(NyxQwenProcessor, "__call__", forbidden)
    return monkeypatch


# -- (3) fast collation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("is_query", [False, True], ids=["documents", "queries"])
def test_fast_collate_gives_the_processors_exact_tensors(
    encoder, records, padding_side, is_query, processor_call_forbidden
):
    enc = _with(encoder, padding_side=padding_side)
    prepared = [enc.prepare(r, is_query) for r in records]
    assert all(p.input_ids is not None for p in prepared) and enc._reuse_ids
    fast = enc.collate_prepared(prepared)
    processor_call_forbidden.undo()
    ref = _processor_reference(enc, prepared)
    _assert_same_tensors(fast, ref, f"{padding_side}/{'query' if is_query else 'document'}")
    assert fast["attention_mask"].sum(1).tolist() == [p.length for p in prepared]
    assert (fast["attention_mask"][:, 0 if padding_side == "left" else -1] == 0).any()  # really padded


def test_fast_collate_matches_the_processor_for_a_truncated_record(encoder, records, processor_call_forbidden):
    enc = _with(encoder, max_length=120)
    prepared = [enc.prepare(r, is_query=True) for r in records]
    truncated = [p for p in prepared if p.truncated]
    assert truncated and any(p.n_images for p in truncated)  # text cut next to an image
    assert max(p.length for p in prepared) <= 120
    fast = enc.collate_prepared(prepared)
    processor_call_forbidden.undo()
    _assert_same_tensors(fast, _processor_reference(enc, prepared), "truncated")


def test_single_text_only_record_collates_like_the_processor(encoder, records):
    prepared = [encoder.prepare(records[0], is_query=True)]
    fast = encoder.collate_prepared(prepared)
    assert "pixel_values" not in fast
    _assert_same_tensors(fast, _processor_reference(encoder, prepared), "text-only")


# -- (1) vision tower --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def towers(encoder, tiny_dir):
    """(swapped tower of the encoder, stock tower of a freshly loaded backbone with the same weights)."""
    fast = encoder.module.vl_model().visual
    stock = load_backbone(tiny_dir, device="cpu", dtype=torch.float64).model.visual
    stock.load_state_dict(fast.state_dict())
    assert type(fast.patch_embed) is _MatmulPatchEmbed
    assert all(type(b.attn) is _GroupedVisionAttention for b in fast.blocks)
    assert not isinstance(stock.patch_embed, _MatmulPatchEmbed)
    assert not any(isinstance(b.attn, _GroupedVisionAttention) for b in stock.blocks)
    return fast, stock


@pytest.fixture(scope="module")
def vision_inputs(encoder, records):
    batch = encoder.collate_prepared([encoder.prepare(r, is_query=False) for r in records])
    return batch["pixel_values"], batch["image_grid_thw"]


def test_vision_windows_include_equal_and_unequal_lengths(towers, vision_inputs):
    """Guards the two tests below: the grouped attention must see several chunks per length and several lengths."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import get_vision_window_index

    visual, _ = towers
    _, cu = get_vision_window_index(
        vision_inputs[1],
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    lengths = torch.as_tensor(cu).diff()
    lengths = lengths[lengths > 0]
    _, counts = lengths.unique(return_counts=True)
    assert len(counts) >= 3 and counts.max() >= 2


def test_swapped_vision_tower_outputs_match_the_stock_tower(towers, vision_inputs):
    fast, stock = towers
    pixels, grid = vision_inputs
    with torch.no_grad():
        a, b = fast(pixels, grid_thw=grid), stock(pixels, grid_thw=grid)
    assert a.pooler_output.shape == b.pooler_output.shape
    n = pixels.shape[0]
    assert_within(
        "vision tower: last_hidden_state", a.last_hidden_state, b.last_hidden_state, _tower_tol(b.last_hidden_state, n)
    )
    assert_within("vision tower: pooler_output", a.pooler_output, b.pooler_output, _tower_tol(b.pooler_output, n))


def test_swapped_vision_tower_gradients_match_the_stock_tower(towers, vision_inputs):
    pixels, grid = vision_inputs
    grads = []
    for tower in towers:
        was_training = tower.training
        tower.train()
        tower.zero_grad(set_to_none=True)
        x = pixels.clone().requires_grad_(True)
        out = tower(x, grid_thw=grid).pooler_output
        weights = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)  # every output row and column counts
        (out * weights).sum().backward()
        grads.append({"pixel_values": x.grad, **{n: p.grad.clone() for n, p in tower.named_parameters()}})
        tower.zero_grad(set_to_none=True)
        tower.train(was_training)
    fast, stock = grads
    assert fast.keys() == stock.keys() and "patch_embed.proj.weight" in fast
    for name in stock:
        assert stock[name].abs().max() > 0, f"{name}: zero gradient, the comparison would be vacuous"
        assert_within("vision tower: gradients", fast[name], stock[name], _tower_tol(stock[name], pixels.shape[0]))


# -- (2) no padding mask with right padding ----------------------------------------------------------------


def _masks_seen_by_language_model(encoder: NyxEncoder, records: list[Record]):
    """Embeddings of ``records`` in one batch, and the attention_mask the language model received."""
    seen = []
    lm = encoder.module.vl_model().language_model
    hook = lm.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    try:
        emb = encoder.encode(records, batch_size=len(records))
    finally:
        hook.remove()
    return emb, seen


def test_right_padding_without_mask_equals_left_padding_and_single_records(encoder, records):
    right, left = _with(encoder, padding_side="right"), _with(encoder, padding_side="left")
    emb_right, masks_right = _masks_seen_by_language_model(right, records)
    emb_left, masks_left = _masks_seen_by_language_model(left, records)
    assert masks_right == [None]  # the padding mask really is dropped
    assert len(masks_left) == 1 and masks_left[0] is not None
    single = np.stack([right.encode([r])[0] for r in records])
    assert_within("no padding mask: right vs left padding", emb_right, emb_left, F32_OUTPUT_TOL)
    assert_within("no padding mask: right padding vs single", emb_right, single, F32_OUTPUT_TOL)
    assert_within("no padding mask: left padding vs single", emb_left, single, F32_OUTPUT_TOL)


# -- (4) identity resize skipped when the image is already at its target size ------------------------------


def test_is_resized_tells_target_sized_images_from_others(encoder):
    proc = encoder.processor
    assert all(proc.is_resized(h, w) for w, h in AT_SIZE)
    w, h = NEEDS_RESIZE
    assert not proc.is_resized(h, w)


@pytest.mark.parametrize("which", ["at-target-size", "needs-resize"])
def test_image_preprocessing_matches_the_processor_with_and_without_resize(encoder, images, raw_image, which):
    record = Record(
        "img", [Part.of_text("A picture:"), Part.of_image(images[1] if which == "at-target-size" else raw_image)]
    )
    prepared = encoder.prepare(record, is_query=False)
    if which == "needs-resize":  # hand the collator the original picture, not load_image's resized copy
        original = Image.open(raw_image).convert("RGB")
        assert original.size == NEEDS_RESIZE
        prepared = replace(prepared, images=[original])
    img = prepared.images[0]
    assert encoder.processor.is_resized(img.height, img.width) == (which == "at-target-size")
    fast = encoder.collate_prepared([prepared])
    ref = _processor_reference(encoder, [prepared])
    _assert_same_tensors(fast, ref, which)
    with torch.inference_mode():
        # identical pixel values (checked above), so the float64 embeddings agree to rounding at most
        assert_within(
            "identity resize skipped: embeddings",
            encoder.embed(fast),
            encoder.embed(ref),
            rounding_tol(EPS64, fast["input_ids"].shape[1]),
        )


# -- (5) EncoderConfig.compile and EncoderConfig.autocast ----------------------------------------------------


def test_compiled_encoder_equals_eager_across_batch_shapes_without_recompiling(encoder, tiny_dir, records):
    """``compile=True`` (inductor, dynamic shapes) computes the eager model's embeddings: float64 on both sides,
    so they agree to the float32 output's last bit; batches of other lengths reuse the compiled graphs."""
    from torch._dynamo.utils import counters

    compiled = NyxEncoder.from_pretrained(
        tiny_dir, device="cpu", dtype=torch.float64, show_progress=False, compile=True
    )
    assert "language_model.layers.0" in compiled.compiled_modules and "visual.merger" in compiled.compiled_modules
    before = counters["stats"]["unique_graphs"]
    first = compiled.encode(records[1:4], batch_size=3)  # text and images: every compiled module runs
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > before  # really compiled
    emb = compiled.encode(records, batch_size=2)  # other lengths, batch sizes and image counts
    assert counters["stats"]["unique_graphs"] == graphs, "a new batch shape recompiled"
    eager = encoder.encode(records, batch_size=2)
    assert_within("compile: compiled vs eager embeddings", emb, eager, F32_OUTPUT_TOL)
    assert_within("compile: first batch vs eager", first, eager[1:4], F32_OUTPUT_TOL)
    assert "compile" not in compiled.info()  # same embeddings: an index need not tell them apart


#: bf16's unit roundoff is 2**-8 (eps 2**-7): matmul inputs are rounded once to it and accumulated in float32, so
#: each embedding entry moves by a few eps_bf16 at most, independent of the reduction length.
EPS_BF16 = float(torch.finfo(torch.bfloat16).eps)


@pytest.fixture(scope="module")
def encoder32(tiny_dir):
    return NyxEncoder.from_pretrained(tiny_dir, device="cpu", show_progress=False)


def test_bf16_autocast_runs_the_model_in_bf16_and_stays_close_to_float32(encoder32, records, monkeypatch):
    import nyx.model.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "cpu_supports_bf16", lambda: True)  # the maths holds on any CPU
    bf16 = _with(encoder32, autocast="bfloat16")
    seen = []
    layer = bf16.module.vl_model().language_model.layers[0].mlp.down_proj
    hook = layer.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    try:
        emb = bf16.encode(records, batch_size=3)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    ref = encoder32.encode(records, batch_size=3)
    assert emb.dtype == np.float32
    assert_within(
        "bf16 autocast: unit norm",
        np.linalg.norm(emb.astype(np.float64), axis=1),
        np.ones(len(records)),
        rounding_tol(EPS32, emb.shape[1]),
    )
    assert_within("bf16 autocast vs float32 embeddings", emb, ref, rounding_tol(EPS_BF16, 1))
    # ... and it is not float32 in disguise: the difference is far above float32 rounding
    assert np.abs(emb.astype(np.float64) - ref).max() > rounding_tol(EPS32, emb.shape[1])
    assert bf16.info()["autocast"] == "bfloat16" and "autocast" not in encoder32.info()


def test_bf16_autocast_is_refused_on_a_cpu_without_native_bf16(encoder32, monkeypatch):
    import nyx.model.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        _with(encoder32, autocast="bfloat16")
    with pytest.raises(ValueError, match="autocast"):
        encoder32.config.replace(autocast="float16")
