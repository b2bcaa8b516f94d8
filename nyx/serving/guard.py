"""The ASGI guard in front of the app: the API key and the body size, checked before any body is read into the
app."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Paths answered without the API key (liveness probes).
OPEN_PATHS = frozenset({"/health"})


class RequestGuard:
    """Answers 401 without the bearer key (except :data:`OPEN_PATHS`) and 413 for a body over ``max_body``
    bytes, counting what arrives (a missing or false Content-Length does not get past it)."""

    def __init__(self, app: ASGIApp, *, max_body: int, api_key: str | None) -> None:
        self.app = app
        self.max_body = max_body
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self._key is not None and scope.get("path") not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
                return await _send_json(
                    send,
                    401,
                    {
                        "detail": "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                        "field": None,
                    },
                    [(b"www-authenticate", b"Bearer")],
                )
        too_big = {"detail": f"body: the request body exceeds the limit of {self.max_body} bytes", "field": "body"}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return await _send_json(send, 413, too_big)
            except ValueError:
                return await _send_json(send, 400, {"detail": "body: bad Content-Length header", "field": "body"})
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body:
                return await _send_json(send, 413, too_big)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    import json

    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
