"""Query prompt templates: the instruction a query is wrapped in (documents carry none).

:class:`QueryTemplate` is per task (``EncoderConfig.query_templates`` maps ``record.extra["task"]`` to one); the
default is the paper's instruction, with the answer options written out when the query has ``extra["choices"]``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, model_validator

from nyx.data.records import Record
from nyx.utils.config import ConfigModel

PAPER_INSTRUCTION = "Please retrieve the most relevant document to answer the question."


class QueryTemplate(ConfigModel):
    """The instruction a query is wrapped in. ``{question}`` stands for the query's interleaved content.

    ``with_choices`` is used when the query record's ``extra["choices"]`` is present (a list of options or a
    ready string), ``without_choices`` otherwise. Options are written as ``choice_format`` joined by
    ``choice_separator`` (``{letter}``: A, B, C...; ``{index}``: 0, 1, 2...; ``{text}``: the option).
    """

    model_config = ConfigDict(frozen=True)

    with_choices: str = PAPER_INSTRUCTION + "\nQuestion: {question}\nChoices: {choices}"
    without_choices: str = PAPER_INSTRUCTION + "\nQuestion: {question}"
    choice_format: str = "({letter}) {text}"
    choice_separator: str = " "

    @model_validator(mode="after")
    def _check(self) -> QueryTemplate:
        for name in ("with_choices", "without_choices"):
            if getattr(self, name).count("{question}") != 1:
                raise ValueError(f"QueryTemplate.{name} must contain '{{question}}' exactly once")
        return self

    def format_choices(self, choices: Any) -> str:
        if isinstance(choices, str):
            return choices
        return self.choice_separator.join(
            self.choice_format.replace("{letter}", _letter(i)).replace("{index}", str(i)).replace("{text}", str(c))
            for i, c in enumerate(choices)
        )

    def frame(self, record: Record) -> tuple[str, str]:
        """``(text before the question, text after it)`` for this query record."""
        choices = record.extra.get("choices")
        template = self.with_choices if choices not in (None, "", []) else self.without_choices
        before, after = template.split("{question}")
        if choices not in (None, "", []):
            formatted = self.format_choices(choices)
            before, after = before.replace("{choices}", formatted), after.replace("{choices}", formatted)
        return before, after


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else str(i)


__all__ = ["PAPER_INSTRUCTION", "QueryTemplate"]
