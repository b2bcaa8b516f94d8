"""How images are downloaded (:class:`FetchConfig`) and what became of each URL (:class:`FetchResult`), with the
rule that says which failures may clear by themselves (:func:`is_transient`: retried within a run, and on
later runs up to ``transient_runs``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[str], None]

#: reasons worth another attempt (besides ``http_5xx``, ``http_408`` and ``http_429``)
TRANSIENT_REASONS = frozenset({"timeout", "connection_error"})


@dataclass(frozen=True)
class FetchConfig:
    """How images are downloaded (the profile's ``fetch`` settings, :class:`nyx.settings.FetchSettings`)."""

    concurrency: int = 16  #: downloads in flight at once
    per_host_rate: float = 4.0  #: requests per second to one host name (0: no limit)
    timeout: float = 20.0  #: seconds for one attempt, from the request to the last byte
    retries: int = 3  #: further attempts after a transient failure, within a run
    backoff: float = 1.0  #: seconds before the first retry; doubles with each
    max_backoff: float = 60.0
    max_bytes: int = 20 * 1024 * 1024  #: larger bodies are aborted and rejected (``too_large``)
    transient_runs: int = 3  #: runs that try a URL whose failures were transient; then the failure is final
    user_agent: str = "nyx-image-fetch/1.0 (+OBELICS image download for a retrieval corpus)"

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.transient_runs < 1:
            raise ValueError("concurrency and transient_runs must be >= 1, retries >= 0")
        if self.per_host_rate < 0 or self.timeout <= 0 or self.backoff < 0 or self.max_bytes < 1:
            raise ValueError("per_host_rate and backoff must be >= 0, timeout and max_bytes > 0")


def is_transient(reason: str | None) -> bool:
    """Whether a failure may clear by itself (server errors, throttling, timeouts, network)."""
    if reason is None:
        return False
    if reason in TRANSIENT_REASONS:
        return True
    if reason.startswith("http_"):
        try:
            code = int(reason[5:])
        except ValueError:
            return False
        return code >= 500 or code in (408, 429)
    return False


@dataclass
class FetchResult:
    """What became of one URL: a stored file (``file``, a name in the store) or a failure (``reason``)."""

    url: str
    ok: bool
    file: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    format: str | None = None
    reason: str | None = None
    detail: str | None = None
    http_status: int | None = None
    attempts: int = 0
    runs: int = 0  #: runs that ended on a transient failure of this URL
    at: float = field(default_factory=time.time)

    @property
    def transient(self) -> bool:
        return not self.ok and is_transient(self.reason)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FetchResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
