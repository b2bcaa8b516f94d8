"""``nyx registry``: inspect, promote and roll back the ``champion`` alias of the registered retriever.

The model name is the profile's ``promotion.registered_model`` (``NYX_PROFILE``, ``NYX_PROFILE_OVERRIDES``; default
``nyx-retriever``), the same setting the training and promotion assets use; ``--name`` overrides it."""

from __future__ import annotations

import json
import os

import typer

from nyx.paths import REPO_ROOT

app = typer.Typer(
    help="Model registry: champion/challenger aliases of the registered retriever (MLflow).", no_args_is_help=True
)

TrackingOpt = typer.Option(
    None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: sqlite under mlflow/)"
)
NameOpt = typer.Option(None, "--name", help="registered model name (default: the profile's promotion.registered_model)")


def _name(name: str | None) -> str:
    if name:
        return name
    from nyx.settings import load_profile

    overrides = json.loads(os.environ.get("NYX_PROFILE_OVERRIDES") or "{}")
    return load_profile(os.environ.get("NYX_PROFILE", "sample"), overrides).promotion.registered_model


def _client(uri: str | None):
    from nyx.registry import client

    return client(uri or f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}")


@app.command()
def status(tracking_uri: str = TrackingOpt, name: str | None = NameOpt) -> None:
    """Print the champion, the challenger, the recorded previous champion and each version's gate metrics."""
    name = _name(name)
    from nyx.registry import CHALLENGER, CHAMPION, PREVIOUS_TAG, alias_version, all_version_metrics

    c = _client(tracking_uri)
    try:
        model = c.get_registered_model(name)
    except Exception as e:
        raise typer.Exit(_err(f"no registered model {name!r}: {e}")) from None
    versions = sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    out = {
        "champion": alias_version(c, name, CHAMPION),
        "challenger": alias_version(c, name, CHALLENGER),
        "previous_champion": (model.tags or {}).get(PREVIOUS_TAG),
        "versions": {
            v.version: {"stage": (v.tags or {}).get("nyx.stage"), **all_version_metrics(c, name, v.version)}
            for v in versions
        },
    }
    typer.echo(json.dumps(out, indent=2))


@app.command()
def promote(version: str, tracking_uri: str = TrackingOpt, name: str | None = NameOpt) -> None:
    """Point ``champion`` at VERSION by hand (the previous champion is recorded for rollback)."""
    name = _name(name)
    from nyx.registry import promote as do_promote

    try:
        previous = do_promote(_client(tracking_uri), name, version)
    except Exception as e:
        raise typer.Exit(_err(f"cannot promote version {version} of {name!r}: {e}")) from None
    typer.echo(json.dumps({"champion": version, "previous_champion": previous}))


@app.command()
def rollback(tracking_uri: str = TrackingOpt, name: str | None = NameOpt) -> None:
    """Move ``champion`` back to the previous champion (one command, reversible: run it again to undo)."""
    name = _name(name)
    from nyx.registry import rollback as do_rollback

    try:
        frm, to = do_rollback(_client(tracking_uri), name)
    except Exception as e:  # no previous champion, unknown model, unreachable store
        raise typer.Exit(_err(str(e))) from None
    typer.echo(json.dumps({"champion": to, "rolled_back_from": frm}))


def _err(msg: str) -> int:
    typer.echo(f"error: {msg}", err=True)
    return 1
