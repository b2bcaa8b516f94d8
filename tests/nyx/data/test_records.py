"""nyx.data.records: image references of read records."""

from nyx.data.records import image_resolves


def test_image_resolves_accepts_data_urls_and_existing_files_only(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG")
    assert image_resolves("data:image/png;base64,iVBORw0KGgo=")
    assert image_resolves(str(png))
    assert not image_resolves(str(tmp_path / "missing.png"))
    assert not image_resolves(str(tmp_path))  # a folder is no image
    assert not image_resolves("https://example.com/a.png")  # not fetched yet
