"""`nyx ingest` on a folder of real PDFs made here, offline (text PDFs written by matplotlib's PDF backend, a scanned
page, a PDF shipped inside matplotlib, an RC4-encrypted PDF built by the spec's algorithms, a corrupt, a truncated
and an empty one), images with sidecar captions, JSONL records, a BEIR folder and an OBELICS shard; then
`nyx index` with bm25, minilm and nyx over the result, and `nyx search` finding a page by a phrase only it holds."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import matplotlib
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from nyx.cli import app

matplotlib.use("Agg")

runner = CliRunner()

# A phrase only page 2 of the report holds (and that no other record contains a word of).
UNIQUE = "zephyr turbine gearbox lubrication"


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------- PDFs made here


def _report_pdf(path: Path) -> None:
    """Three pages with a text layer; stream order differs from reading order on pages 1 and 3."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        fig = plt.figure(figsize=(8.5, 11))  # page 1: the footer is written first, the title last
        fig.text(0.1, 0.05, "Footer: annual report page one")
        fig.text(0.1, 0.8, "Revenue grew in every region during the year")
        fig.text(0.1, 0.9, "Annual Report Overview")
        pdf.savefig(fig)
        plt.close(fig)
        fig = plt.figure(figsize=(8.5, 11))  # page 2: the phrase
        fig.text(0.1, 0.9, "Maintenance")
        fig.text(0.1, 0.8, f"The {UNIQUE} happens every spring")
        pdf.savefig(fig)
        plt.close(fig)
        fig = plt.figure(figsize=(8.5, 11))  # page 3: two columns, written row by row
        fig.text(0.1, 0.9, "Left column first line")
        fig.text(0.6, 0.9, "Right column first line")
        fig.text(0.1, 0.87, "Left column second line")
        fig.text(0.6, 0.87, "Right column second line")
        pdf.savefig(fig)
        plt.close(fig)


def _scanned_pdf(path: Path) -> None:
    """A page that is only a picture of text (what a scanner writes): no text layer."""
    img = Image.new("RGB", (850, 1100), "white")
    ImageDraw.Draw(img).text((80, 100), "SCANNED INVOICE 4711", fill="black")
    img.save(path)


_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes = b"secret", text: str = "Confidential salary table") -> bytes:
    """A one-page PDF encrypted with the standard security handler, revision 2 (40-bit RC4): the encryption key, O
    and U entries by algorithms 2, 3 and 4 of the PDF 1.7 spec (7.6.3), the page's content stream RC4-encrypted with
    its object key (7.6.2). PDFium opens it with the password only (checked in the test)."""
    file_id = hashlib.md5(b"nyx-test").digest()
    o = _rc4(hashlib.md5((b"owner" + _PAD)[:32]).digest()[:5], (user_password + _PAD)[:32])
    key = hashlib.md5((user_password + _PAD)[:32] + o + (-4).to_bytes(4, "little", signed=True) + file_id).digest()[:5]
    u = _rc4(key, _PAD)
    stream = _rc4(
        hashlib.md5(key + (4).to_bytes(3, "little") + b"\0\0").digest()[:10],
        f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode(),
    )
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (o.hex().encode(), u.hex().encode()),
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    fid = file_id.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 6 0 R /ID [<%s> <%s>] >>\n" % (len(objs) + 1, fid, fid)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _shipped_pdf() -> Path | None:
    """A real-world PDF from an installed package: matplotlib's logo (vector drawing, no text layer)."""
    p = Path(matplotlib.get_data_path()) / "images" / "matplotlib.pdf"
    return p if p.is_file() else None


def _make_inputs(root: Path) -> dict[str, Path]:
    import pypdfium2 as pdfium

    pdfs = root / "pdfs"
    (pdfs / "slides").mkdir(parents=True)
    _report_pdf(pdfs / "annual-report.pdf")
    _scanned_pdf(pdfs / "scanned invoice.pdf")  # white space in a name: the id gets "_"
    (pdfs / "locked.pdf").write_bytes(encrypted_pdf())
    (pdfs / "broken.pdf").write_bytes(os.urandom(4096))
    good = (pdfs / "annual-report.pdf").read_bytes()
    (pdfs / "cut.pdf").write_bytes(good[: len(good) // 2])
    empty = pdfium.PdfDocument.new()
    empty.save(pdfs / "empty.pdf")
    empty.close()
    shipped = _shipped_pdf()
    if shipped is not None:
        (pdfs / "slides" / "logo.pdf").write_bytes(shipped.read_bytes())
    (pdfs / "notes.md").write_text("not an input")

    photos = root / "photos"
    photos.mkdir()
    Image.new("RGB", (120, 90), (20, 60, 200)).save(photos / "harbour.png")
    (photos / "harbour.txt").write_text("A blue harbour crane at dawn\n")
    Image.new("RGB", (64, 64), (200, 200, 20)).save(photos / "field.jpg")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)

    records = root / "records.jsonl"  # the Nyx part format; one id collides with a page id
    records.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"id": "note-1", "content": [{"type": "text", "text": "A handwritten note about the kettle."}]},
                {"id": "annual-report__p001", "content": [{"type": "text", "text": "an impostor page"}]},
            ]
        )
    )

    beir = root / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "beir-1", "title": "Glaciers", "text": "Ice moves."}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "ice"}) + "\n")
    (beir / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq\tbeir-1\t1\n")

    shard_dir = root / "shards"
    (shard_dir / "images").mkdir(parents=True)
    Image.new("RGB", (50, 40), (10, 150, 10)).save(shard_dir / "images" / "leaf.png")
    (shard_dir / "web-00000.jsonl").write_text(
        json.dumps({"id": "web-1", "texts": ["A page about leaves.", None], "images": [None, "images/leaf.png"]}) + "\n"
    )
    return {"pdfs": pdfs, "photos": photos, "records": records, "beir": beir, "shards": shard_dir}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    inputs = _make_inputs(root / "in")
    out = root / "corpus"
    res = _invoke(
        "ingest", inputs["pdfs"], inputs["photos"], inputs["records"], inputs["beir"], inputs["shards"], "--out", out
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    corpus = {}
    for line in (out / "corpus.jsonl").read_text().splitlines():
        r = json.loads(line)
        corpus[r["id"]] = r
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    return {
        "inputs": inputs,
        "out": out,
        "summary": summary,
        "corpus": corpus,
        "rejects": rejects,
        "stderr": res.stderr,
    }


def _texts(record: dict) -> str:
    return "\n".join(p["text"] for p in record["content"] if p["type"] == "text")


# --------------------------------------------------------------------------------------------- the corpus


def test_pdf_pages_become_records_with_page_ids_images_and_text(ingested):
    c = ingested["corpus"]
    assert [k for k in c if k.startswith("annual-report__")] == [f"annual-report__p00{i}" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        r = c[f"annual-report__p00{i}"]
        assert [p["type"] for p in r["content"]] == ["image", "text"]
        assert r["page"] == i and r["source"].endswith("annual-report.pdf")
    assert UNIQUE in _texts(c["annual-report__p002"])
    assert all(UNIQUE.split()[0] not in _texts(r) for k, r in c.items() if k != "annual-report__p002")
    # the impostor from records.jsonl did not replace the page
    assert "impostor" not in _texts(c["annual-report__p001"])


def test_text_layer_is_in_reading_order_not_stream_order(ingested):
    import pypdfium2 as pdfium

    page1 = _texts(ingested["corpus"]["annual-report__p001"]).splitlines()
    assert page1 == [
        "Annual Report Overview",
        "Revenue grew in every region during the year",
        "Footer: annual report page one",
    ]
    page3 = _texts(ingested["corpus"]["annual-report__p003"]).splitlines()
    assert page3 == [
        "Left column first line",
        "Left column second line",
        "Right column first line",
        "Right column second line",
    ]
    # the file's own (stream) order is different: the ordering is ours, not PDFium's
    doc = pdfium.PdfDocument(ingested["inputs"]["pdfs"] / "annual-report.pdf")
    try:
        stream = doc[0].get_textpage().get_text_range()
    finally:
        doc.close()
    assert stream.index("Footer") < stream.index("Annual Report Overview")


def test_pages_without_a_text_layer_are_image_only(ingested):
    c, s = ingested["corpus"], ingested["summary"]
    scanned = c["scanned_invoice__p001"]
    assert [p["type"] for p in scanned["content"]] == ["image"]
    expected_image_only = 1
    if _shipped_pdf() is not None:
        assert [p["type"] for p in c["slides/logo__p001"]["content"]] == ["image"]
        expected_image_only += 1
    assert s["image_only_pages"] == expected_image_only
    assert s["pages"] == 3 + expected_image_only and s["text_pages"] == 3


def test_page_images_are_files_under_the_folder_within_the_pixel_budget(ingested):
    from nyx.settings import ImageSettings

    out, budget = ingested["out"], ImageSettings().max_pixels
    assert ingested["summary"]["max_pixels"] == budget
    for r in ingested["corpus"].values():
        for p in r["content"]:
            if p["type"] != "image":
                continue
            assert not os.path.isabs(p["image"]) and p["image"].startswith("images/")
            path = out / p["image"]
            assert path.is_file()
            if r.get("page"):
                with Image.open(path) as im:
                    w, h = im.size
                assert w * h <= budget and w % 28 == 0 and h % 28 == 0
                assert w * h >= 0.8 * budget  # rendered to fill the budget, not at 72 dpi


def test_every_bad_input_is_a_named_reject_and_the_rest_goes_on(ingested):
    s, rejects = ingested["summary"], ingested["rejects"]
    assert s["rejects"] == {
        "corrupt PDF": 1,
        "duplicate id": 1,
        "empty PDF": 1,
        "encrypted PDF": 1,
        "truncated PDF": 1,
        "undecodable image": 1,
    }
    by_reason = {r["reason"].split(":")[0]: r for r in rejects}
    assert "locked.pdf" in by_reason["encrypted PDF"]["reason"] and "password" in by_reason["encrypted PDF"]["reason"]
    assert "broken.pdf" in by_reason["corrupt PDF"]["reason"]
    assert "cut.pdf" in by_reason["truncated PDF"]["reason"]
    assert "empty.pdf" in by_reason["empty PDF"]["reason"]
    assert by_reason["undecodable image"]["record_id"] == "broken"
    dup = by_reason["duplicate id"]
    assert dup["record_id"] == "annual-report__p001" and "records.jsonl" in dup["reason"]
    assert "annual-report.pdf" in dup["reason"]
    assert "6 record(s) rejected" in ingested["stderr"]
    assert {"path": str(ingested["inputs"]["pdfs"] / "notes.md"), "why": "unsupported file type"} in s["skipped_files"]


def test_the_encrypted_fixture_is_really_encrypted():
    """The reject above is PDFium's password error, not a parse failure: with the password the page reads."""
    import pypdfium2 as pdfium

    data = encrypted_pdf(b"secret")
    with pytest.raises(pdfium.PdfiumError) as e:
        pdfium.PdfDocument(data)
    assert e.value.err_code == 4  # FPDF_ERR_PASSWORD
    doc = pdfium.PdfDocument(data, password="secret")
    try:
        assert doc[0].get_textpage().get_text_range() == "Confidential salary table"
    finally:
        doc.close()


def test_images_captions_jsonl_beir_and_obelics_go_through_the_same_command(ingested):
    c, s = ingested["corpus"], ingested["summary"]
    harbour = c["harbour"]
    assert [p["type"] for p in harbour["content"]] == ["text", "image"]
    assert harbour["content"][0]["text"] == "A blue harbour crane at dawn"
    assert [p["type"] for p in c["field"]["content"]] == ["image"]
    assert _texts(c["note-1"]) == "A handwritten note about the kettle."
    assert "Ice moves." in _texts(c["beir-1"]) and "q" not in c  # BEIR: the corpus, not the queries
    web = c["web-1"]
    assert [p["type"] for p in web["content"]] == ["text", "image"]
    assert (ingested["out"] / web["content"][1]["image"]).is_file()
    assert s["records_by_kind"] == {"pdf": s["pages"], "image": 2, "jsonl": 1, "beir": 1, "obelics": 1}
    assert s["records"] == len(c)


# --------------------------------------------------------------------------------------------- index and search


@pytest.mark.slow
@pytest.mark.parametrize("retriever", ["bm25", "minilm", "nyx"])
def test_index_and_search_the_ingested_folder(ingested, tmp_path, retriever):
    idx = tmp_path / "idx"
    extra = ["--model", "tiny", "--batch-size", "4"] if retriever == "nyx" else []
    res = _invoke("index", ingested["out"], "--out", idx, "--retriever", retriever, *extra, "--no-progress")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rejected"] == 0
    res = _invoke("search", idx, "--text", UNIQUE, "-k", "3")
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)["results"]
    assert results
    if retriever != "nyx":  # the tiny model is random: it only has to run
        assert results[0]["id"] == "annual-report__p002"


# --------------------------------------------------------------------------------------------- options and errors


def test_max_pixels_overrides_the_profile(tmp_path, ingested):
    out = tmp_path / "small"
    res = _invoke("ingest", ingested["inputs"]["pdfs"] / "annual-report.pdf", "--out", out, "--max-pixels", "20000")
    assert res.exit_code == 0, res.output
    for line in (out / "corpus.jsonl").read_text().splitlines():
        ref = json.loads(line)["content"][0]["image"]
        with Image.open(out / ref) as im:
            assert im.size[0] * im.size[1] <= 20000


def test_as_shard_writes_an_obelics_shard_the_pipeline_reads(tmp_path, ingested):
    from nyx.data.ingest import ingest_raw, shard_name
    from nyx.data.obelics import list_shards, read_obelics

    raw = tmp_path / "raw"
    res = _invoke("ingest", ingested["inputs"]["pdfs"], "--as-shard", "my-pdfs", "--raw-dir", raw)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["shard"] == str(raw / "my-pdfs.jsonl")
    assert [shard_name(s) for s in list_shards(raw)] == ["my-pdfs"]
    row = json.loads((raw / "my-pdfs.jsonl").read_text().splitlines()[0])
    assert len(row["texts"]) == len(row["images"]) and row["images"][0].startswith("images/")
    docs = {r.id: r for r in read_obelics(raw / "my-pdfs.jsonl")}
    assert UNIQUE in docs["annual-report__p002"].text
    assert docs["scanned_invoice__p001"].n_images == 1 and not docs["scanned_invoice__p001"].text
    (stats,) = ingest_raw(raw, tmp_path / "documents", tmp_path / "rejects")
    assert stats.error is None and stats.rejected == 0 and stats.documents == len(docs)
    # the same name again is refused unless replaced; the rejects never land in raw/ as a shard
    assert (tmp_path / "rejects" / "ingest" / "my-pdfs.jsonl").is_file()
    res = _invoke("ingest", ingested["inputs"]["records"], "--as-shard", "my-pdfs", "--raw-dir", raw)
    assert res.exit_code == 1 and "already exists" in res.stderr
    res = _invoke("ingest", ingested["inputs"]["beir"], "--as-shard", "my-pdfs", "--raw-dir", raw, "--replace-shard")
    assert res.exit_code == 0, res.output
    assert [r.id for r in read_obelics(raw / "my-pdfs.jsonl")] == ["beir-1"]


def test_a_folder_of_only_bad_files_exits_1_and_keeps_the_rejects(tmp_path, ingested):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.pdf").write_bytes(os.urandom(100))
    (bad / "locked.pdf").write_bytes(encrypted_pdf())
    out = tmp_path / "out"
    res = _invoke("ingest", bad, "--out", out)
    assert res.exit_code == 1 and "no usable records" in res.stderr
    assert not out.exists()
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert len(reasons) == 2 and any("encrypted PDF" in r for r in reasons)


def test_output_is_replaced_whole_and_foreign_folders_are_refused(tmp_path, ingested):
    out = tmp_path / "out"
    pdf = ingested["inputs"]["pdfs"] / "annual-report.pdf"
    assert _invoke("ingest", pdf, "--out", out).exit_code == 0
    (out / "images" / "stale.png").write_bytes(b"x")
    res = _invoke("ingest", ingested["inputs"]["records"], "--out", out)  # a rerun replaces the folder
    assert res.exit_code == 0, res.output
    assert not (out / "images" / "stale.png").exists() and not (out / "rejects.jsonl").exists()
    assert [json.loads(x)["id"] for x in (out / "corpus.jsonl").read_text().splitlines()] == [
        "note-1",
        "annual-report__p001",
    ]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "queries.jsonl").write_text("{}\n")
    res = _invoke("ingest", pdf, "--out", mine)
    assert res.exit_code == 1 and "refusing to overwrite" in res.stderr
    assert (mine / "queries.jsonl").is_file()


@pytest.mark.parametrize(
    "args, code",
    [
        (["--out"], 2),  # no value
        ([], 2),  # neither --out nor --as-shard
        (["--as-shard", "a.b"], 2),  # not a partition key
    ],
)
def test_usage_errors_exit_2(tmp_path, ingested, args, code):
    res = _invoke("ingest", ingested["inputs"]["records"], *args)
    assert res.exit_code == code, res.output


def test_missing_input_exits_1_before_anything_is_written(tmp_path):
    res = _invoke("ingest", tmp_path / "nope.pdf", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "no such file or folder" in res.stderr and "nope.pdf" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_pdf_encrypted_without_a_user_password_opens_and_is_read(tmp_path):
    (tmp_path / "owner-only.pdf").write_bytes(encrypted_pdf(b""))  # permissions only: every viewer opens it
    res = _invoke("ingest", tmp_path / "owner-only.pdf", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(x) for x in (tmp_path / "out" / "corpus.jsonl").read_text().splitlines()]
    assert record["id"] == "owner-only__p001" and _texts(record) == "Confidential salary table"


def test_text_drawn_at_90_degrees_is_read_along_its_lines(tmp_path):
    import matplotlib.pyplot as plt
    import pypdfium2 as pdfium

    from nyx.data.pdf import page_text

    fig = plt.figure(figsize=(8.5, 11))
    fig.text(0.1, 0.9, "Chart title")
    fig.text(0.05, 0.3, "Revenue axis label", rotation=90)
    fig.savefig(tmp_path / "chart.pdf")
    plt.close(fig)
    doc = pdfium.PdfDocument(tmp_path / "chart.pdf")
    try:
        lines = page_text(doc[0]).splitlines()
    finally:
        doc.close()
    assert sorted(lines) == ["Chart title", "Revenue axis label"]


@pytest.mark.parametrize("text_angle, page_rotation", [(90, 90), (-90, 270)])
def test_rotated_pages_are_read_as_displayed(tmp_path, text_angle, page_rotation):
    """A landscape page stored rotated (/Rotate, its text drawn at 90 degrees): lines in display order. Text drawn
    at +90 degrees has its first line on the left of the stored page, at -90 degrees on the right."""
    import matplotlib.pyplot as plt
    import pypdfium2 as pdfium

    from nyx.data.pdf import page_text

    first_x, second_x = (0.1, 0.15) if text_angle == 90 else (0.15, 0.1)
    fig = plt.figure(figsize=(8.5, 11))
    fig.text(second_x, 0.5, "Second line as displayed", rotation=text_angle)  # written first
    fig.text(first_x, 0.5, "First line as displayed", rotation=text_angle)
    fig.savefig(tmp_path / "upright.pdf")
    plt.close(fig)
    doc = pdfium.PdfDocument(tmp_path / "upright.pdf")
    doc[0].set_rotation(page_rotation)
    doc.save(tmp_path / "landscape.pdf")
    doc.close()
    doc = pdfium.PdfDocument(tmp_path / "landscape.pdf")
    try:
        assert page_text(doc[0]).splitlines() == ["First line as displayed", "Second line as displayed"]
    finally:
        doc.close()
