"""The settings of ``nyx serve``: limits and batching (:class:`ServeSettings`, the ``nyx serve`` flags) and the
environment variable holding the API key."""

from __future__ import annotations

from dataclasses import dataclass

#: Environment variable holding the API key (never a command-line flag: it would land in shell history and logs).
API_KEY_ENV = "NYX_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """Server limits and batching (the ``nyx serve`` flags)."""

    batch_window_ms: float = 5.0
    max_batch: int = 32
    poll_seconds: float = 30.0
    max_request_bytes: int = 16 * 1024 * 1024
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_k: int = 1000

    def __post_init__(self) -> None:
        if self.batch_window_ms < 0 or self.poll_seconds < 0:
            raise ValueError("batch_window_ms and poll_seconds must be >= 0")
        for name in ("max_batch", "max_request_bytes", "max_image_bytes", "max_image_pixels", "max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
