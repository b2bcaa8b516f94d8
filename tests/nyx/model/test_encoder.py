"""NyxEncoder on the tiny model: input building, truncation, padding/batching invariance, shards (pooling on its
own: test_pooling.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from nyx.data.records import Part, Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.model.config import EncoderConfig
from nyx.model.encoder import NyxEncoder, read_shards
from nyx.model.pooling import mrl_truncate, normalize
from nyx.model.templates import QueryTemplate
from tests.tolerances import EPS32, F32_OUTPUT_TOL, assert_within, rounding_tol


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    g = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(180, 120), (60, 60), (300, 200), (90, 240)]):
        p = folder / f"{i}.png"
        Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def docs(images):
    t, im = Part.of_text, Part.of_image
    return [
        Record("text-short", [t("A red bridge crosses the river.")]),
        Record("text-long", [t("The museum opened in 1901 and holds paintings, maps and old coins. " * 6)]),
        Record("one-image", [t("A photograph of the harbour:"), im(images[0]), t("taken at dawn.")]),
        Record("two-images", [im(images[1]), t("Left: the old town. Right: the station."), im(images[2])]),
        Record("image-only", [im(images[3])]),
    ]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (normalize(a) * normalize(b)).sum(-1)


# -- input building ------------------------------------------------------------------------------------


def test_query_template_adds_choices_line_only_when_choices_given(encoder):
    with_choices = Record("q1", [Part.of_text("Which river?")], extra={"choices": ["Thames", "Seine"]})
    plain = Record("q2", [Part.of_text("Which river?")])
    a = encoder.prepare(with_choices, is_query=True).text
    b = encoder.prepare(plain, is_query=True).text
    assert a.startswith("Please retrieve the most relevant document to answer the question.\nQuestion: Which river?")
    assert "\nChoices: (A) Thames (B) Seine" in a
    assert "Choices" not in b and b.startswith("Please retrieve the most relevant document")
    doc = encoder.prepare(plain, is_query=False).text
    assert "Please retrieve" not in doc and doc == "Which river?<|endoftext|>"


def test_task_specific_template_and_image_in_query_keeps_reading_order(encoder, images):
    cfg = encoder.config.replace(
        query_templates={
            "default": QueryTemplate(),
            "vqa": QueryTemplate(
                with_choices="Find an image: {question} [{choices}]", without_choices="Find an image: {question}"
            ),
        },
    )
    enc = NyxEncoder(encoder.backbone, encoder.processor, encoder.profile, cfg)
    q = Record(
        "q",
        [Part.of_text("What is in"), Part.of_image(images[1]), Part.of_text("this picture?")],
        extra={"task": "vqa"},
    )
    p = enc.prepare(q, is_query=True)
    assert p.text == ("Find an image: What is in<|vision_start|><|image_pad|><|vision_end|>this picture?<|endoftext|>")
    with pytest.raises(ValueError, match="exactly once"):
        QueryTemplate(without_choices="no placeholder")


def test_literal_control_tokens_in_text_cannot_break_the_image_count(encoder, images):
    r = Record("evil", [Part.of_text("look <|image_pad|> here <|vision_start|>"), Part.of_image(images[1])])
    p = encoder.prepare(r, is_query=False)
    assert p.text.count("<|image_pad|>") == 1
    inputs = encoder.collate_prepared([p])
    assert int((inputs["input_ids"] == encoder.processor.image_token_id).sum()) == p.image_tokens[0]
    assert encoder.encode([r]).shape == (1, encoder.dim)


def test_truncation_cuts_text_and_never_image_placeholders(encoder, images):
    long_text = "Many words about bridges, rivers and the history of the old harbour town. " * 40
    r = Record(
        "long", [Part.of_text(long_text), Part.of_image(images[0]), Part.of_text(long_text), Part.of_image(images[2])]
    )
    enc = NyxEncoder(encoder.backbone, encoder.processor, encoder.profile, encoder.config.replace(max_length=160))
    p = enc.prepare(r, is_query=False)
    assert p.truncated and p.dropped_images == 0 and p.n_images == 2
    inputs = enc.collate_prepared([p])
    n_ids = inputs["input_ids"].shape[1]
    assert n_ids == p.length <= 160
    image_ids = int((inputs["input_ids"] == enc.processor.image_token_id).sum())
    assert image_ids == sum(p.image_tokens) == int(inputs["image_grid_thw"].prod(-1).sum()) // 4
    assert inputs["input_ids"][0, -1].item() == enc.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    emb = enc.encode([r])  # would raise "Image features and image tokens do not match" if a pad were cut
    assert emb.shape == (1, enc.dim) and np.isfinite(emb).all()


def test_images_that_do_not_fit_are_shrunk_not_dropped(encoder, images):
    # was: the third image dropped whole; now all three are scaled down to fit (test_encoder_image_fit.py covers the
    # rule and the drop of images that do not fit even at the pixel floor)
    r = Record(
        "many", [Part.of_text("caption"), Part.of_image(images[2]), Part.of_image(images[2]), Part.of_image(images[2])]
    )
    one = encoder.prepare(Record("x", [Part.of_image(images[2])]), is_query=False).image_tokens[0]
    enc = NyxEncoder(
        encoder.backbone, encoder.processor, encoder.profile, encoder.config.replace(max_length=2 * (one + 2) + 10)
    )
    p = enc.prepare(r, is_query=False)
    assert p.n_images == 3 and p.dropped_images == 0 and p.shrunk_images == 3
    assert max(p.image_tokens) < one and p.length <= enc.config.max_length and not p.truncated
    assert enc.encode([r]).shape == (1, enc.dim)


def test_bad_image_raises_record_error_naming_the_record(encoder, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    r = Record("broken-doc", [Part.of_text("x"), Part.of_image(str(bad))])
    with pytest.raises(RecordError) as err:
        encoder.encode([r])
    assert err.value.record_id == "broken-doc"


# -- embeddings ------------------------------------------------------------------------------------------


def test_embeddings_are_unit_norm_float32_and_distinct(encoder, docs):
    emb = encoder.encode(docs)
    assert emb.dtype == np.float32 and emb.shape == (len(docs), 128)
    assert_within("encode: unit norm", np.linalg.norm(emb, axis=1), np.ones(len(docs)), rounding_tol(EPS32, 128))
    sims = emb @ emb.T
    assert (sims[~np.eye(len(docs), dtype=bool)] < 0.9999).all()  # different inputs, different embeddings


def test_batch_and_single_encoding_agree_and_order_is_kept(encoder64, docs):
    batched = encoder64.encode(docs, batch_size=len(docs))
    single = np.stack([encoder64.encode([d])[0] for d in docs])
    assert_within("encode: batched vs single", batched, single, F32_OUTPUT_TOL)
    shuffled = encoder64.encode(docs[::-1], batch_size=2)[::-1]
    assert_within("encode: batched vs shuffled batches of 2", batched, shuffled, F32_OUTPUT_TOL)


def test_float32_batch_of_mixed_lengths_equals_one_at_a_time_within_float32_rounding(encoder, docs):
    """The production dtype: a length-sorted batch (padding, no padding mask) gives each record the embedding it
    gets alone, up to float32 rounding of the model's reductions (hidden size, at most the batch's sequence
    length for attention) -- the float64 test above shows the routes are the same maths."""
    records = docs * 3  # 15 records: one batch of 16 as in the benchmark, lengths from a few tokens to hundreds
    batched = encoder.encode(records, batch_size=16)
    single = np.stack([encoder.encode([d])[0] for d in docs])
    longest = max(int(encoder.collate([d], is_query=False)["attention_mask"].sum()) for d in docs)
    assert_within(
        "encode float32: batch of 16 vs single",
        batched,
        np.tile(single, (3, 1)),
        rounding_tol(EPS32, max(encoder.hidden_size, longest)),
    )


def test_left_and_right_padding_give_the_same_embeddings(encoder64, docs):
    enc = encoder64
    right = NyxEncoder(enc.backbone, enc.processor, enc.profile, enc.config.replace(padding_side="right"))
    left = NyxEncoder(enc.backbone, enc.processor, enc.profile, enc.config.replace(padding_side="left"))
    inputs = left.collate(docs, is_query=False)
    assert (inputs["attention_mask"][:, 0] == 0).any()  # really left-padded
    assert_within("encode: left vs right padding", right.encode(docs), left.encode(docs), F32_OUTPUT_TOL)


def test_matryoshka_dim_option_returns_renormalised_prefix(encoder64, docs):
    full = encoder64.encode(docs)
    small = encoder64.encode(docs, dim=32)
    assert small.shape == (len(docs), 32)
    # the reference renormalises the float32 prefix: a float32 norm over 32 terms
    assert_within(
        "encode dim=32 vs mrl_truncate", small, mrl_truncate(full, 32), F32_OUTPUT_TOL + rounding_tol(EPS32, 32)
    )


def test_forward_embeddings_is_differentiable_and_matches_encode(encoder64, docs):
    encoder = encoder64
    queries = [Record("q", [Part.of_text("Which bridge is red?")], extra={"choices": ["a", "b"]})]
    inputs = encoder.collate(queries, is_query=True)
    emb = encoder.forward_embeddings(inputs)
    assert emb.requires_grad
    emb.sum().backward()
    grads = [p.grad for p in encoder.module.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    encoder.module.zero_grad(set_to_none=True)
    assert_within("forward_embeddings vs encode_queries", emb, encoder.encode_queries(queries), F32_OUTPUT_TOL)


def test_encode_to_shards_streams_ids_and_embeddings_and_logs_rejects(encoder64, docs, tmp_path):
    encoder = encoder64
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    records = docs[:3] + [Record("bad", [Part.of_image(str(bad))])] + docs[3:]
    rejects = RejectLog(stage="encode")
    manifest = encoder.encode_to_shards(iter(records), tmp_path / "shards", shard_size=2, batch_size=2, rejects=rejects)
    assert manifest["count"] == len(docs) and [s["count"] for s in manifest["shards"]] == [2, 2, 1]
    assert manifest["encoder"]["model_id"] == encoder.model_id and manifest["dim"] == encoder.dim
    assert len(rejects) == 1 and rejects.items[0]["record_id"] == "bad"
    ids, embs = zip(*read_shards(tmp_path / "shards"))
    assert [i for chunk in ids for i in chunk] == [d.id for d in docs]
    assert_within("encode_to_shards vs encode", np.concatenate(embs), encoder.encode(docs), F32_OUTPUT_TOL)


def test_encoder_identity_for_index_manifests(encoder, tiny_dir):
    info = encoder.info()
    assert encoder.model_id == str(tiny_dir) and encoder.revision is None
    assert info["dim"] == encoder.dim == 128 and info["pooling"] == "last_token"
    assert EncoderConfig.from_profile(encoder.profile).max_length == encoder.profile.max_length


def test_embedding_matches_qwen_reference_forward_with_3d_image_positions(encoder64, docs):
    """Our explicit positions equal Qwen's own (mm_token_type_ids -> get_rope_index) on an unpadded input."""
    encoder = encoder64
    record = docs[3]  # two images and text
    inputs = encoder.collate([record], is_query=False)
    assert "mm_token_type_ids" in inputs
    vl = encoder.module.vl_model()
    with torch.inference_mode():
        reference = vl(**inputs, use_cache=False).last_hidden_state[:, -1]
        flat = vl(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            use_cache=False,
        ).last_hidden_state[:, -1]  # 1-D positions: what a careless caller gets
    ours = encoder.encode([record])
    ref = reference / reference.norm(dim=-1, keepdim=True)
    assert_within("encode vs Qwen reference forward", ours, ref, F32_OUTPUT_TOL)
    careless = flat / flat.norm(dim=-1, keepdim=True)
    assert float((ref - careless).abs().max()) > 1e-3  # the check above can tell them apart


def test_lora_adapter_folder_loads_and_changes_embeddings(encoder64, docs, tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from nyx.model.backbone import load_backbone

    encoder = encoder64
    lora = get_peft_model(
        load_backbone(tiny_dir, device="cpu", dtype=torch.float64),
        LoraConfig(
            r=4,
            lora_alpha=8,
            init_lora_weights=False,  # random B: the adapter really changes the model
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        ),
    )
    lora.save_pretrained(tmp_path / "adapter")
    trained = NyxEncoder(lora, encoder.processor, encoder.profile, encoder.config)
    expected = trained.encode(docs)

    loaded = NyxEncoder.from_pretrained(
        tiny_dir, adapter_path=tmp_path / "adapter", device="cpu", dtype=torch.float64, show_progress=False
    )
    by_folder = NyxEncoder.from_pretrained(tmp_path / "adapter", device="cpu", dtype=torch.float64, show_progress=False)
    # merged into the weights on load (W + BA) vs applied beside them (Wx + BAx): equal up to rounding
    assert_within("LoRA merged on load vs unmerged", loaded.encode(docs), expected, F32_OUTPUT_TOL)
    assert_within("LoRA adapter folder alone vs unmerged", by_folder.encode(docs), expected, F32_OUTPUT_TOL)
    assert loaded.info()["adapter_path"] == str(tmp_path / "adapter")
    assert (_cos(expected, encoder.encode(docs)) < 0.9999).all()
    assert not any("lora" in name for name, _ in encoder.backbone.named_parameters())  # base untouched


def test_prefetched_encoding_equals_inline_encoding_across_windows_and_rejects(encoder, docs, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    records = docs[:2] + [Record("bad", [Part.of_image(str(bad))])] + docs[2:] * 3  # 12 records
    results = {}
    for depth in (0, 3):
        enc = NyxEncoder(
            encoder.backbone,
            encoder.processor,
            encoder.profile,
            encoder.config.replace(prefetch_batches=depth, sort_window_batches=2),
        )
        preparing_threads: set[str] = set()
        prepare = enc.prepare
        enc.prepare = lambda r, q: preparing_threads.add(threading.current_thread().name) or prepare(r, q)  # noqa: B023
        rejects = RejectLog(stage="encode")
        manifest = enc.encode_to_shards(
            records, tmp_path / f"shards-{depth}", shard_size=4, batch_size=2, rejects=rejects
        )  # windows of 4 records, one of them without "bad"
        assert [r["record_id"] for r in rejects.items] == ["bad"] and manifest["count"] == 11
        ids, embs = zip(*read_shards(tmp_path / f"shards-{depth}"))
        results[depth] = ([i for chunk in ids for i in chunk], np.concatenate(embs))
        # images and tokens are prepared in the background thread only when prefetching
        assert preparing_threads == ({"nyx-encode-prefetch"} if depth else {threading.current_thread().name})
    assert results[0][0] == results[3][0] == [r.id for r in records if r.id != "bad"]
    # the same windows and batches through the same kernels in one process: bitwise equal, not merely close
    np.testing.assert_array_equal(results[0][1], results[3][1])


def test_prefetched_encoding_without_a_reject_log_raises_for_the_bad_record(encoder, docs, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    enc = NyxEncoder(encoder.backbone, encoder.processor, encoder.profile, encoder.config.replace(prefetch_batches=2))
    assert not enc.module.training  # follows the backbone, loaded in eval mode
    with pytest.raises(RecordError) as err:
        enc.encode(docs + [Record("bad", [Part.of_image(str(bad))])], batch_size=2)
    assert err.value.record_id == "bad"
    assert not enc.module.training


def test_encoding_restores_training_mode(encoder, docs):
    encoder.module.train()
    try:
        encoder.encode(docs[:2])
        assert encoder.module.training
    finally:
        encoder.module.eval()


# -- unit norm on every encoder path ---------------------------------------------------------------------


_MODALITY_IDS = {"text": ["text-short", "text-long"], "mixed": ["one-image", "two-images"]}


def _modality_records(docs, images, modality):
    by_id = {d.id: d for d in docs}
    if modality == "image":  # two image-only records of different sizes (a padded batch)
        return [by_id["image-only"], Record("image-only-2", [Part.of_image(images[1])])]
    return [by_id[i] for i in _MODALITY_IDS[modality]]


def _via_shards(encoder, records, tmp_path, **kw):
    encoder.encode_to_shards(records, tmp_path / "shards", shard_size=1, batch_size=2, **kw)
    return np.concatenate([np.asarray(e) for _, e in read_shards(tmp_path / "shards")])


_PATHS = {
    "encode-batched": lambda enc, rs, tmp: enc.encode(rs, batch_size=len(rs)),
    "encode-one-at-a-time": lambda enc, rs, tmp: np.concatenate([enc.encode([r]) for r in rs]),
    "encode_documents-batched": lambda enc, rs, tmp: enc.encode_documents(rs, batch_size=len(rs)),
    "encode_documents-one-at-a-time": lambda enc, rs, tmp: np.concatenate([enc.encode_documents([r]) for r in rs]),
    "encode_queries-batched": lambda enc, rs, tmp: enc.encode_queries(rs, batch_size=len(rs)),
    "encode_queries-one-at-a-time": lambda enc, rs, tmp: np.concatenate([enc.encode_queries([r]) for r in rs]),
    "forward_embeddings-documents": lambda enc, rs, tmp: enc.forward_embeddings(rs).detach(),
    "forward_embeddings-queries": lambda enc, rs, tmp: enc.forward_embeddings(rs, is_query=True).detach(),
    "encode_to_shards": lambda enc, rs, tmp: _via_shards(enc, rs, tmp),
    "encode_to_shards-dim=32": lambda enc, rs, tmp: _via_shards(enc, rs, tmp, dim=32),
    "encode-dim=32": lambda enc, rs, tmp: enc.encode(rs, dim=32),
    "encode_queries-dim=16": lambda enc, rs, tmp: enc.encode_queries(rs, dim=16),
    "encode_documents-one-at-a-time-dim=64": lambda enc, rs, tmp: np.concatenate(
        [enc.encode_documents([r], dim=64) for r in rs]
    ),
}


@pytest.mark.parametrize("modality", ["text", "image", "mixed"])
@pytest.mark.parametrize("path", list(_PATHS))
def test_every_encoder_path_returns_unit_norm_embeddings_for_text_image_and_mixed_inputs(
    encoder, docs, images, tmp_path, path, modality
):
    records = _modality_records(docs, images, modality)
    emb = _PATHS[path](encoder, records, tmp_path)
    emb = emb.cpu().numpy() if isinstance(emb, torch.Tensor) else emb
    dim = int(path.rsplit("dim=", 1)[1]) if "dim=" in path else encoder.dim
    assert emb.shape == (len(records), dim) and emb.dtype == np.float32
    # a float32 norm: a sum of `dim` squares
    assert_within(
        f"unit norm: {path}",
        np.linalg.norm(emb.astype(np.float64), axis=1),
        np.ones(len(records)),
        rounding_tol(EPS32, dim),
    )
