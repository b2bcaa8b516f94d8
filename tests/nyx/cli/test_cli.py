"""`nyx index` -> `nyx search` -> `nyx evaluate` on a small mixed-modal BEIR set, for every retriever,
plus the exit codes scripts rely on (0 ok, 1 bad input, 2 usage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from nyx.cli import app

runner = CliRunner()

CORPUS = [
    {
        "id": "lighthouse",
        "content": [{"type": "text", "text": "The lighthouse keeper climbed the spiral stairs at dusk."}],
    },
    {
        "id": "bakery",
        "content": [{"type": "text", "text": "Fresh sourdough bread is baked every morning in the village."}],
    },
    {
        "id": "chess",
        "content": [{"type": "text", "text": "The chess grandmaster sacrificed her queen to win the match."}],
    },
    {
        "id": "volcano",
        "content": [
            {"type": "text", "text": "The volcano eruption covered the island in ash."},
            {"type": "image", "image": "images/red.png"},
        ],
    },
    {
        "id": "garden",
        "content": [
            {"type": "image", "image": "images/green.png"},
            {"type": "text", "text": "Tomatoes ripen in the greenhouse garden."},
        ],
    },
    {"id": "picture", "content": [{"type": "image", "image": "images/green.png"}]},
]
QUERIES = [
    {"id": "q1", "content": [{"type": "text", "text": "who climbed the lighthouse stairs"}]},
    {
        "id": "q2",
        "content": [{"type": "text", "text": "volcano eruption ash"}, {"type": "image", "image": "images/red.png"}],
    },
    {"id": "q3", "content": [{"type": "image", "image": "images/green.png"}]},
]
QRELS = [("q1", "lighthouse", 1), ("q2", "volcano", 1), ("q3", "picture", 1)]
BAD_LINES = ['{"id": "broken", "content": [', '{"id": "video", "content": [{"type": "video", "video": "v.mp4"}]}']


def _write_beir(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "images" / "red.png")
    Image.new("RGB", (40, 60), (30, 160, 60)).save(folder / "images" / "green.png")
    lines = [json.dumps(r) for r in CORPUS[:3]] + BAD_LINES + [json.dumps(r) for r in CORPUS[3:]]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    return folder


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return _write_beir(tmp_path_factory.mktemp("beir"))


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _index(beir: Path, out: Path, retriever: str, *extra: str):
    return _invoke("index", beir / "corpus.jsonl", "--out", out, "--retriever", retriever, *extra)


# --------------------------------------------------------------------------- the full flow, per retriever


@pytest.mark.slow
@pytest.mark.parametrize("retriever, dims", [("bm25", [None]), ("minilm", [384]), ("nyx", [128, 64, 32, 16])])
def test_index_search_evaluate_flow(beir, tmp_path, retriever, dims):
    out = tmp_path / "index"
    res = _index(beir, out, retriever, "--batch-size", "4")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["num_docs"] == len(CORPUS) and summary["rejected"] == len(BAD_LINES)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 2 and any("malformed JSON" in r["reason"] for r in rejects)
    assert "2 record(s) rejected" in res.stderr

    res = _invoke("search", out, "--text", "lighthouse keeper", "--image", beir / "images" / "red.png", "-k", "3")
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    assert [r["rank"] for r in found["results"]] == list(range(1, len(found["results"]) + 1))
    assert 1 <= len(found["results"]) <= 3 and found["retriever"] == retriever

    metrics, run = tmp_path / "metrics.json", tmp_path / "run.trec"
    res = _invoke(
        "evaluate",
        out,
        "--queries",
        beir / "queries.jsonl",
        "--qrels",
        beir / "qrels.tsv",
        "--out",
        metrics,
        "--run-out",
        run,
    )
    assert res.exit_code == 0, res.output
    report = json.loads(metrics.read_text())
    assert [row["dim"] for row in report["rows"]] == dims
    for row in report["rows"]:
        for name in ("recall@1", "recall@5", "recall@10", "recall@20", "ndcg@10", "mrr@10"):
            assert 0.0 <= row[name] <= 1.0
        assert row["n_queries"] == 3 and row["search_ms_per_query"] >= 0
    run_lines = run.read_text().splitlines()
    assert run_lines and all(len(line.split()) == 6 for line in run_lines)
    assert len(report["runs"]) == len(dims)
    for path in report["runs"].values():
        assert Path(path).is_file()

    first = report["per_query"][str(dims[0])]
    if retriever == "bm25":  # lexical overlap decides; the image-only query has no words -> no results
        assert first["q1"]["recall@1"] == 1.0 and first["q2"]["recall@1"] == 1.0 and first["q3"]["recall@1"] == 0.0
    if retriever == "minilm":  # real pretrained text model: the text queries find their documents
        assert first["q1"]["recall@1"] == 1.0 and first["q2"]["recall@1"] == 1.0
    if dims[0] is not None:
        res = _invoke(
            "evaluate",
            out,
            "--queries",
            beir / "queries.jsonl",
            "--qrels",
            beir / "qrels.tsv",
            "--out",
            tmp_path / "m2.json",
            "--dims",
            str(dims[0] * 2),
        )
        assert res.exit_code == 1 and "exceeds the index dimension" in res.stderr


@pytest.mark.slow
def test_evaluate_a_chosen_set_of_dims_writes_one_run_per_dim(beir, tmp_path):
    out = tmp_path / "index"
    assert _index(beir, out, "nyx", "--dim", "64").exit_code == 0
    res = _invoke(
        "evaluate",
        out,
        "--queries",
        beir / "queries.jsonl",
        "--qrels",
        beir / "qrels.tsv",
        "--out",
        tmp_path / "m.json",
        "--dims",
        "64,16",
        "--run-out",
        tmp_path / "run.trec",
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert [r["dim"] for r in report["rows"]] == [64, 16]
    assert (tmp_path / "run.trec").is_file() and (tmp_path / "run.d16.trec").is_file()


# --------------------------------------------------------------------------- exit codes


@pytest.fixture(scope="module")
def bm25_index(beir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bm25") / "index"
    assert _index(beir, out, "bm25").exit_code == 0
    return out


def test_index_of_a_missing_corpus_exits_1(tmp_path):
    res = _invoke("index", tmp_path / "nope.jsonl", "--out", tmp_path / "i", "--retriever", "bm25")
    assert res.exit_code == 1 and "corpus not found" in res.stderr


def test_index_where_every_record_is_bad_exits_1_and_keeps_the_rejects(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("\n".join(BAD_LINES) + "\n")
    res = _invoke("index", corpus, "--out", tmp_path / "i", "--retriever", "bm25")
    assert res.exit_code == 1 and "no usable documents" in res.stderr
    assert not (tmp_path / "i").exists()
    assert len((tmp_path / "i.rejects.jsonl").read_text().splitlines()) == 2


def test_index_refuses_to_overwrite_a_folder_that_is_not_an_index(beir, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    res = _index(beir, tmp_path / "precious", "bm25")
    assert res.exit_code == 1 and "refusing to overwrite" in res.stderr
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize(
    "args",
    [
        ["--retriever", "nope"],
        ["--retriever", "bm25", "--dim", "8"],
        ["--retriever", "bm25", "--model", "tiny"],
        ["--batch-size", "0"],
    ],
)
def test_index_usage_errors_exit_2(beir, tmp_path, args):
    res = _invoke("index", beir / "corpus.jsonl", "--out", tmp_path / "i", *args)
    assert res.exit_code == 2, res.output


def test_index_without_out_exits_2(beir):
    assert _invoke("index", beir / "corpus.jsonl").exit_code == 2


def test_search_errors(bm25_index, tmp_path):
    res = _invoke("search", tmp_path / "nowhere", "--text", "x")
    assert res.exit_code == 1 and "not a Nyx index folder" in res.stderr
    res = _invoke("search", bm25_index, "--text", "x", "--image", tmp_path / "missing.png")
    assert res.exit_code == 1 and "query image not found" in res.stderr
    assert _invoke("search", bm25_index).exit_code == 2  # neither text nor image
    res = _invoke("search", bm25_index, "--text", "x", "--dim", "8")
    assert res.exit_code == 1 and "no embedding dimensions" in res.stderr


def test_search_prints_ranked_json(bm25_index):
    res = _invoke("search", bm25_index, "--text", "sourdough bread", "-k", "2")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"][0]["id"] == "bakery"


def test_evaluate_errors(beir, bm25_index, tmp_path):
    q, qr = beir / "queries.jsonl", beir / "qrels.tsv"
    assert (
        _invoke(
            "evaluate", bm25_index, "--queries", q, "--qrels", qr, "--out", tmp_path / "m.json", "--dims", "abc"
        ).exit_code
        == 2
    )
    res = _invoke(
        "evaluate", bm25_index, "--queries", tmp_path / "none.jsonl", "--qrels", qr, "--out", tmp_path / "m.json"
    )
    assert res.exit_code == 1 and "queries file not found" in res.stderr
    assert _invoke("evaluate", bm25_index, "--queries", q, "--qrels", qr).exit_code == 2  # no --out


def test_evaluate_counts_and_writes_bad_query_and_qrels_lines(beir, bm25_index, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text((beir / "queries.jsonl").read_text() + "not json\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text((beir / "qrels.tsv").read_text() + "q1\tbakery\tnot-a-number\n")
    res = _invoke("evaluate", bm25_index, "--queries", queries, "--qrels", qrels, "--out", tmp_path / "m.json")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["rejected"] == 2
    assert len(Path(report["rejects_file"]).read_text().splitlines()) == 2
    assert Path(report["rejects_file"]) == tmp_path / "m.rejects.jsonl"


def test_help_lists_the_commands():
    res = _invoke("--help")
    assert res.exit_code == 0
    for cmd in ("index", "search", "evaluate"):
        assert cmd in res.stdout


def test_report_renders_markdown_json_and_plots_for_several_indexes(tmp_path):
    """`nyx report` on two indexes of a small BEIR set: the same report as the eval_report asset."""
    import json as _json

    from typer.testing import CliRunner

    from nyx.cli import app
    from nyx.data.beir import write_beir
    from nyx.data.records import Record

    corpus = [
        Record.from_text(f"d{i}", t)
        for i, t in enumerate(
            ["The barn in Alder is red.", "The mill in Brook is blue.", "The bridge in Cove is green."]
        )
    ]
    queries = [
        Record.from_text(
            "q0",
            "What colour is the barn in Alder?",
            choices=["red", "blue", "green", "black"],
            correct_index=0,
            answer="red",
        ),
        Record.from_text(
            "q1",
            "What colour is the mill in Brook?",
            choices=["red", "blue", "green", "black"],
            correct_index=1,
            answer="blue",
        ),
    ]
    beir = tmp_path / "beir"
    write_beir(beir, corpus, queries, {"q0": {"d0": 1}, "q1": {"d1": 1}})
    runner = CliRunner()
    for name in ("bm25", "minilm"):
        r = runner.invoke(
            app, ["index", str(beir / "corpus.jsonl"), "--out", str(tmp_path / name), "--retriever", name]
        )
        assert r.exit_code == 0, r.output
    out = tmp_path / "report"
    r = runner.invoke(
        app,
        [
            "report",
            f"lexical={tmp_path / 'bm25'}",
            str(tmp_path / "minilm"),
            "--queries",
            str(beir / "queries.jsonl"),
            "--qrels",
            str(beir / "qrels.tsv"),
            "--corpus",
            str(beir / "corpus.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    report = _json.loads((out / "report.json").read_text())
    assert {row["retriever"] for row in report["retrieval"]} == {"lexical", "minilm"}
    assert {row["run"] for row in report["rag"]} >= {"lexical", "oracle", "no_retrieval"}
    assert (out / "matryoshka.png").exists() and "lexical" in (out / "report.md").read_text()
    bad = runner.invoke(
        app,
        [
            "report",
            str(tmp_path / "bm25"),
            "--queries",
            str(tmp_path / "nope.jsonl"),
            "--qrels",
            str(beir / "qrels.tsv"),
            "--corpus",
            str(beir / "corpus.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert bad.exit_code == 1 and "not found" in bad.output
