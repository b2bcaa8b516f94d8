"""A generator over any OpenAI-compatible chat-completions endpoint, spoken in raw HTTP with httpx.

- Images go as base64 ``data:`` URLs in ``image_url`` content parts (loaded and sized by
  :func:`nyx.data.images.load_image`).
- At most ``concurrency`` requests are in flight (a semaphore; ``synthesize_qa`` runs that many chunks in
  threads).
- 429, 5xx, timeouts and connection errors are retried with exponential back-off and jitter; a
  ``Retry-After`` header is honoured. 401/403/404 stop the batch at once (``GeneratorUnavailable``: wrong
  key, URL or model); other 4xx fail that one call. After ``max_consecutive_failures`` failed calls in a row
  the batch stops too, instead of burning through the whole input.
- Replies are cached on disk (:class:`~nyx.synth.generators.cache.ResponseCache`) under a sha256 of the
  model, the prompt id (version + content hash), the parameters and the inputs (image content hashes,
  not paths), so a resumed run pays for no call twice.
- The API key is read from the environment variable named in the settings and lives only in the HTTP
  client's headers: it is never logged (any server text that echoes it is scrubbed), cached or reported.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from typing import Any

import httpx

from nyx.data.images import DEFAULT_IMAGE_CONFIG, ImageConfig, image_to_data_url, load_image
from nyx.synth.generators.base import GeneratorUnavailable
from nyx.synth.generators.cache import ResponseCache, cache_key, image_fingerprint
from nyx.synth.generators.chat import ChatGenerator, ChatRequest
from nyx.synth.generators.config import OpenAISettings

log = logging.getLogger(__name__)

_FATAL_STATUS = {
    401: "unauthorised (check the API key)",
    403: "forbidden (check the API key)",
    404: "not found (check base_url and model)",
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIGenerator(ChatGenerator):
    """:class:`ChatGenerator` over an OpenAI-compatible ``/chat/completions`` endpoint."""

    kind = "openai"

    def __init__(
        self,
        settings: OpenAISettings,
        image_cfg: ImageConfig | None = None,
        seed: int = 0,
        prompt_version: str = "v1",
        **kwargs: Any,
    ):
        super().__init__(prompt_version=prompt_version, **kwargs)
        self.settings = settings
        self.image_cfg = image_cfg or DEFAULT_IMAGE_CONFIG
        self.concurrency = settings.concurrency
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env)
            if not key:
                raise ValueError(
                    f"environment variable {settings.api_key_env} is empty or not set; it must hold "
                    f"the API key for {settings.base_url} (or set api_key_env to None)"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
        )
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._rng = random.Random(seed)
        self._fail_lock = threading.Lock()
        self._consecutive_failures = 0
        self.cache = ResponseCache(settings.cache_dir) if settings.cache_dir else None

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            **super().describe(),
            "base_url": s.base_url,
            "model": s.model,
            "api_key_env": s.api_key_env,
            "concurrency": s.concurrency,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "cache_dir": s.cache_dir,
        }

    # -- request building ----------------------------------------------------------------------------------------

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {"temperature": s.temperature, "max_tokens": s.max_tokens, **s.extra_body}
        if s.json_mode and request.purpose != "reader":
            params["response_format"] = {"type": "json_object"}
        return params

    def key_for(self, request: ChatRequest) -> str:
        """The cache key of a request: model, prompt id, parameters, image budget and input content."""
        parts = [
            {"text": p.text} if p.type == "text" else {"image": image_fingerprint(p.image or "")} for p in request.parts
        ]
        ic = self.image_cfg
        return cache_key(
            {
                "model": self.settings.model,
                "prompt": request.prompt_id,
                "params": self._params(request),
                "image_budget": [ic.min_pixels, ic.max_pixels, ic.factor, ic.resize],
                "parts": parts,
            }
        )

    def body_for(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body sent to ``/chat/completions``."""
        content: list[dict[str, Any]] = []
        for p in request.parts:
            if p.type == "text":
                if content and content[-1]["type"] == "text":
                    content[-1]["text"] += "\n" + (p.text or "")
                else:
                    content.append({"type": "text", "text": p.text or ""})
            else:
                url = image_to_data_url(load_image(p.image or "", self.image_cfg))
                content.append({"type": "image_url", "image_url": {"url": url}})
        return {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": content}],
            **self._params(request),
        }

    # -- calling ---------------------------------------------------------------------------------------------------

    def complete(self, request: ChatRequest) -> str | None:
        self.stats.inc("calls")
        self.stats.inc(f"calls.{request.purpose}")
        key = self.key_for(request) if self.cache is not None else ""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.inc("cache_hits")
                return hit
        reply = self._post(self.body_for(request), request.purpose)
        if reply is not None and self.cache is not None:
            self.cache.put(key, reply, model=self.settings.model, prompt=request.prompt_id, purpose=request.purpose)
        return reply

    def _scrub(self, text: str) -> str:
        auth = self._client.headers.get("authorization", "")
        secret = auth[7:] if auth.lower().startswith("bearer ") else ""
        return text.replace(secret, "***") if secret else text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        if retry_after is not None:
            return min(retry_after, s.max_retry_after_s)
        cap = min(s.backoff_max_s, s.backoff_base_s * (2**attempt))
        return cap * (0.5 + 0.5 * self._rng.random())  # jitter: spread retries of parallel workers

    def _post(self, body: dict[str, Any], purpose: str) -> str | None:
        s = self.settings
        with self._fail_lock:
            tripped = self._consecutive_failures >= s.max_consecutive_failures
        if tripped:  # another thread already gave up: send nothing more
            raise GeneratorUnavailable(f"{self.url} keeps failing; no further requests are sent")
        reason = ""
        for attempt in range(s.max_retries + 1):
            retry_after: float | None = None
            try:
                with self._slots:
                    self.stats.inc("http_requests")
                    resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError as e:
                reason = f"connection error ({type(e).__name__})"
            else:
                status = resp.status_code
                if status == 200:
                    return self._content(resp, purpose)
                detail = self._scrub(resp.text[:200].replace("\n", " "))
                if status in _FATAL_STATUS:
                    raise GeneratorUnavailable(
                        f"{self.url} answered HTTP {status}: {_FATAL_STATUS[status]}; "
                        f"model {s.model!r}; server said: {detail}"
                    )
                if status != 429 and status < 500:
                    log.warning("%s request refused with HTTP %d (not retried): %s", purpose, status, detail)
                    self.stats.inc("request_failed")
                    self._failed(f"HTTP {status}")
                    return None
                reason = f"HTTP {status}"
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if attempt < s.max_retries:
                wait = self._delay(attempt, retry_after)
                self.stats.inc("retries")
                self.stats.inc(f"retries.{reason.split(' (')[0]}")
                log.info("%s request: %s; retry %d/%d in %.2fs", purpose, reason, attempt + 1, s.max_retries, wait)
                time.sleep(wait)
        log.warning("%s request failed after %d tries (%s)", purpose, s.max_retries + 1, reason)
        self.stats.inc("request_failed")
        self._failed(reason)
        return None

    def _content(self, resp: httpx.Response, purpose: str) -> str | None:
        try:
            data = resp.json()
            message = data["choices"][0]["message"]
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
            if not isinstance(content, str):
                raise TypeError("message content is not text")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            log.warning("%s: malformed chat-completions response (%s)", purpose, type(e).__name__)
            self.stats.inc("bad_response")
            self._failed("malformed response")
            return None
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            for k in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(k), int):
                    self.stats.inc(f"usage.{k}", usage[k])
        with self._fail_lock:
            self._consecutive_failures = 0
        return content

    def _failed(self, reason: str) -> None:
        with self._fail_lock:
            self._consecutive_failures += 1
            n = self._consecutive_failures
        if n >= self.settings.max_consecutive_failures:
            raise GeneratorUnavailable(f"{n} calls in a row to {self.url} failed (last: {reason}); giving up")

    def close(self) -> None:
        self._client.close()
        if self.cache is not None:
            self.cache.close()
