"""Versioned prompt files (``nyx/synth/prompts/<name>.<version>.txt``).

A prompt's identity is its file's version plus a hash of its content, so editing a file without bumping
the version still changes every cache key that depends on it (no stale cached answers).
Placeholders use :class:`string.Template` syntax (``$name``) so JSON examples need no escaping.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from string import Template

PROMPT_NAMES = ("qa_generation", "multi_image_qa", "qa_refine", "distractors", "reader")


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    @property
    def id(self) -> str:
        """``<name>.<version>+<content hash>``: what cache keys and metadata record."""
        return f"{self.name}.{self.version}+{self.sha}"

    def render(self, **values: object) -> str:
        """Fill the ``$placeholders`` (a missing value raises ``KeyError``)."""
        return Template(self.text).substitute({k: str(v) for k, v in values.items()})


@functools.cache
def load_prompt(name: str, version: str = "v1") -> Prompt:
    """Read ``prompts/<name>.<version>.txt`` shipped with the package."""
    fname = f"{name}.{version}.txt"
    ref = resources.files("nyx.synth").joinpath("prompts", fname)
    if not ref.is_file():
        raise FileNotFoundError(f"no prompt file {fname} in nyx/synth/prompts (known names: {', '.join(PROMPT_NAMES)})")
    return Prompt(name=name, version=version, text=ref.read_text(encoding="utf-8"))
