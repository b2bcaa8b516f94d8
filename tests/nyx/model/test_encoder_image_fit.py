"""Images are shrunk to fit the token budget, never silently dropped; inference uses the model's context limit.

On the tiny model (``tests/conftest.py``):

* a page-size image (1024x1400) with a long text layer under a small ``max_length`` reaches the model as an
  image, scaled down (aspect ratio kept) so that the text keeps its share of the budget;
* only an image that does not fit even at the pixel floor is dropped, counted and logged with the record id;
* a record that fits is unchanged (same token ids, same images, the same embedding bit for bit);
* a model folder saved with a training ``max_length`` of 320 encodes with the model's context limit, while
  its training collation still cuts at 320; an explicit ``max_length`` wins.
"""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from nyx.data.records import Part, Record
from nyx.model.backbone import PROFILE_FILENAME, profile_from_folder
from nyx.model.encoder import NyxEncoder

LONG_TEXT = "The harbour master's ledger lists every ship, its cargo and the day it sailed from the old port. " * 40


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit-img")
    g = np.random.default_rng(0)
    out = {}
    for name, (w, h) in {"page": (1024, 1400), "photo": (300, 200), "small": (180, 120)}.items():
        p = folder / f"{name}.png"
        Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(p)
        out[name] = str(p)
    return out


def _with(encoder: NyxEncoder, **overrides) -> NyxEncoder:
    """The same backbone and processor with other config settings (``inference_max_length`` = ``max_length``)."""
    return NyxEncoder(encoder.backbone, encoder.processor, encoder.profile, encoder.config.replace(**overrides))


def _image_ids(encoder: NyxEncoder, inputs) -> int:
    return int((inputs["input_ids"] == encoder.processor.image_token_id).sum())


def test_page_image_with_a_long_text_reaches_the_model_shrunk(encoder, images):
    full = encoder.prepare(Record("p", [Part.of_image(images["page"])]), is_query=False).image_tokens[0]
    enc = _with(encoder, max_length=320)
    page = Record("page-1", [Part.of_image(images["page"]), Part.of_text(LONG_TEXT)])
    p = enc.prepare(page, is_query=False)
    assert full > 320 - 2  # the page alone does not fit: the old rule dropped it
    assert p.n_images == 1 and p.shrunk_images == 1 and p.dropped_images == 0
    assert p.truncated and p.length <= 320
    assert 0 < p.image_tokens[0] < full
    # the text keeps its share of the budget (320 less the EOS frame), the image the rest
    text_tokens = p.length - 1 - (p.image_tokens[0] + 2)
    assert text_tokens >= math.ceil(enc.config.min_text_share * (320 - 1))
    # aspect ratio kept: to within one 28-pixel tile per side
    img = p.images[0]
    assert abs(img.width / img.height - 1024 / 1400) < 28 / img.height + 28 / img.width
    inputs = enc.collate_prepared([p])
    assert _image_ids(enc, inputs) == p.image_tokens[0] == int(inputs["image_grid_thw"].prod(-1).sum()) // 4
    assert inputs["input_ids"].shape[1] == p.length
    assert enc.input_stats == {
        "records": 1,
        "text_truncated": 1,
        "images_shrunk": 1,
        "images_dropped": 0,
        "records_with_shrunk_images": 1,
        "records_with_dropped_images": 0,
    }
    emb = enc.encode([page])
    assert emb.shape == (1, enc.dim) and np.isfinite(emb).all()
    assert enc.input_stats["records"] == 2 and enc.input_stats["images_shrunk"] == 2
    enc.reset_input_stats()
    assert set(enc.input_stats.values()) == {0}


def test_text_is_cut_and_images_kept_when_they_leave_the_text_its_share(encoder, images):
    enc = _with(encoder, max_length=320)
    r = Record("caption", [Part.of_image(images["small"]), Part.of_text(LONG_TEXT)])
    full = encoder.prepare(Record("s", [Part.of_image(images["small"])]), is_query=False).image_tokens[0]
    p = enc.prepare(r, is_query=False)
    assert p.truncated and p.shrunk_images == 0 and p.dropped_images == 0 and p.image_tokens == [full]
    assert p.length <= 320


def test_image_that_does_not_fit_even_at_the_floor_is_dropped_counted_and_logged(encoder, images, caplog):
    proc = encoder.processor
    floor = proc.num_image_tokens(*proc.shrunk_size(1400, 1024, 1))  # the page at the pixel floor
    # room beside the EOS frame for one page at the floor, not two
    enc = _with(encoder, max_length=1 + 2 * (floor + 2) - 1)
    r = Record("two-pages", [Part.of_image(images["page"]), Part.of_image(images["page"])])
    with caplog.at_level(logging.WARNING, logger="nyx.model.collator"):
        p = enc.prepare(r, is_query=False)
    assert p.n_images == 1 and p.dropped_images == 1 and p.shrunk_images == 1 and p.truncated
    # the page kept takes the room the dropped one leaves
    assert floor < p.image_tokens[0] <= enc.inference_max_length - 1 - 2 and p.length <= enc.inference_max_length
    assert any("two-pages" in rec.getMessage() and "dropped" in rec.getMessage() for rec in caplog.records)
    stats = enc.input_stats
    assert stats["images_dropped"] == 1 and stats["records_with_dropped_images"] == 1
    assert stats["images_shrunk"] == 1 and stats["records"] == 1
    assert enc.encode([r]).shape == (1, enc.dim)


def test_record_that_fits_is_unchanged_even_at_a_tight_limit(encoder64, images):
    records = [
        Record(
            "caption",
            [Part.of_text("Two views of the port."), Part.of_image(images["photo"]), Part.of_image(images["small"])],
        ),
        Record("long", [Part.of_image(images["photo"]), Part.of_text(LONG_TEXT[:1500])]),
    ]
    for r in records:
        loose = encoder64.prepare(r, is_query=False)
        assert loose.shrunk_images == 0 and not loose.truncated
        tight = _with(encoder64, max_length=loose.length)  # fits exactly
        p = tight.prepare(r, is_query=False)
        assert p.input_ids == loose.input_ids and p.length == loose.length and not p.truncated
        assert p.shrunk_images == 0 and [i.size for i in p.images] == [i.size for i in loose.images]
        np.testing.assert_array_equal(tight.encode([r]), encoder64.encode([r]))
        # one token fewer: now it does not fit, and something is given up
        q = _with(encoder64, max_length=loose.length - 1).prepare(r, is_query=False)
        assert q.truncated or q.shrunk_images


@pytest.fixture(scope="module")
def trained_folder(tiny_dir, tmp_path_factory):
    """The tiny model saved as the trainer saves a model trained with ``max_length=320``."""
    folder = tmp_path_factory.mktemp("trained") / "final"
    shutil.copytree(tiny_dir, folder)
    data = profile_from_folder(tiny_dir).model_dump(exclude={"name_or_path", "build"})
    data["max_length"] = 320
    (folder / PROFILE_FILENAME).write_text(json.dumps(data, indent=2) + "\n")
    return folder


def test_trained_folder_encodes_with_the_models_context_limit_and_trains_at_its_own(trained_folder):
    enc = NyxEncoder.from_pretrained(trained_folder, device="cpu", show_progress=False)
    context = int(enc.module.vl_model().config.text_config.max_position_embeddings)
    assert enc.context_length == min(context, enc.tokenizer.model_max_length) == 8192
    assert enc.inference_max_length == enc.context_length and enc.info()["max_length"] == 8192
    assert enc.config.max_length == 320  # the training length stays with the model, for training
    long = Record("long", [Part.of_text(LONG_TEXT)])
    p = enc.prepare(long, is_query=False)
    assert p.length > 320 and not p.truncated
    assert int(enc.collate([long], is_query=False)["attention_mask"].sum()) <= 320  # the trainer's path


def test_explicit_max_length_wins_for_inference_and_training(trained_folder):
    enc = NyxEncoder.from_pretrained(trained_folder, device="cpu", show_progress=False, max_length=200)
    assert enc.inference_max_length == enc.config.max_length == 200 and enc.info()["max_length"] == 200
    long = Record("long", [Part.of_text(LONG_TEXT)])
    p = enc.prepare(long, is_query=False)
    assert p.truncated and p.length <= 200
    assert int(enc.collate([long], is_query=False)["attention_mask"].sum()) <= 200
