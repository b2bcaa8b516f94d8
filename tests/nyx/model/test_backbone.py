"""Model profiles, the tiny offline Qwen2.5-VL build and the torchvision-free processor."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from PIL import Image

from nyx.model import backbone, tiny
from nyx.model.processor import NyxQwenProcessor, load_processor
from nyx.utils.build_cache import STAMP_FILENAME, is_current
from nyx.utils.io import file_sha256


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny.ensure_tiny_model(tmp_path_factory.mktemp("nyx-cache"))


@pytest.fixture(scope="module")
def picture():
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(90, 130, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr, "RGB")


def _weights_hash(folder) -> str:
    return file_sha256(folder / "model.safetensors")


def test_tiny_build_is_deterministic_same_weights_and_tokenizer(tiny_dir, tmp_path):
    again = tiny.ensure_tiny_model(tmp_path)
    assert again != tiny_dir
    assert _weights_hash(again) == _weights_hash(tiny_dir)
    assert file_sha256(again / "tokenizer.json") == file_sha256(tiny_dir / "tokenizer.json")


def test_tiny_model_layout_and_size(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        STAMP_FILENAME,
        backbone.PROFILE_FILENAME,
    } <= names
    size = sum(p.stat().st_size for p in tiny_dir.iterdir())
    assert size < 10 * 2**20  # "a few MB"
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.endswith(".tmp")]  # no temp folder left


def test_tiny_config_token_ids_match_tokenizer(tiny_dir):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    proc = load_processor(tiny_dir)
    tok = proc.tokenizer
    assert cfg["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg["video_token_id"] == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg["vision_start_token_id"] == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg["vision_end_token_id"] == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg["text_config"]["pad_token_id"] == tok.pad_token_id
    assert cfg["text_config"]["rope_parameters"]["mrope_section"] == [4, 6, 6]
    assert len(tok) <= cfg["text_config"]["vocab_size"]
    # a few thousand tokens learnt from the sample (not just the 256-byte alphabet)
    assert 1000 <= len(tok) <= tiny.TINY_VOCAB_SIZE
    for special in tiny.QWEN_SPECIAL_TOKENS:  # each special token is one id, never split
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


def test_ensure_tiny_model_reuses_cache_and_rebuilds_when_stamp_changes(tiny_dir, tmp_path):
    cache = tmp_path / "c"
    first = tiny.ensure_tiny_model(cache)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny.ensure_tiny_model(cache) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    (first / STAMP_FILENAME).write_text(json.dumps({"version": "stale"}))
    rebuilt = tiny.ensure_tiny_model(cache)
    assert json.loads((rebuilt / STAMP_FILENAME).read_text())["spec"] == tiny.tiny_spec_hash()
    assert _weights_hash(rebuilt) == _weights_hash(tiny_dir)


def test_concurrent_builders_agree_and_leave_one_complete_model(tmp_path):
    results, errors = [], []

    def build():
        try:
            results.append(tiny.ensure_tiny_model(tmp_path))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert is_current(results[0], tiny.build_stamp())
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [backbone.TINY_DIRNAME]


def test_save_load_round_trip_gives_identical_token_ids_and_outputs(tiny_dir, tmp_path, picture):
    model = backbone.load_backbone(tiny_dir, device="cpu")
    proc = backbone.load_profile_processor(tiny_dir)
    model.save_pretrained(tmp_path / "copy")
    proc.save_pretrained(tmp_path / "copy")
    model2 = backbone.load_backbone(tmp_path / "copy", device="cpu")
    proc2 = load_processor(tmp_path / "copy")
    assert isinstance(proc2, NyxQwenProcessor)

    text = ["A picture <|vision_start|><|image_pad|><|vision_end|> of a bridge.<|endoftext|>"]
    a = proc(text=text, images=[picture], return_tensors="pt")
    b = proc2(text=text, images=[picture], return_tensors="pt")
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    n_pad = int((a["input_ids"] == model.config.image_token_id).sum())
    assert n_pad == int(a["image_grid_thw"].prod()) // 4 > 1  # the processor expanded the placeholder
    with torch.inference_mode():
        out1 = model(**a).logits
        out2 = model2(**b).logits
    assert torch.equal(out1, out2)


def test_processor_has_no_video_processor_and_rejects_one(tiny_dir):
    assert NyxQwenProcessor.get_attributes() == ["image_processor", "tokenizer"]
    proc = load_processor(tiny_dir)
    assert not hasattr(proc, "video_processor")
    with pytest.raises(ValueError, match="video_processor=None"):
        NyxQwenProcessor(proc.image_processor, proc.tokenizer, video_processor=object())


def test_processor_loads_from_hub_layout_with_pil_image_processor(tiny_dir, tmp_path, picture):
    """A folder laid out like Qwen/Qwen2.5-VL-3B-Instruct: preprocessor_config.json + tokenizer + chat_template.json."""
    hub = tmp_path / "hub"
    hub.mkdir()
    load_processor(tiny_dir).tokenizer.save_pretrained(hub)
    (hub / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    (hub / "chat_template.json").write_text(json.dumps({"chat_template": tiny.QWEN_CHAT_TEMPLATE}))
    proc = load_processor(hub, min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    assert type(proc.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert proc.chat_template == tiny.QWEN_CHAT_TEMPLATE
    out = proc(
        text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[picture.resize((600, 600))], return_tensors="pt"
    )
    assert int(out["image_grid_thw"].prod()) // 4 <= 16  # the pixel budget given to load_processor holds
    assert proc.num_image_tokens(600, 600) == int(out["image_grid_thw"].prod()) // 4


def test_resolve_profile_named_folder_and_errors(tiny_dir):
    tiny = backbone.resolve_profile("tiny")
    assert tiny.hidden_size == 128 and tiny.mrl_dims == (128, 64, 32, 16) and tiny.build == "tiny"
    paper = backbone.resolve_profile("paper")
    assert paper.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert paper.mrl_dims == (2048, 1024, 512, 256) and paper.mrl_weights == (1.0, 1.0, 0.2, 0.2)
    assert backbone.resolve_profile("Qwen/Qwen2.5-VL-3B-Instruct") == paper
    local = backbone.resolve_profile(tiny_dir)
    assert local.name == "tiny" and local.name_or_path == str(tiny_dir) and local.build is None
    assert local.mrl_dims == tiny.mrl_dims and local.max_length == tiny.max_length
    assert backbone.resolve_profile("paper", max_length=512).max_length == 512
    with pytest.raises(ValueError, match="unknown model"):
        backbone.resolve_profile("./no/such/folder")
    with pytest.raises(ValueError, match="cannot read the config"):
        backbone.resolve_profile("nobody/no-such-model-offline")


def test_folder_without_profile_file_derives_mrl_dims_from_hidden_size(tiny_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    (folder / backbone.PROFILE_FILENAME).unlink()
    prof = backbone.resolve_profile(folder)
    assert prof.hidden_size == 128 and prof.mrl_dims == (128, 64, 32, 16)


@pytest.mark.parametrize("dims, weights", [((256, 64), (1.0, 1.0)), ((64, 128), (1.0, 1.0)), ((128,), (1.0, 0.2))])
def test_profile_rejects_invalid_matryoshka_settings(dims, weights):
    with pytest.raises(ValueError):
        backbone.ModelProfile(name="x", name_or_path="x", hidden_size=128, mrl_dims=dims, mrl_weights=weights)


def test_auto_dtype_is_float32_on_cpu_and_backbone_loads_in_it(tiny_dir):
    assert backbone.resolve_dtype("auto", "cpu") == torch.float32
    assert backbone.resolve_dtype("bf16") == torch.bfloat16
    model = backbone.load_backbone(backbone.resolve_profile(tiny_dir), device="cpu")
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
