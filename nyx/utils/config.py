"""The base of Nyx's settings classes: one config system (pydantic) for every config in the library.

:class:`ConfigModel` refuses unknown fields (a misspelt setting fails where it is written), turns a field's
docstring into its description (what the Dagster launchpad and ``model_json_schema()`` show), and gives
:meth:`~ConfigModel.replace`, a copy with changes that is validated again (pydantic's ``model_copy(update=...)``
is not).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A pydantic model for settings: unknown fields refused, field docstrings as descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like a new instance."""
        return type(self)(**{**dict(self), **changes})


__all__ = ["ConfigModel"]
