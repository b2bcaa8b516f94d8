"""The two errors of ``nyx serve``: :class:`ServeError` (a source that cannot be served, at start-up or on a swap)
and :class:`ApiError` (a request the server refuses, with its HTTP status and the field at fault)."""

from __future__ import annotations

from typing import Any


class ServeError(RuntimeError):
    """A source that cannot be served: a bad URI, a missing tag or folder, an index of another version."""


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, the request ``field`` at fault and why."""

    def __init__(self, status: int, field: str | None, message: str):
        self.status = status
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "field": self.field}
