"""Shared helpers of the ``nyx`` commands: the exit codes, ``error: ...`` on stderr (:func:`fail`, :func:`user_errors`),
JSON output, rejects files, and opening and checking an index folder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from nyx.data.rejects import RecordError, RejectLog

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2


def echo_err(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    """Print ``error: message`` to stderr and return the exit to raise (``raise fail(...)``)."""
    echo_err(f"error: {message}")
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input problems into ``error: ...`` and exit code 1 (set NYX_DEBUG=1 for the traceback)."""
    from nyx.index import IndexMismatchError

    try:
        yield
    except (FileNotFoundError, NotADirectoryError, IndexMismatchError, RecordError, ValueError, OSError) as e:
        if os.environ.get("NYX_DEBUG"):
            raise
        raise fail(str(e) or type(e).__name__) from None


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def rejects_path_for(output: Path) -> Path:
    """Where the rejected records of a command that writes ``output`` go: beside (or inside) it."""
    if output.suffix == "" or output.is_dir():
        return output / "rejects.jsonl"
    return output.with_name(f"{output.stem}.rejects.jsonl")


def report_rejects(rejects: RejectLog, path: Path) -> Path | None:
    """Write rejected records (if any) and say so on stderr."""
    if not rejects.count:
        return None
    rejects.write(path)
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(rejects.reasons().items()))
    echo_err(f"warning: {rejects.count} record(s) rejected ({reasons}); details in {path}")
    return path


def parse_dims(value: str | None) -> list[int] | None:
    """``"2048,1024,512"`` -> ``[2048, 1024, 512]`` (a usage error if it does not parse)."""
    if value is None or not value.strip():
        return None
    try:
        dims = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise typer.BadParameter(f"dimensions must be positive integers, got {value!r}")
    return list(dict.fromkeys(dims))


def corpus_file(path: Path) -> Path:
    """A JSONL file, or a BEIR folder's ``corpus.jsonl``."""
    from nyx.data.beir import CORPUS_FILE

    if path.is_dir():
        path = path / CORPUS_FILE
    if not path.is_file():
        raise fail(f"corpus not found: {path}")
    return path


def open_retriever(index_dir: Path):
    from nyx.retrieval import RETRIEVER_MANIFEST, load_retriever

    if not (index_dir / RETRIEVER_MANIFEST).is_file():
        raise fail(f"{index_dir} is not a Nyx index folder (no {RETRIEVER_MANIFEST}); create one with `nyx index`")
    with user_errors():
        return load_retriever(index_dir)


def check_search_dims(retriever, dims: list[int]) -> None:
    if dims and not retriever.dims:
        raise fail(f"the {retriever.name} retriever has no embedding dimensions; drop --dim/--dims")
    for d in dims:
        if d > max(retriever.dims):
            raise fail(
                f"dimension {d} exceeds the index dimension {max(retriever.dims)} "
                f"(available Matryoshka dims: {retriever.dims})"
            )
