"""The ``nyx`` command line: index a corpus, search it, evaluate it.

Exit codes (stable, for scripts):

* ``0`` — success (some input records may have been rejected: they are counted and written to a
  ``rejects.jsonl`` file next to the output, and the rest of the batch went on);
* ``1`` — the command line was well-formed but the input was not usable: a missing file or folder, an index
  that does not fit the request (e.g. a dimension above the index's), no usable record at all, a model that
  cannot be loaded;
* ``2`` — usage error: unknown option, missing argument, a value that does not parse.

This module creates :data:`app` (the ``nyx`` entry point) and registers the commands, one module per command or
group: :mod:`~nyx.cli.data` (``ingest``, ``convert``), :mod:`~nyx.cli.index`, :mod:`~nyx.cli.search`,
:mod:`~nyx.cli.evaluate` (``evaluate``, ``report``), :mod:`~nyx.cli.serve` and :mod:`~nyx.cli.registry` (the
``registry`` group). Other areas add their command groups here with ``app.add_typer(their_app, name="...")`` (see
the bottom of this module); shared helpers for them are :func:`~nyx.cli.common.fail` and
:func:`~nyx.cli.common.user_errors` in :mod:`nyx.cli.common`.
"""

from __future__ import annotations

import typer

from nyx.cli.data import convert_cmd, ingest_cmd
from nyx.cli.evaluate import evaluate_cmd, report_cmd
from nyx.cli.index import index_cmd
from nyx.cli.registry import app as registry_app
from nyx.cli.search import search_cmd
from nyx.cli.serve import serve_cmd

app = typer.Typer(
    name="nyx",
    help="Nyx: mixed-modal retrieval for universal RAG. Index a corpus, search it, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The order here is the order `nyx --help` lists them in.
app.command("ingest")(ingest_cmd)
app.command("convert")(convert_cmd)
app.command("index")(index_cmd)
app.command("search")(search_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("report")(report_cmd)
app.command("serve")(serve_cmd)

# ------------------------------------------------------------------------------------------------ command groups
# Other areas register their command groups here, e.g.:
#     from nyx.synth.cli import app as synth_app
#     app.add_typer(synth_app, name="synth", help="Build NyxQA from raw documents.")
app.add_typer(registry_app, name="registry")

__all__ = ["app"]
