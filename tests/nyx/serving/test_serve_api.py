"""`nyx serve`: the search API over a retriever folder and over a registry alias, on the tiny model.

Rankings equal `nyx search` / `retriever.search` for every query of a small BEIR folder (nyx and bm25); a registry
alias serves text and text+image queries and, when it moves, swaps the new version in while a client keeps querying
without a failed request; bad requests get a 4xx naming the field and the worker goes on; NYX_API_KEY makes every
endpoint but /health answer 401 without the bearer token; concurrent queries share encoder calls and get the results
they would get alone.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from nyx.data.records import Part, Record, read_jsonl
from nyx.data.rejects import RecordError
from nyx.serving import CORPUS_PATH_TAG, INDEX_DIR_TAG, ServeError, ServeSettings, create_app
from tests.nyx.cli.test_cli import CORPUS as CLI_CORPUS
from tests.paths import REPO

MODEL = "nyx-retriever"

CORPUS = [
    *CLI_CORPUS,  # the CLI tests' corpus, so that `nyx search` and `/search` are compared on the same documents
    {"id": "harbour", "content": [{"type": "text", "text": "Fishing boats return to the harbour before the storm."}]},
    {
        "id": "bridge",
        "content": [
            {"type": "text", "text": "The red bridge of Alder crosses the river near the mill."},
            {"type": "image", "image": "images/red.png"},
        ],
    },
]
QUERIES = [
    {"id": "q1", "content": [{"type": "text", "text": "who climbed the lighthouse stairs"}]},
    {
        "id": "q2",
        "content": [{"type": "text", "text": "volcano eruption ash"}, {"type": "image", "image": "images/red.png"}],
    },
    {"id": "q3", "content": [{"type": "image", "image": "images/green.png"}]},
    {
        "id": "q4",
        "content": [{"type": "text", "text": "which bread is baked in the village"}],
        "choices": ["sourdough", "rye", "baguette", "brioche"],
    },
    {"id": "q5", "content": [{"type": "text", "text": "boats in the harbour storm"}]},
]
QRELS = [("q1", "lighthouse"), ("q2", "volcano"), ("q3", "picture"), ("q4", "bakery"), ("q5", "harbour")]
TEXT = [{"type": "text", "text": "the red bridge over the river"}]


def png_data_url(size=(64, 48), colour=(200, 30, 30), noise: bool = False) -> str:
    if noise:
        arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
    else:
        img = Image.new("RGB", size, colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def as_request_content(record: Record) -> list[dict]:
    """A record's parts as an API client sends them: image files become data: URLs."""
    out = []
    for p in record.content:
        if p.type == "text":
            out.append({"type": "text", "text": p.text})
        else:
            data = Path(p.image).read_bytes()
            out.append({"type": "image", "image": "data:image/png;base64," + base64.b64encode(data).decode()})
    return out


def ranked(run_for_query: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(run_for_query.items(), key=lambda kv: -kv[1])


def assert_same_ranking(hits: list[dict], expected: list[tuple[str, float]]) -> None:
    assert [h["id"] for h in hits] == [d for d, _ in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("beir")
    (folder / "images").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "images" / "red.png")
    Image.new("RGB", (40, 60), (30, 160, 60)).save(folder / "images" / "green.png")
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS))
    return folder


def _build(
    kind: str,
    beir: Path,
    out: Path,
    tiny_dir: Path | None = None,
    version: str | None = None,
    index_dim: int | None = None,
) -> Path:
    from nyx.retrieval import BM25Retriever, DenseConfig, NyxRetriever

    if kind == "bm25":
        r = BM25Retriever()
    else:
        r = NyxRetriever(model=str(tiny_dir), mlflow_model_version=version, config=DenseConfig(index_dim=index_dim))
    r.index(read_jsonl(beir / "corpus.jsonl"))
    r.save(out)
    return out


@pytest.fixture(scope="module")
def indexes(beir, tiny_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("indexes")
    return {"nyx": _build("nyx", beir, root / "nyx", tiny_dir), "bm25": _build("bm25", beir, root / "bm25")}


@pytest.fixture(scope="module")
def changed_corpus(beir) -> Path:
    """The corpus with one document edited after indexing (image paths still relative to the BEIR folder)."""
    path = beir / "corpus-edited.jsonl"
    edited = [
        r if r["id"] != "chess" else {**r, "content": [{"type": "text", "text": "A different game."}]} for r in CORPUS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in edited))
    return path


@pytest.fixture(scope="module")
def registry(beir, tiny_dir, tmp_path_factory, changed_corpus):
    """A sqlite registry: v1 (index at 128 dims, corpus tag), v2 (index at 64 dims, tagged with a corpus that is not
    its own), v3 (tagged with v1's index), v4 (no index tag). Aliases: champion -> v1."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model(MODEL)
    v1 = _build("nyx", beir, root / "index-v1", tiny_dir, version="1")
    v2 = _build("nyx", beir, root / "index-v2", tiny_dir, version="2", index_dim=64)
    tags = [
        {INDEX_DIR_TAG: str(v1), CORPUS_PATH_TAG: str(beir)},
        {INDEX_DIR_TAG: str(v2), CORPUS_PATH_TAG: str(changed_corpus)},
        {INDEX_DIR_TAG: str(v1)},
        {},
    ]
    for t in tags:
        c.create_model_version(MODEL, source=str(tiny_dir), tags=t)
    c.set_registered_model_alias(MODEL, "champion", "1")
    return {"uri": uri, "client": c, "v1": v1, "v2": v2}


def _load(folder: Path):
    from nyx.retrieval import load_retriever

    r = load_retriever(folder)
    r.load_models()
    return r


def _wrap_encoder(app, poison: str | None = None) -> list[int]:
    """Count the served retriever's query-encoder calls (batch sizes); a record whose text holds ``poison`` makes
    the call fail as an undecodable record would."""
    enc = app.state.service.current.retriever.encoder
    original = enc.encode_queries
    calls: list[int] = []

    def counting(records, *args, **kwargs):
        records = list(records)
        calls.append(len(records))
        if poison and any(poison in r.text for r in records):
            bad = next(r for r in records if poison in r.text)
            raise RecordError("undecodable image: poisoned for the test", record_id=bad.id)
        return original(records, *args, **kwargs)

    enc.encode_queries = counting
    return calls


# ------------------------------------------------------------------------------------------------ (1) same ranking


@pytest.mark.parametrize("kind", ["nyx", "bm25"])
def test_search_ranks_every_beir_query_like_nyx_search(kind, indexes, beir):
    from typer.testing import CliRunner

    from nyx.cli import app as cli

    folder = indexes[kind]
    retriever = _load(folder)
    queries = read_jsonl(beir / "queries.jsonl")
    n = len(CORPUS)
    with TestClient(create_app(folder, corpus=beir)) as client:
        for q in queries:
            body = {"content": as_request_content(q), "k": n}
            if "choices" in q.extra:
                body["choices"] = q.extra["choices"]
            res = client.post("/search", json=body)
            assert res.status_code == 200, res.text
            out = res.json()
            assert out["retriever"] == kind and out["dim"] == (128 if kind == "nyx" else None)
            # what `nyx search` and `nyx evaluate` compute: the retriever's own search of that query record
            assert_same_ranking(out["hits"], ranked(retriever.search([q], k=n).get(q.id, {})))
        # and `nyx search` itself, on a text+image query
        res = client.post("/search", json={"content": as_request_content(queries[1]), "k": 3, "return_documents": True})
        cli_out = CliRunner().invoke(
            cli,
            [
                "search",
                str(folder),
                "--text",
                "volcano eruption ash",
                "--image",
                str(beir / "images" / "red.png"),
                "-k",
                "3",
            ],
        )
        assert cli_out.exit_code == 0, cli_out.output
        want = [(r["id"], r["score"]) for r in json.loads(cli_out.stdout)["results"]]
        assert_same_ranking(res.json()["hits"], want)
        by_id = {r["id"]: r for r in CORPUS}
        for hit in res.json()["hits"]:  # documents as written in the corpus (image paths relative to it)
            assert hit["document"] == by_id[hit["id"]]


# ------------------------------------------------------------------------------------------------ (2) registry


def test_registry_alias_answers_text_and_text_image_queries(registry, beir):
    app = create_app(f"models:/{MODEL}@champion", settings=ServeSettings(poll_seconds=0), tracking_uri=registry["uri"])
    v1 = _load(registry["v1"])
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["model_version"] == "1" and health["model_name"] == MODEL and health["alias"] == "champion"
        assert health["index_size"] == len(CORPUS) and health["dims"] == [128, 64, 32, 16]
        assert health["index_dir"] == str(registry["v1"]) and health["corpus_hash"] and health["documents"]
        image = png_data_url()
        for content in (TEXT, TEXT + [{"type": "image", "image": image}]):
            res = client.post("/search", json={"content": content, "k": 4, "dim": 32, "return_documents": True})
            assert res.status_code == 200, res.text
            out = res.json()
            assert out["model_version"] == "1" and out["dim"] == 32
            query = Record(
                id="q",
                content=[
                    Part.of_text(p["text"]) if p["type"] == "text" else Part.of_image(p["image"]) for p in content
                ],
            )
            assert_same_ranking(out["hits"], ranked(v1.search([query], k=4, dim=32)["q"]))
            assert all(h["document"]["id"] == h["id"] for h in out["hits"])  # nyx.corpus_path tag
        emb = client.post("/embed", json={"content": TEXT, "dim": 16}).json()
        assert emb["dim"] == 16 and len(emb["embedding"]) == 16
        assert np.linalg.norm(emb["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_registry_versions_without_an_index_or_with_another_versions_index_are_refused(registry):
    uri = registry["uri"]
    with pytest.raises(ServeError, match=rf"{MODEL}/4 has no '{INDEX_DIR_TAG}' tag"):
        create_app(f"models:/{MODEL}/4", tracking_uri=uri)
    with pytest.raises(ServeError) as e:
        create_app(f"models:/{MODEL}/3", tracking_uri=uri)
    message = str(e.value)
    assert f"{MODEL}/3" in message and str(registry["v1"]) in message and "built for version 1" in message
    with pytest.raises(ServeError, match="cannot resolve"):
        create_app(f"models:/{MODEL}@nobody", tracking_uri=uri)
    with pytest.raises(ServeError, match="bad registry URI"):
        create_app("models:/only-a-name", tracking_uri=uri)


# ------------------------------------------------------------------------------------------------ (3) hot swap


def _query_until(client, stop: threading.Event, seen: list) -> None:
    while not stop.is_set():
        res = client.post("/search", json={"content": TEXT, "k": 3})
        seen.append((res.status_code, res.json().get("model_version"), res.text[:300]))


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_moving_the_alias_swaps_the_new_version_in_without_failing_a_request(registry):
    c = registry["client"]
    c.set_registered_model_alias(MODEL, "swap", "1")
    app = create_app(f"models:/{MODEL}@swap", settings=ServeSettings(poll_seconds=0.2), tracking_uri=registry["uri"])
    seen: list = []
    stop = threading.Event()
    with TestClient(app) as client:
        worker = threading.Thread(target=_query_until, args=(client, stop, seen))
        worker.start()
        try:
            _wait_for(lambda: len(seen) >= 3)
            c.set_registered_model_alias(MODEL, "swap", "2")  # promote another version while querying
            _wait_for(lambda: any(v == "2" for _, v, _ in seen))
            n = len(seen)
            _wait_for(lambda: len(seen) >= n + 3)
        finally:
            stop.set()
            worker.join(30)
        health = client.get("/health").json()
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:3]
    versions = [v for _, v, _ in seen]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions), "a request went back to the old version after the swap"
    assert health["model_version"] == "2" and health["dims"] == [64, 32, 16] and health["hot_swap"]["swaps"] == 1
    # v2's nyx.corpus_path names an edited corpus: served, but without documents, and /health says why
    assert health["documents"] is False and "differs from the corpus" in health["documents_error"]


def test_an_explicit_corpus_that_is_not_the_indexed_one_is_refused(indexes, changed_corpus, tmp_path):
    with pytest.raises(ServeError, match="differs from the corpus the index .* was built from"):
        create_app(indexes["nyx"], corpus=changed_corpus)
    with pytest.raises(ServeError, match="corpus not found"):
        create_app(indexes["bm25"], corpus=tmp_path / "nothing.jsonl")


def test_a_version_that_cannot_be_loaded_is_reported_and_the_old_one_keeps_serving(registry):
    c = registry["client"]
    c.set_registered_model_alias(MODEL, "broken", "1")
    app = create_app(f"models:/{MODEL}@broken", settings=ServeSettings(poll_seconds=0.1), tracking_uri=registry["uri"])
    with TestClient(app) as client:
        c.set_registered_model_alias(MODEL, "broken", "4")  # no index tag
        _wait_for(lambda: (client.get("/health").json()["hot_swap"]["last_error"] or {}).get("version") == "4")
        health = client.get("/health").json()
        assert health["model_version"] == "1" and INDEX_DIR_TAG in health["hot_swap"]["last_error"]["error"]
        res = client.post("/search", json={"content": TEXT, "k": 2})
        assert res.status_code == 200 and res.json()["model_version"] == "1"


# ------------------------------------------------------------------------------------------------ (4) bad requests

BIG_PIXELS = png_data_url(size=(1500, 1000))  # small file (one colour), 1.5 M pixels
BIG_BYTES = png_data_url(size=(200, 200), noise=True)  # ~120 kB of noise, few pixels


@pytest.mark.parametrize(
    "body, status, field",
    [
        ('{"content": [{"type": "text", "text": "x"}', 400, "body"),  # malformed JSON
        ([1, 2], 422, "body"),
        ({"k": 3}, 422, "content"),
        ({"content": []}, 422, "content"),
        ({"content": "just a string"}, 422, "content"),
        ({"content": [{"type": "video", "video": "v.mp4"}]}, 422, "content[0].type"),
        ({"content": [{"type": "text", "text": "x"}, "not a part"]}, 422, "content[1]"),
        ({"content": [{"type": "text", "text": 42}]}, 422, "content[0].text"),
        ({"content": [{"type": "text", "text": "   "}]}, 422, "content"),
        ({"content": [{"type": "image", "image": "data:image/png;base64,bm90IGFuIGltYWdl"}]}, 422, "content[0].image"),
        ({"content": [{"type": "image", "image": "/etc/hostname"}]}, 422, "content[0].image"),
        ({"content": [{"type": "text", "text": "x"}, {"type": "image", "image": BIG_PIXELS}]}, 413, "content[1].image"),
        ({"content": [{"type": "image", "image": BIG_BYTES}]}, 413, "content[0].image"),
        ({"content": TEXT, "k": 0}, 422, "k"),
        ({"content": TEXT, "k": 51}, 422, "k"),
        ({"content": TEXT, "k": "5"}, 422, "k"),
        ({"content": TEXT, "dim": 0}, 422, "dim"),
        ({"content": TEXT, "dim": 256}, 422, "dim"),
        ({"content": TEXT, "return_documents": True}, 400, "return_documents"),  # no corpus given
        ({"content": TEXT, "top_k": 5}, 422, "top_k"),
        ({"content": [{"type": "text", "text": "x" * 300_000}]}, 413, "body"),
    ],
)
def test_bad_requests_name_the_field_and_the_worker_survives(indexes, body, status, field):
    settings = ServeSettings(max_request_bytes=250_000, max_image_bytes=60_000, max_image_pixels=1_000_000, max_k=50)
    with TestClient(create_app(indexes["nyx"], settings=settings)) as client:
        if isinstance(body, str):
            res = client.post("/search", content=body, headers={"content-type": "application/json"})
        else:
            res = client.post("/search", json=body)
        assert res.status_code == status, res.text
        detail = res.json()
        assert detail["field"] == field and detail["detail"].startswith(f"{field}: "), detail
        good = client.post("/search", json={"content": TEXT, "k": 2})
        assert good.status_code == 200 and len(good.json()["hits"]) == 2


def test_a_body_over_the_limit_is_refused_with_or_without_a_content_length(indexes):
    body = json.dumps({"content": [{"type": "text", "text": "x" * 5000}]}).encode()
    with TestClient(create_app(indexes["bm25"], settings=ServeSettings(max_request_bytes=4000))) as client:
        declared = client.post("/search", content=body, headers={"content-type": "application/json"})
        chunked = client.post(
            "/search", content=iter([body[:3000], body[3000:]]), headers={"content-type": "application/json"}
        )
        for res in (declared, chunked):
            assert res.status_code == 413 and res.json()["field"] == "body", res.text
        assert "content-length" not in chunked.request.headers  # the guard counted the bytes itself
        assert client.post("/search", json={"content": TEXT, "k": 1}).status_code == 200


def test_bm25_refuses_dim_and_embed_with_a_reason(indexes):
    with TestClient(create_app(indexes["bm25"])) as client:
        res = client.post("/search", json={"content": TEXT, "dim": 64})
        assert res.status_code == 422 and res.json()["field"] == "dim" and "bm25" in res.json()["detail"]
        res = client.post("/embed", json={"content": TEXT})
        assert res.status_code == 400 and "no embeddings" in res.json()["detail"]
        assert client.post("/search", json={"content": TEXT, "k": 2}).status_code == 200


def test_a_record_the_encoder_rejects_fails_only_its_own_request_in_a_batch(indexes):
    app = create_app(indexes["nyx"], settings=ServeSettings(batch_window_ms=400, max_batch=8))
    with TestClient(app) as client:
        calls = _wrap_encoder(app, poison="POISON")
        texts = ["lighthouse stairs", "POISON query", "sourdough bread", "volcano ash"]
        results: dict[str, object] = {}
        barrier = threading.Barrier(len(texts))

        def ask(text):
            barrier.wait()
            results[text] = client.post("/search", json={"content": [{"type": "text", "text": text}], "k": 3})

        threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results["POISON query"].status_code == 422
        assert "poisoned" in results["POISON query"].json()["detail"]
        assert calls[0] == len(texts), calls  # they were one batch, and the bad record was bisected out
        alone = _load(indexes["nyx"])
        for text in texts:
            if text != "POISON query":
                assert results[text].status_code == 200, results[text].text
                want = ranked(alone.search([Record.from_text("q", text)], k=3)["q"])
                assert_same_ranking(results[text].json()["hits"], want)
        assert client.post("/search", json={"content": TEXT, "k": 2}).status_code == 200


# ------------------------------------------------------------------------------------------------ (5) API key


def test_api_key_from_the_environment_guards_every_endpoint_but_health(indexes, monkeypatch):
    monkeypatch.setenv("NYX_API_KEY", "s3cret-key")
    with TestClient(create_app(indexes["nyx"])) as client:
        for path, kwargs in (
            ("/search", {"json": {"content": TEXT, "k": 2}}),
            ("/embed", {"json": {"content": TEXT}}),
            ("/docs", {}),
            ("/openapi.json", {}),
        ):
            method = client.post if "json" in kwargs else client.get
            assert method(path, **kwargs).status_code == 401, path
            wrong = method(path, headers={"Authorization": "Bearer nope"}, **kwargs)
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer", path
            right = method(path, headers={"Authorization": "Bearer s3cret-key"}, **kwargs)
            assert right.status_code == 200, (path, right.text)
        assert client.get("/health").status_code == 200
    monkeypatch.delenv("NYX_API_KEY")
    with TestClient(create_app(indexes["nyx"])) as client:  # no key set: open
        assert client.post("/search", json={"content": TEXT, "k": 2}).status_code == 200


# ------------------------------------------------------------------------------------------------ (6) batching


def _concurrent(client, texts: list[str]) -> list:
    out: list = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def ask(i):
        barrier.wait()
        out[i] = client.post("/search", json={"content": [{"type": "text", "text": texts[i]}], "k": 3})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_queries_share_encoder_calls_and_get_their_unbatched_results(indexes):
    texts = [
        "lighthouse keeper",
        "sourdough bread",
        "chess queen",
        "volcano ash",
        "greenhouse tomatoes",
        "harbour boats",
        "red bridge river",
        "spiral stairs at dusk",
    ]
    batched_app = create_app(indexes["nyx"], settings=ServeSettings(batch_window_ms=300, max_batch=16))
    with TestClient(batched_app) as client:
        calls = _wrap_encoder(batched_app)
        batched = _concurrent(client, texts)
        stats = client.get("/health").json()["batching"]
    assert all(r.status_code == 200 for r in batched), [r.text for r in batched if r.status_code != 200]
    assert sum(calls) == len(texts) and len(calls) < len(texts), calls
    assert stats["largest_batch"] > 1

    unbatched_app = create_app(indexes["nyx"], settings=ServeSettings(batch_window_ms=0))
    with TestClient(unbatched_app) as client:
        calls = _wrap_encoder(unbatched_app)
        alone = _concurrent(client, texts)
    assert calls == [1] * len(texts)
    for b, a in zip(batched, alone):
        assert_same_ranking(b.json()["hits"], [(h["id"], h["score"]) for h in a.json()["hits"]])


# ------------------------------------------------------------------------------------------------ the command


def test_nyx_serve_command_serves_on_127_0_0_1(indexes):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NYX_API_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nyx.cli", "serve", str(indexes["bm25"]), "--port", str(port), "--batch-window-ms", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.2)
        assert health.json()["retriever"] == "bm25" and health.json()["index_size"] == len(CORPUS)
        res = httpx.post(f"http://127.0.0.1:{port}/search", json={"content": TEXT, "k": 1})
        assert res.status_code == 200 and res.json()["hits"][0]["id"] == "bridge"
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_nyx_serve_refuses_a_folder_that_is_not_an_index(tmp_path):
    from typer.testing import CliRunner

    from nyx.cli import app as cli

    res = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert res.exit_code == 1 and "not a Nyx index folder" in res.stderr
