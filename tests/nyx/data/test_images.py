"""Image loading: every failure mode becomes a RecordError, conversions give 8-bit RGB, budgets hold."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from nyx.data.images import (
    ImageConfig,
    bytes_to_data_url,
    image_to_data_url,
    load_image,
    target_size,
    verify_image,
)
from nyx.data.rejects import RecordError, RejectLog

NO_RESIZE = ImageConfig(resize=False)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring a huge size, with a tiny IDAT: nothing big is allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noisy_rgb(w: int = 96, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.fixture()
def files(tmp_path):
    """One file per failure mode plus good images, written under tmp_path."""
    jpeg = encode(noisy_rgb(), "JPEG", quality=90)
    out = {
        "good_png": encode(noisy_rgb(seed=1), "PNG"),
        "good_jpeg": jpeg,
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": encode(noisy_rgb(seed=2), "PNG")[:300],
        "zero_byte": b"",
        "corrupt": b"this is not an image at all" * 20,
        "corrupt_jpeg_body": jpeg[:200] + bytes(random.Random(0).randrange(256) for _ in range(800)),
        "bomb_png": png_header_only(50_000, 50_000),
    }
    paths = {}
    for name, data in out.items():
        p = tmp_path / f"{name}.{'jpg' if 'jpeg' in name else 'png' if 'png' in name else 'bin'}"
        p.write_bytes(data)
        paths[name] = p
    paths["missing"] = tmp_path / "does_not_exist.jpg"
    return paths


# ---------------------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing", "image not found"),
        ("zero_byte", "empty image file"),
        ("corrupt", "undecodable image"),
        ("truncated_jpeg", "truncated image"),
        ("truncated_png", "truncated image"),
        ("bomb_png", "decompression bomb"),
    ],
)
def test_each_bad_file_raises_record_error_with_record_id_and_reason(files, name, reason):
    with pytest.raises(RecordError) as ei:
        load_image(str(files[name]), record_id="doc-7")
    assert ei.value.record_id == "doc-7"
    assert ei.value.reason.startswith(reason), ei.value.reason
    assert "doc-7" in str(ei.value)


def test_corrupt_jpeg_body_is_rejected_not_silently_padded(files):
    with pytest.raises(RecordError) as ei:
        load_image(files["corrupt_jpeg_body"], record_id="d")
    assert ei.value.reason.split(":")[0] in ("truncated image", "undecodable image")


def test_bomb_header_checked_before_decoding_with_own_limit():
    data = encode(noisy_rgb(200, 200), "PNG")  # 40,000 pixels: fine for PIL, too many for this config
    with pytest.raises(RecordError, match="decompression bomb.*200x200"):
        load_image(data, ImageConfig(max_decode_pixels=10_000), record_id="d")
    assert load_image(data).mode == "RGB"  # the default limit accepts it


def test_truncated_images_fail_even_if_someone_enabled_load_truncated(files, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RecordError, match="truncated image"):
        load_image(files["truncated_jpeg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_data_url_and_directory_are_record_errors(tmp_path):
    with pytest.raises(RecordError, match="invalid data URL"):
        load_image("data:image/png;base64", record_id="q1")
    with pytest.raises(RecordError, match="undecodable image"):
        load_image("data:image/png;base64,aGVsbG8=", record_id="q1")
    with pytest.raises(RecordError, match="not a file"):
        load_image(str(tmp_path), record_id="q1")


def test_extreme_aspect_ratio_is_a_record_error_not_a_crash():
    data = encode(Image.new("RGB", (1, 300), "red"), "PNG")
    with pytest.raises(RecordError, match="extreme aspect ratio"):
        load_image(data, record_id="thin")
    with pytest.raises(RecordError, match="extreme aspect ratio"):
        verify_image(data, record_id="thin")


def test_batch_completes_with_rejects_counted_and_written(files, tmp_path):
    refs = [
        ("a", files["good_png"]),
        ("b", files["missing"]),
        ("c", files["good_jpeg"]),
        ("d", files["zero_byte"]),
        ("e", files["truncated_jpeg"]),
        ("f", files["corrupt"]),
        ("g", files["bomb_png"]),
        ("h", files["truncated_png"]),
    ]
    rejects = RejectLog(stage="images")
    loaded = {}
    for rid, path in refs:
        try:
            loaded[rid] = load_image(str(path), record_id=rid)
        except RecordError as e:
            rejects.add(e)
    assert sorted(loaded) == ["a", "c"]
    assert rejects.count == 6
    assert rejects.reasons() == {
        "image not found": 1,
        "empty image file": 1,
        "truncated image": 2,
        "undecodable image": 1,
        "decompression bomb": 1,
    }
    out = rejects.write(tmp_path / "rejects.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["record_id"] for x in lines] == ["b", "d", "e", "f", "g", "h"]
    assert all(x["reason"] and x["stage"] == "images" for x in lines)


# ---------------------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", quality=95)
    img = load_image(data, NO_RESIZE)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((32, 32))
    assert r > 240 and g < 15 and b < 15


def test_palette_with_transparency_is_composited_over_white():
    p = Image.new("P", (32, 32), 0)
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.paste(1, (0, 0, 16, 32))  # left half uses index 1, which is transparent
    img = load_image(encode(p, "PNG", transparency=1), NO_RESIZE)
    assert img.mode == "RGB"
    assert img.getpixel((4, 4)) == (255, 255, 255)
    assert img.getpixel((28, 4)) == (255, 0, 0)


def test_palette_without_transparency_keeps_colours():
    p = Image.new("P", (16, 16), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert load_image(encode(p, "PNG"), NO_RESIZE).getpixel((3, 3)) == (10, 200, 30)


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("RGBA", (0, 0, 255, 0), (255, 255, 255)),
        ("RGBA", (0, 0, 255, 255), (0, 0, 255)),
        ("LA", (0, 128), (127, 127, 127)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
    ],
)
def test_modes_convert_to_rgb(mode, colour, expected):
    img = load_image(encode(Image.new(mode, (16, 16), colour), "PNG"), NO_RESIZE)
    assert img.mode == "RGB"
    assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((8, 8)), expected)), img.getpixel((8, 8))


def test_16bit_greyscale_is_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16).repeat(4, axis=0)
    src = Image.fromarray(arr)
    data = encode(src, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = load_image(data, NO_RESIZE)
    row = [img.getpixel((x, 0))[0] for x in range(4)]
    assert row == [0, 128, 255, 4]  # 1000/65535*255 = 3.9


def test_32bit_int_greyscale_is_scaled():
    src = Image.fromarray(np.array([[0, 65535]], dtype=np.int32).repeat(2, axis=0), mode="I")
    img = load_image(encode(src, "TIFF"), NO_RESIZE)
    assert [img.getpixel((x, 0))[0] for x in range(2)] == [0, 255]


def test_exif_orientation_is_applied():
    src = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = load_image(encode(src, "JPEG", exif=exif.tobytes()), NO_RESIZE)
    assert img.size == (20, 40)
    assert verify_image(encode(src, "JPEG", exif=exif.tobytes())) == (20, 40)


def test_data_url_bytes_and_path_load_the_same_pixels(tmp_path):
    src = noisy_rgb(56, 84)
    url = image_to_data_url(src)
    assert url.startswith("data:image/png;base64,")
    path = tmp_path / "x.png"
    path.write_bytes(encode(src, "PNG"))
    a = np.asarray(load_image(url))
    b = np.asarray(load_image(path.read_bytes()))
    c = np.asarray(load_image(str(path)))
    assert a.shape == (84, 56, 3)
    assert np.array_equal(a, np.asarray(src)) and np.array_equal(a, b) and np.array_equal(a, c)
    assert bytes_to_data_url(path.read_bytes()).startswith("data:image/png;base64,")


# ---------------------------------------------------------------------------------------------------------
# Smart resize
# ---------------------------------------------------------------------------------------------------------


def test_large_image_is_resized_to_the_budget_with_sides_multiple_of_28():
    img = load_image(encode(noisy_rgb(1000, 700), "PNG"))
    w, h = img.size
    cfg = ImageConfig()
    assert w % 28 == 0 and h % 28 == 0
    assert w * h <= cfg.max_pixels
    assert abs((w / h) - (1000 / 700)) < 0.1


def test_small_image_is_enlarged_to_min_pixels():
    w, h = load_image(encode(noisy_rgb(20, 20), "PNG")).size
    assert w * h >= ImageConfig().min_pixels and w % 28 == 0 and h % 28 == 0


@pytest.mark.parametrize(
    "cfg",
    [ImageConfig(), ImageConfig(max_pixels=640 * 28 * 28), ImageConfig(max_pixels=4 * 28 * 28, min_pixels=28 * 28)],
)
def test_smart_resize_never_exceeds_the_budget(cfg):
    rng = random.Random(0)
    sizes = [(w, h) for w in (1, 2, 27, 28, 29, 100, 999, 4000, 20000) for h in (1, 3, 28, 57, 500, 8000)]
    sizes += [(rng.randint(1, 30000), rng.randint(1, 30000)) for _ in range(400)]
    sizes += [(s, s * 200) for s in (1, 5, 28, 100)] + [(s * 199, s) for s in (1, 7, 50)]
    checked = rejected = 0
    for w, h in sizes:
        if max(w, h) / min(w, h) > 200:
            with pytest.raises(RecordError, match="extreme aspect ratio"):
                target_size(w, h, cfg, record_id="r")
            rejected += 1
            continue
        tw, th = target_size(w, h, cfg, record_id="r")
        assert tw * th <= cfg.max_pixels, (w, h, tw, th)
        assert tw % cfg.factor == 0 and th % cfg.factor == 0 and tw >= cfg.factor and th >= cfg.factor
        checked += 1
    assert checked > 300 and rejected > 10


def test_image_config_rejects_inconsistent_budgets():
    with pytest.raises(ValueError):
        ImageConfig(max_pixels=100)
    with pytest.raises(ValueError):
        ImageConfig(min_pixels=10**7)
