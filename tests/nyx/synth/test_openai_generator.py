"""The ``openai`` generator over real HTTP against a small chat-completions server on 127.0.0.1.

The server (started in a thread) speaks the wire format, counts requests and can be told to answer the
next requests with 429, 500, a delay longer than the client timeout, malformed model output, or a broken
envelope. Checks: retries and back-off, Retry-After, the response cache across generator instances (a
resumed run sends no request twice), bounded concurrency, images as data URLs, and that the API key never
reaches logs, cache files, stats or records.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from nyx.data.records import Part, Record
from nyx.synth.generators import GeneratorUnavailable, make_generator
from nyx.synth.qa import synthesize_qa

KEY_ENV = "NYX_TEST_LLM_KEY"
SECRET = "sk-test-5up3r-s3cr3t-k3y-0123456789"

QA_REPLY = {
    "qa": [
        {
            "question": "In which year was the Golden Gate Bridge painted orange?",
            "answer": "It was painted in 1937",
            "images": [],
        },
        {"question": "What does the passage say about steel?", "answer": "83,000 tons", "images": []},
    ]
}
REFINE_REPLY = {"qa": [{"id": 0, "question": "ignored", "answer": "1937", "images": []}]}


class FakeLLM:
    """A chat-completions endpoint with a script of failures; answers by prompt type otherwise."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    action = fake.actions.pop(0) if fake.actions else "ok"
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake.respond(self, action, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def respond(self, h: BaseHTTPRequestHandler, action: str, body: dict) -> None:
        if self.delay:
            time.sleep(self.delay)
        if action == "429":
            return self._send(h, 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.3"})
        if action == "500":
            return self._send(h, 500, {"error": {"message": "boom"}})
        if action == "sleep":
            time.sleep(1.2)
            return self._send(h, 200, self._completion(body, "{}"))
        if action == "401":
            return self._send(h, 401, {"error": {"message": "bad key"}})
        if action == "400-echo":  # a careless server that echoes the credentials back
            return self._send(h, 400, {"error": {"message": f"bad request from {h.headers.get('Authorization')}"}})
        if action == "garbage":
            return self._send(h, 200, self._completion(body, "I am sorry, I cannot produce JSON today."))
        if action == "envelope":
            return self._send(h, 200, {"unexpected": True})
        return self._send(h, 200, self._completion(body, self._reply(body)))

    @staticmethod
    def _reply(body: dict) -> str:
        text = "\n".join(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
        if text.startswith("You check question-answer pairs"):
            return json.dumps(REFINE_REPLY)
        if text.startswith("You write multiple-choice options"):
            return json.dumps({"distractors": ["1936", "1938", "1937", "1940"]})
        if text.startswith("Answer the question"):
            return "1937"
        return "```json\n" + json.dumps(QA_REPLY) + "\n```"

    @staticmethod
    def _completion(body: dict, content: str) -> dict:
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture()
def llm():
    server = FakeLLM()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def _gen(llm, cache_dir=None, **overrides):
    settings = {
        "base_url": llm.url,
        "model": "test-vlm",
        "api_key_env": KEY_ENV,
        "timeout_s": 0.5,
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "concurrency": 1,
        "cache_dir": str(cache_dir) if cache_dir else None,
        **overrides,
    }
    return make_generator({"kind": "openai", "openai": settings})


CHUNK = Record.from_text(
    "docA#c0", "The Golden Gate Bridge was painted orange in 1937. Its towers used 83,000 tons of steel."
)


def _check_result(pairs):
    assert [(p.question, p.answer) for p in pairs] == [
        ("In which year was the Golden Gate Bridge painted orange?", "1937")
    ]


def test_full_qa_pass_sends_first_pass_then_refine_with_the_bearer_key(llm):
    gen = _gen(llm)
    _check_result(gen.qa_for_chunk(CHUNK))
    assert llm.count == 2
    first, second = llm.requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {SECRET}"
    assert first["body"]["model"] == "test-vlm" and first["body"]["temperature"] == 0.0
    assert "You write questions" in first["body"]["messages"][0]["content"][0]["text"]
    assert "You check question-answer pairs" in second["body"]["messages"][0]["content"][0]["text"]
    stats = gen.stats.as_dict()
    assert stats["refine_deleted"] == 1 and stats["usage.prompt_tokens"] == 20


def test_429_is_retried_after_the_servers_retry_after(llm):
    llm.actions = ["429"]
    gen = _gen(llm)
    t0 = time.perf_counter()
    _check_result(gen.qa_for_chunk(CHUNK))
    assert time.perf_counter() - t0 >= 0.3  # Retry-After: 0.3 honoured (back-off alone would be <= 0.05 s)
    assert llm.count == 3
    assert gen.stats.get("retries.HTTP 429") == 1 and gen.stats.get("request_failed") == 0


def test_500_is_retried_with_backoff(llm):
    llm.actions = ["500", "500"]
    gen = _gen(llm)
    _check_result(gen.qa_for_chunk(CHUNK))
    assert llm.count == 4 and gen.stats.get("retries.HTTP 500") == 2


def test_a_timeout_is_retried(llm):
    llm.actions = ["sleep"]
    gen = _gen(llm, timeout_s=0.4)
    _check_result(gen.qa_for_chunk(CHUNK))
    assert gen.stats.get("retries.timeout") == 1 and llm.count == 3


def test_a_call_that_keeps_failing_is_counted_not_fatal(llm):
    llm.actions = ["500"] * 4
    gen = _gen(llm, max_retries=3)
    assert gen.qa_for_chunk(CHUNK) == []
    assert gen.stats.get("request_failed") == 1 and llm.count == 4


def test_malformed_model_output_is_counted_and_dropped(llm):
    llm.actions = ["garbage", "envelope"]
    gen = _gen(llm)
    assert gen.qa_for_chunk(CHUNK) == []  # not JSON
    assert gen.qa_for_chunk(CHUNK) == []  # no choices in the envelope
    stats = gen.stats.as_dict()
    assert stats["unparseable.qa"] == 1 and stats["bad_response"] == 1
    _check_result(gen.qa_for_chunk(CHUNK))  # and the generator keeps working


def test_bad_credentials_stop_the_batch(llm):
    llm.actions = ["401"]
    with pytest.raises(GeneratorUnavailable, match="HTTP 401"):
        _gen(llm).qa_for_chunk(CHUNK)
    assert llm.count == 1


def test_missing_key_variable_is_a_clear_error(llm, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ValueError, match=KEY_ENV):
        _gen(llm)


def test_images_are_sent_as_base64_data_urls(llm, tmp_path):
    img = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (220, 20, 20)).save(img)
    chunk = Record("docB#c0", [Part.of_text("A red square stands here."), Part.of_image(str(img))])
    _gen(llm).generate_qa(chunk)
    content = llm.requests[0]["body"]["messages"][0]["content"]
    assert [c["type"] for c in content] == ["text", "image_url"]
    assert content[0]["text"].endswith("<image 1>")
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_concurrency_is_bounded(llm):
    llm.delay = 0.15
    chunks = [
        Record.from_text(f"d{i}#c0", f"Sentence number {i} mentions the year {1900 + i} clearly.") for i in range(6)
    ]
    records, stats = synthesize_qa(chunks, _gen(llm, concurrency=2, timeout_s=5), seed=0)
    assert llm.max_in_flight == 2
    assert len(records) == 6 and stats["generator_stats"]["calls"] == 12


def test_resumed_run_pays_for_no_call_twice_and_the_key_is_never_stored_or_logged(llm, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "llm-cache"
    chunks = [CHUNK, Record.from_text("docC#c0", "Marie Curie won the Nobel Prize in 1911 in Stockholm city.")]
    llm.actions = ["429", "500"]
    gen = _gen(llm, cache_dir=cache)
    first, stats1 = synthesize_qa(chunks, gen, seed=0)
    n_requests = llm.count
    assert n_requests >= 4 and stats1["chunks_failed"] == 0
    gen.close()

    resumed = _gen(llm, cache_dir=cache)
    second, stats2 = synthesize_qa(chunks, resumed, seed=0)
    assert llm.count == n_requests  # no request repeated
    assert [r.to_json() for r in second] == [r.to_json() for r in first]
    assert stats2["generator_stats"]["cache_hits"] == stats2["generator_stats"]["calls"] > 0
    resumed.close()

    llm.actions = ["400-echo"]  # a server echoing the credentials in an error must not leak them into logs
    careless = _gen(llm)
    assert careless.generate_qa(CHUNK) == [] and careless.stats.get("request_failed") == 1

    # The key went to the server, and nowhere else.
    assert all(r["auth"] == f"Bearer {SECRET}" for r in llm.requests)
    assert "bad request from" in caplog.text and SECRET not in caplog.text
    for f in Path(cache).rglob("*"):
        assert SECRET.encode() not in f.read_bytes(), f
    for blob in (stats1, stats2, gen.describe(), [r.to_json() for r in first]):
        assert SECRET not in json.dumps(blob, default=str)
    assert KEY_ENV in json.dumps(gen.describe())  # the variable's name is recorded, not its value


def test_a_backend_that_keeps_failing_stops_the_batch_early(llm):
    chunks = [
        Record.from_text(f"d{i}#c0", f"Sentence number {i} mentions the year {1900 + i} clearly.") for i in range(20)
    ]
    llm.actions = ["500"] * 100
    gen = _gen(llm, max_retries=0, max_consecutive_failures=3, concurrency=2)
    with pytest.raises(GeneratorUnavailable, match=r"[34] calls in a row|keeps failing"):
        synthesize_qa(chunks, gen, seed=0)
    assert llm.count <= 6  # 3 failures + at most a few in flight; the other chunks were never sent
