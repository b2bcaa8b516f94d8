"""What ``nyx serve`` serves: a source string parsed into a retriever folder or a registry URI
(``models:/<name>@<alias>`` or ``models:/<name>/<version>``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nyx.serving.errors import ServeError

REGISTRY_PREFIX = "models:/"


@dataclass(frozen=True)
class Source:
    """A parsed ``nyx serve`` source: a retriever folder, or a registered model by alias or version."""

    raw: str
    folder: Path | None = None
    name: str | None = None
    alias: str | None = None
    version: str | None = None

    @property
    def is_registry(self) -> bool:
        return self.name is not None

    @property
    def is_alias(self) -> bool:
        return self.alias is not None


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_source(source: str | os.PathLike) -> Source:
    """``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a folder written by ``nyx index``."""
    raw = os.fspath(source)
    if raw.startswith(REGISTRY_PREFIX):
        m = _URI.match(raw)
        if not m:
            raise ServeError(f"bad registry URI {raw!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return Source(raw=raw, name=m["name"], alias=m["alias"], version=m["version"])
    from nyx.retrieval import RETRIEVER_MANIFEST

    folder = Path(raw)
    if not (folder / RETRIEVER_MANIFEST).is_file():
        raise ServeError(
            f"{folder} is not a Nyx index folder (no {RETRIEVER_MANIFEST}); create one with "
            "`nyx index`, or give a registry URI models:/<name>@<alias>"
        )
    return Source(raw=raw, folder=folder)
