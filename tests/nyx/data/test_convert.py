"""`nyx convert`: each public benchmark, in a small fixture written in its published schema (tests/fixtures/convert),
becomes a BEIR folder that loads, indexes with BM25, scores with `nyx evaluate`, and carries the answers the RAG
metrics read. Malformed rows are rejects with their id and reason; the rest goes on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import pytest
from typer.testing import CliRunner

from nyx.cli import app
from nyx.data.beir import load_beir
from nyx.data.records import iter_jsonl
from nyx.eval.answers import answer_metrics
from tests.paths import FIXTURES as TEST_FIXTURES

matplotlib.use("Agg")

FIXTURES = TEST_FIXTURES / "convert"
runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _convert(fmt: str, src: Path, out: Path, *extra) -> dict:
    r = _invoke("convert", fmt, src, "--out", out, *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _evaluate(folder: Path, tmp: Path) -> dict:
    """`nyx index --retriever bm25` then `nyx evaluate` on a converted folder: the per-query metrics."""
    index = tmp / f"{folder.name}-bm25"
    r = _invoke("index", folder, "--out", index, "--retriever", "bm25")
    assert r.exit_code == 0, r.output
    metrics = tmp / f"{folder.name}-metrics.json"
    r = _invoke(
        "evaluate",
        index,
        "--queries",
        folder / "queries.jsonl",
        "--qrels",
        folder / "qrels.tsv",
        "--out",
        metrics,
        "--run-out",
        tmp / f"{folder.name}.run",
    )
    assert r.exit_code == 0, r.output
    return json.loads(metrics.read_text())


def _rejects(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "rejects.jsonl").read_text().splitlines()]


def _gold_doc(ds, qid: str) -> str:
    (did,) = [d for d, s in ds.qrels[qid].items() if s == max(ds.qrels[qid].values())][:1]
    return did


# ------------------------------------------------------------------------------------------------ text multi-hop


def test_hotpotqa_paragraphs_dedup_qrels_and_bm25_round_trip(tmp_path):
    out = tmp_path / "hotpotqa"
    s = _convert("hotpotqa", FIXTURES / "hotpotqa", out)
    assert (s["queries"], s["docs"], s["qrels"], s["rejected"]) == (2, 4, 4, 2)
    ds = load_beir(out, split="dev")
    # the lighthouse paragraph is in both questions' contexts: one document, one id, referenced by both
    lighthouse = [d for d in ds.corpus if d.startswith("Varnhold_Lighthouse_Museum--")]
    assert len(lighthouse) == 1 and len(ds.corpus) == 4
    q1, q2 = "5a8b57f25542995d1e6f1371", "5a8c7595554299585d9e36b6"
    assert {d.split("--")[0] for d in ds.qrels[q1]} == {"Varnhold_Lighthouse_Museum", "Elster_(river)"}
    assert {d.split("--")[0] for d in ds.qrels[q2]} == {"Quillon_Abbey", "Tarsk_Observatory"}
    assert ds.queries[q1].extra["answer"] == ["Elster"] and ds.queries[q1].extra["modality"] == "text"
    assert ds.queries[q2].extra["type"] == "comparison"
    # ids are content-addressed: a second conversion gives the same ids
    again = tmp_path / "again"
    _convert("hotpotqa", FIXTURES / "hotpotqa" / "hotpot_dev_distractor_v1.json", again)
    assert set(load_beir(again).corpus) == set(ds.corpus)
    # malformed rows: named and explained, the others went on
    rejects = {r["record_id"]: r["reason"] for r in _rejects(out)}
    assert rejects["5a85ea095542994775f606a8"].startswith(
        "supporting fact not in context: the title 'Varnhold Harbour'"
    )
    assert rejects["5a87ab905542996e4f3088c1"] == "field 'question' is missing"
    # BM25 finds the Norway observatory for the question that names it
    m = _evaluate(out, tmp_path)
    assert m["n_queries_judged"] == 2
    assert m["per_query"]["None"][q2]["recall@10"] == 1.0
    assert m["rows"][0]["recall@10"] == 1.0
    run = (tmp_path / "hotpotqa.run").read_text().splitlines()
    top_q1 = [line.split()[2] for line in run if line.startswith(q1)][0]
    assert top_q1.split("--")[0] == "Varnhold_Lighthouse_Museum"


def test_2wiki_reads_the_hotpotqa_layout(tmp_path):
    out = tmp_path / "2wiki"
    s = _convert("2wiki", FIXTURES / "2wiki", out)
    assert (s["queries"], s["docs"], s["rejected"]) == (2, 4, 1)
    ds = load_beir(out, split="dev")
    qid = "8813f87c0bdd11eba7f7acde48001122"
    assert {d.split("--")[0] for d in ds.qrels[qid]} == {"Harvest_of_Glass", "Ingrid_Malmo"}
    assert ds.queries[qid].extra == {"answer": ["Aarhus"], "type": "compositional", "modality": "text"}
    (rej,) = _rejects(out)
    assert rej["record_id"] == "c1d2e3f40bdd11eba7f7acde48001122" and rej["reason"].startswith("field 'context'")
    m = _evaluate(out, tmp_path)
    assert m["per_query"]["None"]["a5b0a1b40bdd11eba7f7acde48001122"]["recall@5"] == 1.0


def test_musique_supporting_paragraphs_aliases_and_unanswerable(tmp_path):
    out = tmp_path / "musique"
    s = _convert("musique", FIXTURES / "musique", out)
    assert (s["queries"], s["docs"], s["qrels"]) == (2, 5, 4)  # "Lantern fish" shared by two questions
    ds = load_beir(out)
    q = ds.queries["2hop__460946_294723"]
    assert q.extra["answer"] == ["Tomas Hollis", "Tom Hollis", "T. Hollis"] and q.extra["hops"] == 2
    assert {d.split("--")[0] for d in ds.qrels["2hop__13548_13529"]} == {"Brackwater_Canal", "Kellby"}
    reasons = {r["reason"].split(":")[0]: r for r in _rejects(out)}
    assert reasons["malformed JSON"]["location"] == "musique_ans_v1.0_dev.jsonl:3"
    assert any(r["record_id"] == "2hop__999_998" and "unanswerable" in r["reason"] for r in _rejects(out))
    # an alias scores as the answer; a wrong name does not
    scores = answer_metrics({"2hop__460946_294723": "Tom Hollis", "2hop__13548_13529": "Greta Wren"}, ds.queries)
    assert scores["per_query"]["2hop__460946_294723"]["em"] == 1.0
    assert scores["per_query"]["2hop__13548_13529"]["em"] == 0.0
    m = _evaluate(out, tmp_path)
    assert m["per_query"]["None"]["2hop__13548_13529"]["recall@10"] == 1.0


# ------------------------------------------------------------------------------------------------ multimodal


def test_mmqa_texts_tables_and_images_with_missing_image_rejected(tmp_path):
    out = tmp_path / "mmqa"
    s = _convert("mmqa", FIXTURES / "mmqa", out, "--split", "dev")
    assert (s["queries"], s["docs"], s["qrels"], s["rejected"]) == (3, 6, 4, 2)
    ds = load_beir(out, split="dev")
    bridge_img, stadium_img, table = (
        "d57e56eff064047af5a6ef074a570956",
        "632ea110be92836441adfb3167edf8ff",
        "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
    )
    assert ds.qrels["b0f1e2d3c4b5a69788796a5b4c3d2e1f"] == {bridge_img: 1}
    assert ds.qrels["c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2"] == {table: 1, stadium_img: 1}
    # images are copied into the folder and referenced relative to it
    img = ds.corpus[bridge_img]
    assert img.n_images == 1 and Path(img.images[0]).is_file() and Path(img.images[0]).parent == out / "images"
    assert "Since | Ground" in ds.corpus[table].text and "1998 | Kestrel Stadium" in ds.corpus[table].text
    q = ds.queries["b0f1e2d3c4b5a69788796a5b4c3d2e1f"]
    assert q.extra["answer"] == ["red", "crimson"] and q.extra["modality"] == "image1" and "choices" not in q.extra
    assert ds.queries["5454c14ad01e722c2619b66778daa98b"].extra["modality"] == "text"
    by_id = {r["record_id"]: r["reason"] for r in _rejects(out)}
    assert by_id["89c1b7c3c061cc80bb98d99cbbec50dd"].startswith("image file not found")
    assert by_id["e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8"].startswith("gold document missing")
    m = _evaluate(out, tmp_path)
    assert m["per_query"]["None"]["5454c14ad01e722c2619b66778daa98b"]["recall@1"] == 1.0
    assert answer_metrics({"b0f1e2d3c4b5a69788796a5b4c3d2e1f": "Crimson."}, [q])["em"] == 1.0


def test_scienceqa_choices_context_documents_and_split(tmp_path):
    out = tmp_path / "scienceqa"
    s = _convert("scienceqa", FIXTURES / "scienceqa", out)
    assert s["split"] == "test" and (s["queries"], s["rejected"]) == (3, 2)
    ds = load_beir(out, split="test")
    q = ds.queries["101"]
    assert q.extra["choices"] == ["repel", "attract"] and q.extra["correct_index"] == 1
    assert q.extra["answer"] == ["attract"] and q.extra["modality"] == "image1"
    assert ds.queries["102"].extra["correct_index"] == 0 and ds.queries["102"].extra["modality"] == "text"
    ctx = ds.corpus["sqa-101"]
    assert ctx.n_images == 1 and "north pole" in ctx.text and "Opposite poles attract" not in ctx.text
    lecture = [d for d in ds.qrels["101"] if d.startswith("lecture--")]
    assert ds.qrels["101"]["sqa-101"] == 2 and ds.qrels["101"][lecture[0]] == 1
    assert "sqa-102" not in ds.corpus  # no hint, no image: its lecture only
    assert set(ds.qrels["103"]) == {"sqa-103"}
    by_id = {r["record_id"]: r["reason"] for r in _rejects(out)}
    assert by_id["104"].startswith("bad answer index") and by_id["105"].startswith("unknown pid")
    # multiple choice: the letter or the text of the right option is correct, the other option is not
    scores = answer_metrics({"101": "(B)", "102": "loyal", "103": "Montpelier"}, ds.queries)
    assert [scores["per_query"][q]["correct"] for q in ("101", "102", "103")] == [1.0, 0.0, 1.0]
    m = _evaluate(out, tmp_path)
    assert m["per_query"]["None"]["103"]["recall@1"] == 1.0
    # a smaller split of the same files
    mini = _convert("scienceqa", FIXTURES / "scienceqa", tmp_path / "mini", "--split", "minitest")
    assert mini["queries"] == 2 and mini["rejected"] == 0
    bad = _invoke("convert", "scienceqa", FIXTURES / "scienceqa", "--out", tmp_path / "x", "--split", "nope")
    assert bad.exit_code == 1 and "split 'nope' is not in pid_splits.json" in bad.output


def test_rag_report_runs_on_converted_folders(tmp_path):
    """`nyx report` with the offline reader on a converted multiple-choice set: RAG rows for every run."""
    out = tmp_path / "scienceqa"
    _convert("scienceqa", FIXTURES / "scienceqa", out)
    r = _invoke("index", out, "--out", tmp_path / "bm25", "--retriever", "bm25")
    assert r.exit_code == 0, r.output
    r = _invoke(
        "report",
        tmp_path / "bm25",
        "--queries",
        out / "queries.jsonl",
        "--qrels",
        out / "qrels.tsv",
        "--corpus",
        out / "corpus.jsonl",
        "--out",
        tmp_path / "report",
        "--reader",
        "minilm",
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rag = {row["run"]: row for row in report["rag"]}
    assert set(rag) == {"bm25", "oracle", "no_retrieval"} and all(row["n"] == 3 for row in rag.values())
    assert {row["modality"] for row in report["by_modality"]} >= {"text", "image1"}


# ------------------------------------------------------------------------------------------------ no corpus


def test_bamboogle_answers_without_corpus_or_judgements(tmp_path):
    out = tmp_path / "bamboogle"
    s = _convert("bamboogle", FIXTURES / "bamboogle", out)
    assert (s["queries"], s["docs"], s["qrels"], s["queries_without_qrels"]) == (3, 0, 0, 3)
    assert "no corpus" in s["notes"][0]
    ds = load_beir(out)
    assert ds.corpus == {} and ds.qrels == {}
    assert ds.queries["bamboogle-002"].extra["answer"] == ["Beirut"]
    (rej,) = _rejects(out)
    assert rej["record_id"] == "bamboogle-003" and rej["reason"] == "empty Answer"
    assert answer_metrics({"bamboogle-002": "beirut"}, ds.queries)["per_query"]["bamboogle-002"]["em"] == 1.0
    # retrieval cannot be scored: nyx evaluate says so; the answers are read against a corpus of one's own
    other = tmp_path / "hotpot"
    _convert("hotpotqa", FIXTURES / "hotpotqa", other)
    assert _invoke("index", other, "--out", tmp_path / "idx", "--retriever", "bm25").exit_code == 0
    r = _invoke(
        "evaluate",
        tmp_path / "idx",
        "--queries",
        out / "queries.jsonl",
        "--qrels",
        out / "qrels.tsv",
        "--out",
        tmp_path / "m.json",
    )
    assert r.exit_code == 1 and "has judgements" in r.output


# ------------------------------------------------------------------------------------------------ PDFs


def _pdf(path: Path, pages: list[str]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for text in pages:
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.85, text)
            pdf.savefig(fig)
            plt.close(fig)


def test_pagedoc_gold_pages_use_the_ingest_page_ids(tmp_path):
    src = tmp_path / "mmlongbench"
    shutil.copytree(FIXTURES / "pagedoc", src)
    docs = src / "data" / "documents"
    docs.mkdir()
    _pdf(
        docs / "pump-manual.pdf",
        [
            "Bilge pump manual: contents and safety notes",
            "Greasing: the impeller seal of the bilge pump must be greased every 200 hours",
            "Wiring diagram for the float switch",
        ],
    )
    _pdf(
        docs / "field-guide.pdf",
        [
            "Salt marsh: look for the redshank on the mud flats",
            "Woodland: the nuthatch climbs down tree trunks",
            "Salt marsh again: the avocet sweeps its bill through the shallows",
        ],
    )
    out = tmp_path / "pagedoc"
    s = _convert("pagedoc", src, out)
    assert (s["queries"], s["docs"], s["qrels"], s["queries_without_qrels"], s["rejected"]) == (3, 6, 3, 1, 2)
    ds = load_beir(out)
    pump_q, birds_q, na_q = "pump-manual-q0001", "field-guide-q0002", "pump-manual-q0003"
    assert ds.qrels[pump_q] == {"pump-manual__p002": 1}
    assert ds.qrels[birds_q] == {"field-guide__p001": 1, "field-guide__p003": 1}
    assert na_q not in ds.qrels and ds.queries[na_q].extra["answer"] == ["Not answerable"]
    page = ds.corpus["pump-manual__p002"]
    assert page.n_images == 1 and "greased every 200 hours" in page.text
    assert ds.queries[pump_q].extra["modality"] == "image1" and ds.queries[birds_q].extra["modality"] == "image2+"
    by_id = {r["record_id"]: r["reason"] for r in _rejects(out)}
    assert by_id["pump-manual-q0004"].startswith("page out of range: evidence page 9")
    assert by_id["row-5"].startswith("unknown PDF: doc_id 'missing-report.pdf'")
    m = _evaluate(out, tmp_path)
    assert m["per_query"]["None"][pump_q]["recall@1"] == 1.0
    # the same PDFs through `nyx ingest` give the same page ids, so these judgements score that index too
    r = _invoke("ingest", docs, "--out", tmp_path / "ingested")
    assert r.exit_code == 0, r.output
    assert {x.id for x in iter_jsonl(tmp_path / "ingested" / "corpus.jsonl")} == set(ds.corpus)


# ------------------------------------------------------------------------------------------------ CLI behaviour


def test_limit_unknown_format_and_foreign_output_folder(tmp_path):
    s = _convert("hotpotqa", FIXTURES / "hotpotqa", tmp_path / "one", "--limit", "1")
    assert s["queries"] == 1 and s["rejected"] == 0
    assert _invoke("convert", "nq", FIXTURES / "hotpotqa", "--out", tmp_path / "x").exit_code == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = _invoke("convert", "hotpotqa", FIXTURES / "hotpotqa", "--out", foreign)
    assert r.exit_code == 1 and "refusing to overwrite" in r.output and (foreign / "notes.txt").exists()
    r = _invoke("convert", "musique", FIXTURES / "hotpotqa", "--out", tmp_path / "y")
    assert r.exit_code == 1 and "no MuSiQue file" in r.output
    # converting again replaces the folder whole
    _convert("hotpotqa", FIXTURES / "hotpotqa", tmp_path / "one")
    assert len(load_beir(tmp_path / "one").queries) == 2


# ------------------------------------------------------------------------------------------------ eval_report's sets


def test_profile_extra_sets_validate():
    from pydantic import ValidationError

    from nyx.settings import load_profile

    assert load_profile("sample").eval.extra_sets == []
    p = load_profile("sample", {"eval": {"extra_sets": [{"name": "mmqa", "path": "benchmarks/mmqa", "split": "dev"}]}})
    assert (p.eval.extra_sets[0].name, p.eval.extra_sets[0].split, p.eval.extra_sets[0].corpus) == ("mmqa", "dev", None)
    for bad in (
        [{"name": "nyxqa", "path": "x"}],
        [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}],
        [{"name": "a"}],
        [{"name": "a b", "path": "x"}],
        [{"name": "a", "path": "x", "qrels": "y"}],
    ):
        with pytest.raises(ValidationError):
            load_profile("sample", {"eval": {"extra_sets": bad}})


def test_extra_set_evaluated_with_fresh_retrievers_and_the_embedding_store(tmp_path):
    """What eval_report runs for each extra set: retrievers built on the set's corpus, RAG with the reader, the
    dense encodes read back from the embedding store on a rerun; Bamboogle answered from a corpus of one's own."""
    from nyx.eval.extra_sets import evaluate_extra_set
    from nyx.feedback.readers import Reader
    from nyx.index.store import EmbeddingStore
    from nyx.retrieval import create_retriever
    from nyx.settings import load_profile

    class ElsterReader(Reader):  # answers "Elster" when its window mentions the river, else nothing
        reader_id = "elster-test"

        def answer(self, query, window):
            return "Elster" if any("Elster" in d.text for d in window) else ""

    root = tmp_path / "data"
    _convert("hotpotqa", FIXTURES / "hotpotqa", root / "benchmarks" / "hotpotqa")
    _convert("bamboogle", FIXTURES / "bamboogle", root / "benchmarks" / "bamboogle")
    profile = load_profile(
        "sample",
        {
            "eval": {
                "extra_sets": [
                    {"name": "hotpotqa", "path": "benchmarks/hotpotqa", "split": "dev"},
                    {"name": "bamboogle", "path": "benchmarks/bamboogle", "corpus": "benchmarks/hotpotqa"},
                ]
            }
        },
    )
    hotpot, bamboogle = profile.eval.extra_sets
    store = EmbeddingStore(tmp_path / "embeddings")
    made: list = []

    def minilm():
        made.append(create_retriever("minilm"))
        return made[-1]

    factories = {"bm25": lambda: create_retriever("bm25"), "minilm": minilm}
    report = evaluate_extra_set(hotpot, root, factories, store=store, reader=ElsterReader())
    s = report.summary()
    assert report.meta["set"] == "hotpotqa" and report.meta["corpus"] == 4 and report.meta["judged_queries"] == 2
    assert s["bm25"]["recall@10"] == 1.0 and s["minilm"]["recall@10"] == 1.0
    assert s["bm25"]["accuracy"] == 0.5 and s["oracle"]["accuracy"] == 0.5 and s["no_retrieval"]["accuracy"] == 0.0
    assert made[0].last_encode.to_dict()["encoded"] == 4
    evaluate_extra_set(hotpot, root, {"minilm": minilm}, store=store)
    assert made[1].last_encode.to_dict()["encoded"] == 0 and made[1].last_encode.to_dict()["reused"] == 4
    # Bamboogle: no judgements, answers only, from the corpus the profile names
    report = evaluate_extra_set(bamboogle, root, {"bm25": lambda: create_retriever("bm25")}, reader=ElsterReader())
    assert report.meta["judged_queries"] == 0 and report.summary()["bm25"]["accuracy"] == 0.0
    assert any("no relevance judgements" in n for n in report.notes)
    no_corpus = bamboogle.model_copy(update={"corpus": None})
    with pytest.raises(ValueError, match="its corpus is empty"):
        evaluate_extra_set(no_corpus, root, factories)
