"""``nyx search``: one mixed-modal query against an index folder, the ranked documents as JSON."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from nyx.cli.common import check_search_dims, fail, open_retriever, print_json, user_errors
from nyx.data.records import Part, Record


def search_cmd(
    index_dir: Annotated[Path, typer.Argument(help="A folder written by `nyx index`.", show_default=False)],
    text: Annotated[str | None, typer.Option("--text", "-t", help="Query text.")] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", "-i", help="Query image (repeat for several; placed after the text, in order)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Number of results.")] = 10,
    dim: Annotated[int | None, typer.Option(min=1, help="Matryoshka dimension to search at (dense).")] = None,
) -> None:
    """Search an index with one mixed-modal query; prints the ranked documents as JSON."""
    images = list(image or [])
    if (text is None or not text.strip()) and not images:
        raise typer.BadParameter("give --text and/or at least one --image", param_hint="--text")
    for p in images:
        if not p.is_file():
            raise fail(f"query image not found: {p}")
    r = open_retriever(index_dir)
    if dim is not None:
        check_search_dims(r, [dim])
    parts = ([Part.of_text(text)] if text and text.strip() else []) + [Part.of_image(p.resolve()) for p in images]
    query = Record(id="query", content=parts)
    with user_errors():
        r.load_models()
        t0 = time.perf_counter()
        run = r.search([query], k=k, dim=dim)
    ms = (time.perf_counter() - t0) * 1000
    ranked = sorted(run.get("query", {}).items(), key=lambda kv: -kv[1])
    print_json(
        {
            "query": {"text": text, "images": [str(p) for p in images]},
            "retriever": r.name,
            "dim": dim if dim is not None else (max(r.dims) if r.dims else None),
            "latency_ms": round(ms, 3),
            "results": [{"rank": i, "id": d, "score": s} for i, (d, s) in enumerate(ranked, start=1)],
        }
    )
