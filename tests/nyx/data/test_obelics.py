"""OBELICS shards: paths, bytes, URLs and data URLs become records; bad rows are rejected, not fatal."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from nyx.data.obelics import iter_obelics, list_shards, read_obelics, url_to_filename, write_obelics_parquet
from nyx.data.records import is_data_url
from nyx.data.rejects import RecordError, RejectLog


def png_bytes(colour: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def shard_dir(tmp_path):
    d = tmp_path / "raw"
    (d / "images").mkdir(parents=True)
    (d / "images" / "red.png").write_bytes(png_bytes("red"))
    (d / "images" / "broken.png").write_bytes(png_bytes("blue")[:60])  # truncated
    return d


def test_parquet_with_paths_bytes_urls_and_data_urls(shard_dir, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    url_a = "https://example.org/pics/a.PNG?size=large"
    url_b = "https://example.org/img/12345"
    url_c = "https://example.org/mapped.jpg"
    (downloads / url_to_filename(url_a)).write_bytes(png_bytes("green"))
    (downloads / (url_to_filename(url_b) + ".png")).write_bytes(png_bytes("yellow"))  # ext added by downloader
    (downloads / "mapped").mkdir()
    (downloads / "mapped" / "c.png").write_bytes(png_bytes("purple"))
    url_map = tmp_path / "url_map.json"
    url_map.write_text(json.dumps({url_c: "mapped/c.png"}))
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes("white")).decode()
    rows = [
        {
            "id": "p1",
            "url": "https://site.example/1",
            "texts": ["Intro", None, "Outro"],
            "images": [None, "images/red.png", None],
            "metadata": {"lang": "en"},
        },
        {"texts": [None, "Caption"], "images": [png_bytes("black"), None]},  # raw bytes, no id
        {"id": "u1", "texts": [None, None, None, "end"], "images": [url_a, url_b, url_c, None]},
        {"id": "d1", "texts": [None, "x"], "images": [data_url, None]},
    ]
    shard = shard_dir / "shard-00000.parquet"
    assert write_obelics_parquet(rows, shard) == 4
    rejects = RejectLog()
    recs = read_obelics(shard, rejects, image_root=downloads, url_map=url_map, verify_images=True)
    assert len(rejects) == 0, rejects.items
    by_id = {r.id: r for r in recs}
    assert list(by_id) == ["p1", "shard-00000-1", "u1", "d1"]
    p1 = by_id["p1"]
    assert [p.type for p in p1.content] == ["text", "image", "text"]
    assert p1.images[0] == str((shard_dir / "images" / "red.png").absolute())
    assert p1.extra["url"] == "https://site.example/1" and p1.extra["metadata"] == {"lang": "en"}
    assert is_data_url(by_id["shard-00000-1"].images[0])
    assert [Image.open(p).getpixel((0, 0)) for p in by_id["u1"].images] == [(0, 128, 0), (255, 255, 0), (128, 0, 128)]
    assert by_id["d1"].images == [data_url]


def test_bytes_cache_writes_content_addressed_files(shard_dir, tmp_path):
    shard = shard_dir / "s.parquet"
    img = png_bytes("red")
    write_obelics_parquet(
        [
            {"id": "a", "texts": [None], "images": [img]},
            {"id": "b", "texts": [None], "images": [{"bytes": img, "path": "x.png"}]},
        ],
        shard,
    )
    recs = read_obelics(shard, RejectLog(), bytes_cache=tmp_path / "cache")
    assert recs[0].images == recs[1].images
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".png" and cached[0].read_bytes() == img


def test_ids_are_stable_across_reads(shard_dir):
    shard = shard_dir / "web.parquet"
    write_obelics_parquet([{"texts": [f"doc {i}"], "images": [None]} for i in range(5)], shard)
    first = [r.id for r in iter_obelics(shard, RejectLog())]
    assert first == [f"web-{i}" for i in range(5)]
    assert first == [r.id for r in iter_obelics(shard, RejectLog())]


def test_undecodable_image_drops_document_only_when_verifying(shard_dir):
    shard = shard_dir / "v.parquet"
    write_obelics_parquet(
        [
            {"id": "ok", "texts": ["a", None], "images": [None, "images/red.png"]},
            {"id": "bad", "texts": ["b", None], "images": [None, "images/broken.png"]},
            {"id": "gone", "texts": ["c", None], "images": [None, "images/nope.png"]},
        ],
        shard,
    )
    lenient = RejectLog()
    assert [r.id for r in iter_obelics(shard, lenient)] == ["ok", "bad"]  # missing files are always rejected
    assert lenient.reasons() == {"image not found": 1}
    strict = RejectLog()
    assert [r.id for r in iter_obelics(shard, strict, verify_images=True)] == ["ok"]
    assert strict.reasons() == {"image not found": 1, "truncated image": 1}
    assert {i["record_id"]: i["location"] for i in strict.items} == {"bad": "v.parquet:1", "gone": "v.parquet:2"}


def test_url_without_download_is_rejected_with_reason(shard_dir):
    shard = shard_dir / "u.parquet"
    write_obelics_parquet(
        [
            {"id": "u", "texts": [None], "images": ["https://example.org/missing.jpg"]},
            {"id": "t", "texts": ["text only"], "images": [None]},
        ],
        shard,
    )
    rejects = RejectLog()
    assert [r.id for r in iter_obelics(shard, rejects, image_root=shard_dir / "images")] == ["t"]
    assert rejects.items[0]["reason"].startswith("image not downloaded: https://example.org/missing.jpg")
    with pytest.raises(RecordError, match="no image_root"):
        list(iter_obelics(shard, None))


def test_jsonl_bad_lines_are_rejected_and_the_rest_come_through(shard_dir):
    good = {"id": "g1", "texts": ["hello", None], "images": [None, "images/red.png"]}
    b64 = base64.b64encode(png_bytes("red")).decode()
    lines = [
        json.dumps(good).encode(),
        b'{"id": "broken", "texts": [',  # malformed JSON
        b'{"id": "latin1", "texts": ["caf\xe9"], "images": [null]}',  # not UTF-8
        json.dumps({"id": "empty", "texts": ["  ", None], "images": [None, None]}).encode(),  # position 1 neither
        json.dumps({"id": "blank", "texts": ["   "], "images": [None]}).encode(),  # empty record
        json.dumps({"id": "both", "texts": ["x"], "images": ["images/red.png"]}).encode(),
        json.dumps({"id": "mismatch", "texts": ["x", "y"], "images": [None]}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"id": "g2", "texts": [None, "bytes as base64"], "images": [{"bytes": b64}, None]}).encode(),
        json.dumps(good | {"id": "g1"}).encode(),  # duplicate id
    ]
    shard = shard_dir / "docs.jsonl"
    shard.write_bytes(b"\n".join(lines) + b"\n\n")
    rejects = RejectLog()
    recs = list(iter_obelics(shard, rejects, verify_images=True))
    assert [r.id for r in recs] == ["g1", "g2"]
    assert rejects.count == 8
    reasons = rejects.reasons()
    assert reasons["malformed JSON"] == 1
    assert [k for k in reasons if k.startswith("line is not valid UTF-8")] != []
    assert reasons["empty record"] == 1 and reasons["duplicate id in shard"] == 1 and reasons["malformed row"] == 3
    assert reasons["expected an object, got list"] == 1
    locations = [i["location"] for i in rejects.items]
    assert locations[:2] == ["docs.jsonl:1", "docs.jsonl:2"]
    assert all(i["raw"] for i in rejects.items)


def test_list_shards_sorted_and_skips_hidden_and_other_files(tmp_path):
    for name in [
        "shard-00001.parquet",
        "shard-00000.parquet",
        "extra.jsonl",
        ".shard-00002.parquet.tmp",
        ".hidden.parquet",
        "notes.txt",
    ]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_shards(tmp_path)] == ["extra.jsonl", "shard-00000.parquet", "shard-00001.parquet"]


def test_folder_reads_every_shard_in_order(tmp_path):
    for s in range(2):
        write_obelics_parquet(
            [{"texts": [f"s{s} d{i}"], "images": [None]} for i in range(3)], tmp_path / f"shard-{s:05d}.parquet"
        )
    ids = [r.id for r in iter_obelics(tmp_path, RejectLog())]
    assert ids == [f"shard-{s:05d}-{i}" for s in range(2) for i in range(3)]


def test_write_obelics_parquet_refuses_mismatched_lists(tmp_path):
    with pytest.raises(ValueError, match="2 texts but 1 images"):
        write_obelics_parquet([{"texts": ["a", "b"], "images": [None]}], tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


# ----------------------------------------------------------------------------------------------------------
# A bad shard: an unreadable Parquet file is rejected as a whole, by name; a truncated JSONL loses one record
# ----------------------------------------------------------------------------------------------------------


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _write_text_shard(path, n=4):
    write_obelics_parquet(
        [{"id": f"{path.stem}-d{i}", "texts": [f"doc {i}"], "images": [None]} for i in range(n)], path
    )


def test_truncated_parquet_is_a_shard_error_naming_the_file_with_the_readers_message(tmp_path):
    from nyx.data.rejects import ShardError

    shard = tmp_path / "shard-00001.parquet"
    _write_text_shard(shard)
    _truncate(shard)
    with pytest.raises(ShardError) as info:
        list(iter_obelics(shard, RejectLog()))
    assert info.value.shard == "shard-00001.parquet"
    assert "shard-00001.parquet" in str(info.value)
    assert "Parquet magic bytes not found in footer" in info.value.reason  # the reader's own words


def test_corrupt_parquet_page_with_intact_footer_is_a_shard_error(tmp_path):
    """Damage inside the data (the footer still readable) fails while reading batches, not on open: same error."""
    from nyx.data.rejects import ShardError

    shard = tmp_path / "mid.parquet"
    _write_text_shard(shard, n=50)
    data = bytearray(shard.read_bytes())
    data[8 : len(data) // 2] = bytes(len(data) // 2 - 8)  # zero the column pages, keep magic + footer
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"^shard mid\.parquet: unreadable Parquet file"):
        list(iter_obelics(shard, RejectLog()))


def test_truncated_jsonl_keeps_valid_lines_and_rejects_the_cut_record(tmp_path):
    """A JSONL shard cut mid-record: every complete line is a document, the cut last line one rejected record
    whose reason says the file looks truncated (records-level rejects, as for any malformed line)."""
    shard = tmp_path / "web.jsonl"
    lines = [json.dumps({"id": f"d{i}", "texts": [f"document number {i}"], "images": [None]}) for i in range(3)]
    text = "\n".join(lines)
    shard.write_text(text[: len(text) - len(lines[-1]) // 2])  # the last line cut in half, no final newline
    rejects = RejectLog()
    assert [r.id for r in iter_obelics(shard, rejects)] == ["d0", "d1"]
    assert rejects.count == 1
    item = rejects.items[0]
    assert item["location"] == "web.jsonl:2" and item["reason"].startswith("malformed JSON")
    assert "truncated" in item["reason"] and item["raw"].startswith('{"id": "d2"')


def test_ingest_rejects_a_truncated_shard_by_name_and_leaves_no_output_for_it(tmp_path):
    """``ingest_raw``: the good shards are ingested; the bad one has no documents file (a stale one from an earlier
    good version is removed), a shard-level reject carrying the reader's error, and a marker downstream reads."""
    from nyx.data.ingest import ingest_raw, shard_rejection

    raw, docs, rej = tmp_path / "raw", tmp_path / "documents", tmp_path / "rejects"
    for s in range(3):
        _write_text_shard(raw / f"shard-{s:05d}.parquet")
    first = ingest_raw(raw, docs, rej)
    assert [s.error for s in first] == [None, None, None] and (docs / "shard-00001.jsonl").exists()
    assert shard_rejection(docs, "shard-00001") is None
    _truncate(raw / "shard-00001.parquet")
    stats = {s.shard: s for s in ingest_raw(raw, docs, rej)}
    assert list(stats) == ["shard-00000", "shard-00001", "shard-00002"]
    assert stats["shard-00000"].documents == stats["shard-00002"].documents == 4
    bad = stats["shard-00001"]
    assert bad.documents == 0 and "Parquet magic bytes not found" in bad.error
    assert not (docs / "shard-00001.jsonl").exists()  # no output downstream could take for an empty shard
    items = [json.loads(x) for x in (rej / "shard-00001.jsonl").read_text().splitlines()]
    assert len(items) == 1 and items[0]["location"] == "shard-00001.parquet"
    assert items[0]["stage"] == "raw_documents" and "Parquet magic bytes not found" in items[0]["reason"]
    message = shard_rejection(docs, "shard-00001")
    assert message.startswith("shard 'shard-00001' was rejected at ingestion: shard-00001.parquet: ")
    assert "Parquet magic bytes not found" in message
    # unchanged and still bad: rejected again (never skipped as "unchanged"); repaired: ingested, marker gone
    assert ingest_raw(raw, docs, rej)[1].error == bad.error
    _write_text_shard(raw / "shard-00001.parquet")
    assert ingest_raw(raw, docs, rej)[1].error is None
    assert shard_rejection(docs, "shard-00001") is None and (docs / "shard-00001.jsonl").exists()
    assert (rej / "shard-00001.jsonl").read_text() == ""
