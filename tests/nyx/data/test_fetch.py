"""Fetching OBELICS image URLs (nyx.data.fetch, the raw_images asset) against a local HTTP server on 127.0.0.1:
good images, 404s, 500s, a 500-then-200, slow and trickling responses, oversized bodies, an HTML page named .jpg,
one image under two URLs, a refused connection; the per-host rate limit; a fetch killed with SIGKILL resumes
without requesting again what it had; raw_images + raw_documents under dg.materialize."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from nyx.data.fetch import FetchConfig, fetch_raw_images, fetch_urls
from tests.paths import REPO


def _image(colour: tuple[int, int, int], fmt: str = "PNG", size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format=fmt)
    return buf.getvalue()


PNG = _image((200, 30, 30))
JPEG = _image((30, 200, 30), "JPEG")
DUP = _image((30, 30, 200))
FLAKY = _image((120, 120, 0))
HTML = b"<!doctype html><html><head><title>404 Not Found</title></head><body>Not found</body></html>"
BIG = 300_000


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.log: list[tuple[float, str]] = []  # (monotonic time the request arrived, path)
        self.released = threading.Event()  # ends the stalls
        self.stall = True  # /k/stall-* send half their body and hang while this is set

    def handle_error(self, request, client_address):  # clients that hang up on purpose (timeouts, size cap)
        pass

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def hits(self, since: int = 0) -> Counter:
        with self.lock:
            return Counter(p for _, p in self.log[since:])

    def mark(self) -> int:
        with self.lock:
            return len(self.log)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype: str = "image/png", status: int = 200, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        srv, path = self.server, self.path
        with srv.lock:
            srv.log.append((time.monotonic(), path))
            n = sum(1 for _, p in srv.log if p == path)
        if path == "/good.png":
            self._send(PNG)
        elif path == "/good.jpg":
            self._send(JPEG, "image/jpeg")
        elif path in ("/dup-a.png", "/dup-b.png"):
            self._send(DUP)
        elif path == "/missing.jpg":
            self._send(b"not here", "text/plain", 404)
        elif path == "/broken.png":
            self._send(b"oops", "text/plain", 500)
        elif path == "/flaky.png":  # 500 on the first request, then the image
            self._send(b"oops", "text/plain", 500) if n == 1 else self._send(FLAKY)
        elif path == "/slow.jpg":  # nothing at all for 3 s
            srv.released.wait(3)
            self._send(JPEG, "image/jpeg")
        elif path == "/trickle.png":  # headers at once, then one byte every 0.15 s: each read is quick, the whole slow
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            for b in PNG:
                if srv.released.wait(0.15):
                    return
                self.wfile.write(bytes([b]))
                self.wfile.flush()
        elif path == "/huge.png":  # declares its size
            self._send(b"\0" * BIG, length=BIG)
        elif path == "/huge-stream.png":  # no Content-Length: the body ends when the server closes
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(PNG[:100])
            for _ in range(BIG // 16384 + 1):
                self.wfile.write(b"\0" * 16384)
        elif path == "/page.jpg":  # an error page served as a JPEG
            self._send(HTML, "image/jpeg")
        elif path.startswith("/r/") or path.startswith("/k/fast-"):
            self._send(_image((len(path) * 7 % 256, int(path.rsplit("-", 1)[-1].split(".")[0]) * 20 % 256, 5)))
        elif path.startswith("/k/stall-"):
            body = _image((5, 5, int(path.rsplit("-", 1)[-1].split(".")[0]) * 30 % 256))
            if not srv.stall:
                return self._send(body)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.released.wait(30)
        else:
            self._send(b"no route", "text/plain", 404)


@pytest.fixture
def server():
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.released.set()
    srv.shutdown()
    srv.server_close()


def _refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/gone.png"


def _store_files(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if p.is_file())


def _tmp_files(store: Path) -> list[str]:
    tmp = store / ".fetch" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def _index(store: Path) -> dict[str, dict]:
    out = {}
    for line in (store / ".fetch" / "index.jsonl").read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[d["url"]] = d
    return out


FAULT_CFG = FetchConfig(
    concurrency=4,
    per_host_rate=0,
    timeout=0.6,
    retries=2,
    backoff=0.1,
    max_backoff=1.0,
    max_bytes=100_000,
    transient_runs=2,
)


def test_each_fault_gets_its_outcome_and_reason(server, tmp_path):
    store = tmp_path / "images"
    paths = [
        "/good.png",
        "/good.jpg",
        "/dup-a.png",
        "/dup-b.png",
        "/missing.jpg",
        "/broken.png",
        "/flaky.png",
        "/slow.jpg",
        "/trickle.png",
        "/huge.png",
        "/huge-stream.png",
        "/page.jpg",
    ]
    urls = {p: server.url(p) for p in paths}
    refused = _refused_url()
    res = fetch_urls([*urls.values(), refused], store, FAULT_CFG)
    r = {p: res[u] for p, u in urls.items()}
    hits = server.hits()

    # good images: content-addressed, extension sniffed from the bytes
    assert r["/good.png"].ok and r["/good.png"].file == hashlib.sha256(PNG).hexdigest() + ".png"
    assert (store / r["/good.png"].file).read_bytes() == PNG
    assert r["/good.jpg"].ok and r["/good.jpg"].file == hashlib.sha256(JPEG).hexdigest() + ".jpg"
    # one image under two URLs: stored once
    assert r["/dup-a.png"].ok and r["/dup-a.png"].file == r["/dup-b.png"].file
    assert _store_files(store) == sorted({r[p].file for p in ("/good.png", "/good.jpg", "/dup-a.png", "/flaky.png")})
    assert len(_store_files(store)) == 4
    # 4xx: final at once, never retried
    assert (r["/missing.jpg"].ok, r["/missing.jpg"].reason, r["/missing.jpg"].attempts) == (False, "http_404", 1)
    assert hits["/missing.jpg"] == 1
    # 5xx: retried with backoff, then given up
    assert (r["/broken.png"].reason, r["/broken.png"].attempts, hits["/broken.png"]) == ("http_500", 3, 3)
    t = [ts for ts, p in server.log if p == "/broken.png"]
    assert t[1] - t[0] >= 0.1 * 0.9 and t[2] - t[1] >= 0.2 * 0.9, t  # backoff 0.1 s, doubling
    # 500 then 200: a retry succeeds
    assert r["/flaky.png"].ok and r["/flaky.png"].attempts == 2 and hits["/flaky.png"] == 2
    # no response in time, and a response that trickles past the deadline (each read alone is quick)
    for p in ("/slow.jpg", "/trickle.png"):
        assert (r[p].reason, r[p].attempts, hits[p]) == ("timeout", 3, 3), (p, r[p])
    # over the size cap: declared, or found while streaming (aborted), never retried
    assert (r["/huge.png"].reason, hits["/huge.png"]) == ("too_large", 1) and "Content-Length" in r["/huge.png"].detail
    assert (r["/huge-stream.png"].reason, hits["/huge-stream.png"]) == ("too_large", 1)
    assert "aborted" in r["/huge-stream.png"].detail
    # an HTML error page served as image/jpeg with a .jpg name: sniffed, rejected
    assert (r["/page.jpg"].reason, hits["/page.jpg"]) == ("not_an_image", 1)
    assert "<!doctype html" in r["/page.jpg"].detail
    # nothing listening
    assert (res[refused].reason, res[refused].attempts) == ("connection_error", 3)
    # every outcome is in the index, no partial download is left
    assert set(_index(store)) == {*urls.values(), refused}
    assert _tmp_files(store) == []

    # a later run tries the transient failures again (transient_runs=2), and nothing else
    mark = server.mark()
    res2 = fetch_urls([*urls.values(), refused], store, FAULT_CFG)
    assert set(server.hits(mark)) == {"/broken.png", "/slow.jpg", "/trickle.png"}
    assert res2[refused].runs == 2 and res2[urls["/broken.png"]].runs == 2
    # ... and after transient_runs runs their failures are final: no request at all
    mark = server.mark()
    fetch_urls([*urls.values(), refused], store, FAULT_CFG)
    assert server.hits(mark) == Counter()


def test_per_host_rate_limit_spaces_requests(server, tmp_path):
    urls = [server.url(f"/r/img-{i}.png") for i in range(6)]
    res = fetch_urls(urls, tmp_path / "images", FetchConfig(concurrency=6, per_host_rate=10, retries=0, timeout=5))
    assert all(r.ok for r in res.values())
    times = sorted(ts for ts, p in server.log if p.startswith("/r/"))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 6
    assert min(gaps) >= 0.1 * 0.75, gaps  # 10 requests/s to 127.0.0.1, with six workers free to go at once
    assert times[-1] - times[0] >= 5 * 0.1 * 0.9, gaps


_KILLED_FETCH = """
import json, sys
from nyx.data.fetch import FetchConfig, fetch_urls
fetch_urls(json.loads(sys.argv[1]), sys.argv[2], FetchConfig(concurrency=2, per_host_rate=0, timeout=30, retries=0))
"""


def test_killed_fetch_resumes_without_refetching(server, tmp_path):
    store = tmp_path / "images"
    fast1 = [server.url(f"/k/fast-{i}.png") for i in range(6)]
    stall = [server.url(f"/k/stall-{i}.png") for i in range(3)]
    fast2 = [server.url(f"/k/fast-{i}.png") for i in range(6, 9)]
    urls = fast1 + stall + fast2  # two workers: the first six finish, then both workers hang mid-body on stalls
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_FETCH, json.dumps(urls), str(store)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            index = store / ".fetch" / "index.jsonl"
            done = len(index.read_text().splitlines()) if index.is_file() else 0
            if done >= 6 and len(list((store / ".fetch" / "tmp").glob("*.part"))) >= 2:
                break
            assert proc.poll() is None, "the fetch ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the fetch never reached the stalled downloads")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    completed = {u for u, d in _index(store).items() if d["ok"]}
    assert completed == set(fast1)
    assert len(_tmp_files(store)) >= 2  # the kill left partial downloads behind
    first_files = {u: _index(store)[u]["file"] for u in completed}

    server.stall = False
    mark = server.mark()
    res = fetch_urls(urls, store, FetchConfig(concurrency=2, per_host_rate=0, timeout=10, retries=0))
    again = server.hits(mark)
    assert not {server.url(p) for p in again} & completed, again  # nothing completed was requested again
    assert {server.url(p) for p in again} == set(stall + fast2) and set(again.values()) == {1}
    assert all(r.ok for r in res.values())
    assert {u: res[u].file for u in completed} == first_files
    assert _tmp_files(store) == []  # the killed run's partial downloads were cleaned up
    assert not list(store.rglob("*.part"))
    assert len(_store_files(store)) == len(urls)
    for u in fast1:  # each completed URL was requested once over both runs
        assert server.hits()[u.split(str(server.server_address[1]))[1]] == 1


def test_jsonl_shard_is_rewritten_with_rejects_and_resolved_again_only_when_an_outcome_changes(server, tmp_path):
    from nyx.data.obelics import read_obelics
    from nyx.data.rejects import RejectLog

    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [
        {"id": "a", "texts": ["alpha", None], "images": [None, server.url("/good.png")]},
        {"texts": ["dead link", None], "images": [None, server.url("/missing.jpg")]},
        "not json at all",
        {"texts": ["text only"], "images": [None]},
        {"texts": [None, "two images"], "images": [{"path": server.url("/dup-a.png"), "bytes": None}, None]},
        {"texts": [None], "images": ["//127.0.0.1:1/protocol-relative.png"]},
    ]
    shard = raw / "web-00000.jsonl"
    shard.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    delivered = shard.read_bytes()
    cfg = FetchConfig(per_host_rate=0, retries=0, timeout=2)
    [rep] = fetch_raw_images(raw, tmp_path / "rejects", cfg)
    assert (rep.status, rep.urls, rep.stored, rep.failed, rep.documents, rep.dropped) == ("resolved", 4, 2, 2, 6, 2)
    assert rep.reasons == {"http_404": 1, "connection_error": 1}
    assert (raw / "remote" / shard.name).read_bytes() == delivered  # kept as delivered
    rejects = RejectLog()
    docs = read_obelics(shard, rejects)
    # ids are those ingestion gave the delivered shard: dropping rows 1 and 5 renumbers nothing
    assert [d.id for d in docs] == ["a", "web-00000-3", "web-00000-4"]
    assert [i["reason"][:14] for i in rejects.items] == ["malformed JSON"]  # the bad line, left for ingestion
    assert docs[0].images == [str(raw / "images" / (hashlib.sha256(PNG).hexdigest() + ".png"))]
    assert docs[2].images == [str(raw / "images" / (hashlib.sha256(DUP).hexdigest() + ".png"))]
    dropped = [json.loads(x) for x in (tmp_path / "rejects" / "web-00000.jsonl").read_text().splitlines()]
    assert [(d["record_id"], d["location"]) for d in dropped] == [
        ("web-00000-1", "web-00000.jsonl:1"),
        ("web-00000-5", "web-00000.jsonl:5"),
    ]
    assert dropped[0]["reason"].startswith(f"unfetchable image (http_404): {server.url('/missing.jpg')}")
    failed = {d["url"]: d for d in map(json.loads, (tmp_path / "rejects" / "web-00000.urls.jsonl").open())}
    assert failed[server.url("/missing.jpg")]["documents"] == ["web-00000-1"]
    assert failed["https://127.0.0.1:1/protocol-relative.png"]["reason"] == "connection_error"
    report = json.loads((tmp_path / "rejects" / "web-00000.report.json").read_text())
    assert report["reasons"] == rep.reasons

    # again: nothing requested, the shard is left as it is (only the transient URL is tried again)
    resolved = shard.read_bytes()
    mark = server.mark()
    [rep2] = fetch_raw_images(raw, tmp_path / "rejects", cfg)
    assert rep2.status == "unchanged" and server.hits(mark) == Counter() and rep2.requested == 1
    assert shard.read_bytes() == resolved
    # a shard the user replaced (no URLs) is never overwritten from the kept original
    shard.write_text(json.dumps({"id": "mine", "texts": ["mine"], "images": [None]}) + "\n")
    [rep3] = fetch_raw_images(raw, tmp_path / "rejects", cfg)
    assert rep3.status == "local" and "mine" in shard.read_text()


def test_raw_images_then_raw_documents_materialise(server, tmp_path):
    import dagster as dg

    from assets.fetch import raw_images
    from assets.raw import raw_documents
    from nyx.data.obelics import write_obelics_parquet
    from nyx.data.records import read_jsonl
    from orchestration.resources import DvcResource, NyxSettings

    raw = tmp_path / "data" / "raw"
    write_obelics_parquet(
        [
            {"id": "a", "texts": ["alpha", None], "images": [None, server.url("/good.png")]},
            {"texts": ["dead link", None], "images": [None, server.url("/missing.jpg")]},
            {"texts": ["text only"], "images": [None]},
            {"texts": [None, "beta", None], "images": [server.url("/dup-a.png"), None, server.url("/good.jpg")]},
        ],
        raw / "web-00000.parquet",
    )
    resources = {
        "settings": NyxSettings(
            profile="sample",
            data_dir=str(tmp_path / "data"),
            overrides={"fetch": {"per_host_rate": 0, "retries": 0, "timeout": 5}},
        ),
        "dvc": DvcResource(repo_dir=str(tmp_path)),
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([raw_images, raw_documents], instance=instance, resources=resources)
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("raw_images")[0].metadata.items()}
    assert meta["status"] == "fetched" and meta["failed_by_reason"] == {"http_404": 1}
    assert (meta["urls"], meta["stored"], meta["documents_dropped"]) == (4, 3, 1)
    docs = read_jsonl(tmp_path / "data" / "documents" / "web-00000.jsonl")
    assert [d.id for d in docs] == ["a", "web-00000-2", "web-00000-3"]
    store = raw / "images"
    assert docs[2].images == [
        str(store / (hashlib.sha256(DUP).hexdigest() + ".png")),
        str(store / (hashlib.sha256(JPEG).hexdigest() + ".jpg")),
    ]
    dropped = (tmp_path / "data" / "rejects" / "raw_images" / "web-00000.jsonl").read_text()
    assert "web-00000-1" in dropped and "http_404" in dropped and server.url("/missing.jpg") in dropped
    # a second materialisation requests nothing
    mark = server.mark()
    result = dg.materialize([raw_images, raw_documents], instance=instance, resources=resources)
    assert result.success and server.hits(mark) == Counter()
    meta = {k: v.value for k, v in result.asset_materializations_for_node("raw_images")[0].metadata.items()}
    assert meta["requested"] == 0


def test_raw_images_is_a_no_op_on_the_bundled_sample(tmp_path):
    import dagster as dg

    from assets.fetch import raw_images
    from nyx.data.sample import generate_sample
    from nyx.versioning.dvc import dvc_md5
    from orchestration.resources import NyxSettings

    raw = tmp_path / "data" / "raw"
    generate_sample(raw, n_docs=12, seed=3, n_shards=1)
    before = dvc_md5(raw)
    result = dg.materialize(
        [raw_images], resources={"settings": NyxSettings(profile="sample", data_dir=str(tmp_path / "data"))}
    )
    meta = result.asset_materializations_for_node("raw_images")[0].metadata
    assert meta["status"].value == "no remote images"
    assert dvc_md5(raw) == before and not (raw / "images" / ".fetch").exists()


def test_raw_images_fails_when_nothing_can_be_fetched_for_a_transient_reason(tmp_path):
    import dagster as dg

    from assets.fetch import raw_images
    from nyx.data.obelics import write_obelics_parquet
    from orchestration.resources import NyxSettings

    write_obelics_parquet(
        [{"id": "x", "texts": [None], "images": [_refused_url()]}], tmp_path / "data" / "raw" / "web-00000.parquet"
    )
    settings = NyxSettings(
        profile="sample",
        data_dir=str(tmp_path / "data"),
        overrides={"fetch": {"per_host_rate": 0, "retries": 0, "timeout": 2}},
    )
    result = dg.materialize([raw_images], resources={"settings": settings}, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "is the network reachable" in failure.step_failure_data.error.message
