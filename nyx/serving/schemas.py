"""The request and response bodies of ``POST /search`` and ``POST /embed`` (pydantic models; they make the
OpenAPI docs at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

_EXAMPLE_CONTENT = [
    {"type": "text", "text": "Which town has the red bridge?"},
    {"type": "image", "image": "data:image/png;base64,iVBORw0KGgo..."},
]
_CONTENT_HELP = (
    'The query in the JSONL part format: a list of parts, each {"type": "text", "text": ...} or '
    '{"type": "image", "image": "data:image/png;base64,..."} (images as data: URLs only).'
)


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"content": [{"type": "text", "text": "Which town has the red bridge?"}], "k": 5}]
        },
    )

    content: list[Any] = Field(description=_CONTENT_HELP, examples=[_EXAMPLE_CONTENT])
    k: StrictInt = Field(10, ge=1, description="Number of hits (at most the server's --max-k).")
    dim: StrictInt | None = Field(
        None,
        ge=1,
        description="Matryoshka dimension to search at (dense retrievers; "
        "1..the index dimension; default: the index dimension).",
    )
    return_documents: StrictBool = Field(False, description="Add each hit's corpus record (needs a corpus).")
    choices: list[str] | str | None = Field(
        None, description="A multiple-choice query's options (framed as in evaluation)."
    )


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: list[Any] = Field(description=_CONTENT_HELP, examples=[_EXAMPLE_CONTENT])
    dim: StrictInt | None = Field(
        None,
        ge=1,
        description="Matryoshka prefix (1..the index dimension; default: the index dimension); re-normalised.",
    )
    kind: Literal["query", "document"] = Field("query", description="Embed as a query (default) or a document.")
    choices: list[str] | str | None = None


class Hit(BaseModel):
    id: str
    score: float
    document: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    hits: list[Hit]
    model_version: str | None
    retriever: str
    dim: int | None
    latency_ms: float


class EmbedResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    embedding: list[float]
    dim: int
    model_version: str | None
    latency_ms: float
