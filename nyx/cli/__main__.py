"""``python -m nyx.cli``: the ``nyx`` command line (the same :data:`nyx.cli.app` as the ``nyx`` script)."""

from __future__ import annotations

from nyx.cli import app

if __name__ == "__main__":  # pragma: no cover
    app()
