"""A model folder describes itself: ``NyxEncoder.save_pretrained`` -> ``from_pretrained`` gives the same encoder.

Also: a folder written before the config's ``"encoder"`` section existed loads as it did, and the tiny tokenizer's
frozen training text is still the bundled sample's text.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nyx.data.records import Part, Record
from nyx.model.backbone import PROFILE_FILENAME, resolve_profile
from nyx.model.config import SAVED_ENCODER_FIELDS, EncoderConfig, saved_encoder_settings
from nyx.model.encoder import NyxEncoder
from nyx.model.templates import QueryTemplate

#: Every field saved with a model, each away from its default.
CHANGED = dict(
    query_templates={
        "default": QueryTemplate(without_choices="Find the passage for: {question}"),
        "vqa": QueryTemplate(
            with_choices="Answer {question} from {choices}", without_choices="Q: {question}", choice_format="{text}"
        ),
    },
    input_style="chat",
    eos_token="<|im_end|>",
    padding_side="left",
    min_text_share=0.5,
    max_length=512,
    min_pixels=8 * 28 * 28,
    max_pixels=200 * 28 * 28,
)
RECORDS = [
    Record("q1", [Part.of_text("Which river runs through the old town?")]),
    Record("q2", [Part.of_text("What colour is the bridge?")], extra={"task": "vqa", "choices": ["red", "blue"]}),
]


def _saved_fields(config: EncoderConfig) -> dict:
    return {k: getattr(config, k) for k in (*SAVED_ENCODER_FIELDS, "max_length", "min_pixels", "max_pixels")}


@pytest.fixture(scope="module")
def base(tiny_dir):
    """An encoder of its own (building one sets its processor's pixel budget: the shared fixture's stays as it is)."""
    return NyxEncoder.from_pretrained(tiny_dir, device="cpu", show_progress=False)


@pytest.fixture(scope="module")
def changed(tiny_dir):
    return NyxEncoder.from_pretrained(tiny_dir, device="cpu", show_progress=False, **CHANGED)


def test_changed_fields_cover_every_saved_field():
    assert set(CHANGED) == {*SAVED_ENCODER_FIELDS, "max_length", "min_pixels", "max_pixels"}


def test_save_pretrained_round_trips_the_config_fields(changed, tmp_path):
    folder = changed.save_pretrained(tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json", PROFILE_FILENAME} <= {
        p.name for p in folder.iterdir()
    }
    loaded = NyxEncoder.from_pretrained(folder, device="cpu", show_progress=False)
    assert _saved_fields(loaded.config) == _saved_fields(changed.config) == CHANGED
    assert loaded.profile.mrl_dims == changed.profile.mrl_dims and loaded.profile.max_length == 512
    # what changes embeddings came back: the loaded encoder embeds exactly as the saved one did
    np.testing.assert_array_equal(
        loaded.encode_queries(RECORDS), changed.encode_queries(RECORDS, batch_size=len(RECORDS))
    )
    assert loaded.prepare(RECORDS[1], is_query=True).text == changed.prepare(RECORDS[1], is_query=True).text
    # explicit overrides still win over the saved config
    again = NyxEncoder.from_pretrained(folder, device="cpu", show_progress=False, padding_side="right")
    assert again.config.padding_side == "right" and again.config.input_style == "chat"


def test_the_query_templates_saved_are_the_ones_that_load(base, tmp_path):
    template = QueryTemplate(without_choices="Retrieve for {question}", with_choices="{question} | {choices}")
    edited = NyxEncoder(
        base.backbone, base.processor, base.profile, base.config.replace(query_templates={"default": template})
    )
    folder = edited.save_pretrained(tmp_path / "model")
    saved = json.loads((folder / PROFILE_FILENAME).read_text())["encoder"]["query_templates"]
    assert saved == {"default": template.model_dump()}
    assert saved_encoder_settings(folder)["query_templates"] == {"default": template}
    loaded = NyxEncoder.from_pretrained(folder, device="cpu", show_progress=False)
    assert loaded.config.query_templates == {"default": template} != base.config.query_templates
    assert loaded.prepare(RECORDS[0], is_query=True).text.startswith("Retrieve for Which river")


def test_a_folder_with_only_the_profile_loads_as_before(base, tiny_dir, tmp_path):
    """An old folder: ``nyx_profile.json`` without the ``"encoder"`` section gets every default."""
    folder = tmp_path / "old"
    shutil.copytree(tiny_dir, folder)
    data = json.loads((folder / PROFILE_FILENAME).read_text())
    data.pop("encoder", None)
    (folder / PROFILE_FILENAME).write_text(json.dumps(data, indent=2) + "\n")
    assert saved_encoder_settings(folder) == {}
    old = NyxEncoder.from_pretrained(folder, device="cpu", show_progress=False)
    assert old.config == base.config == EncoderConfig.from_profile(resolve_profile(folder), show_progress=False)
    np.testing.assert_array_equal(old.encode_queries(RECORDS), base.encode_queries(RECORDS))


def test_the_tiny_tokenizer_text_is_the_bundled_sample_text():
    """The model layer ships a frozen copy (nyx/model/tiny_corpus.jsonl.gz). If the sample generator changed on
    purpose, renew it: ``write_tiny_corpus(sample_texts(seed=0))`` (the tiny models change with it)."""
    from nyx.data.sample import sample_texts
    from nyx.model.tiny import tiny_training_texts

    assert list(tiny_training_texts()) == list(sample_texts(seed=0))
