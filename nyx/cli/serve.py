"""``nyx serve``: the search API over HTTP for an index folder or a registry model (the app is
:mod:`nyx.serving.server`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nyx.cli.common import echo_err, fail


def serve_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="A folder written by `nyx index`, or a registry URI: models:/NAME@ALIAS (followed when it moves) or "
            "models:/NAME/VERSION.",
            show_default=False,
        ),
    ],
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    host: Annotated[
        str,
        typer.Option(help="Address to bind; anything but 127.0.0.1 exposes the API to the network (set NYX_API_KEY)."),
    ] = "127.0.0.1",
    batch_window_ms: Annotated[
        float, typer.Option(min=0, help="Collect concurrent queries this long into one encoder call (0: no batching).")
    ] = 5.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most queries per encoder call.")] = 32,
    poll_seconds: Annotated[
        float,
        typer.Option(
            min=0, help="Registry alias sources: check the alias this often and swap in a new version (0: never)."
        ),
    ] = 30.0,
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Corpus JSONL or BEIR folder the index was built from, for return_documents (registry sources: "
            "used when the version has no nyx.corpus_path tag)."
        ),
    ] = None,
    max_request_bytes: Annotated[int, typer.Option(min=1, help="Largest request body.")] = 16 * 1024 * 1024,
    max_image_bytes: Annotated[int, typer.Option(min=1, help="Largest decoded query image.")] = 10 * 1024 * 1024,
    max_image_pixels: Annotated[int, typer.Option(min=1, help="Most pixels in a query image.")] = 16_000_000,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 1000,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI", help="MLflow registry for models:/ sources (default: sqlite under mlflow/)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a search API over HTTP (POST /search, POST /embed, GET /health, docs at /docs) for a model and its
    index. With the environment variable NYX_API_KEY set, every endpoint but /health needs
    'Authorization: Bearer <key>'. See docs/serving.md."""
    import logging

    import uvicorn

    from nyx.paths import REPO_ROOT
    from nyx.serving import API_KEY_ENV, REGISTRY_PREFIX, ServeError, ServeSettings, create_app

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("nyx").setLevel(level)  # model loads, alias moves and swaps; other libraries stay quiet
    if corpus is not None and not corpus.exists():
        raise fail(f"corpus not found: {corpus}")
    if source.startswith(REGISTRY_PREFIX) and tracking_uri is None:
        tracking_uri = f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}"
    settings = ServeSettings(
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        poll_seconds=poll_seconds,
        max_request_bytes=max_request_bytes,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
        max_k=max_k,
    )
    try:
        server_app = create_app(source, corpus=corpus, settings=settings, tracking_uri=tracking_uri)
    except (ServeError, OSError, ValueError) as e:
        if os.environ.get("NYX_DEBUG"):
            raise
        raise fail(str(e) or type(e).__name__) from None
    if not os.environ.get(API_KEY_ENV) and host not in ("127.0.0.1", "localhost", "::1"):
        echo_err(f"warning: serving on {host} without {API_KEY_ENV}: anyone who can reach port {port} can query")
    uvicorn.run(server_app, host=host, port=port, log_level=log_level.lower(), access_log=level == "DEBUG")
