"""What the benchmark scripts share: the head of their JSON reports, their tables, their size arguments and timers.

A script imports it after putting the repository on ``sys.path`` (``from benchmarks.common import ...``, as it
imports ``nyx``), so that it runs both as ``python benchmarks/<script>.py`` and as ``python -m benchmarks.<script>``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from nyx.index import nyx_version
from nyx.model.architecture import PAPER_MRL_DIMS

# ------------------------------------------------------------------------------------------------ JSON report


def report_header(benchmark: str) -> dict[str, Any]:
    """The first keys of a benchmark's JSON report: its name, when it ran and the Nyx version."""
    return {
        "benchmark": benchmark,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "nyx_version": nyx_version(),
    }


def script_command(script: str, argv: list[str] | None) -> str:
    """The command line that ran ``benchmarks/<script>`` with ``argv`` (None: this process's arguments)."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def machine(**extra: Any) -> dict[str, Any]:
    """Where it ran: platform, Python, CPUs, then ``extra`` (library versions, thread counts) and last the load
    average (at the end of the run: how busy the machine was)."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        **extra,
        "load_average_at_end": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------------------ tables


def right_table(title: str, columns: Iterable[str]) -> Table:
    """A rich table titled ``title`` whose ``columns`` are all right-aligned (the benchmarks' tables of numbers)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right")
    return t


def markdown_rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table (for docs/): ``header`` then one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table_markdown(table: Table) -> str:
    """A rich table's header and cells as a Markdown table (``--markdown``)."""
    cells = [list(c._cells) for c in table.columns]
    return markdown_rows(
        [str(c.header) for c in table.columns],
        ([str(col[i]) for col in cells] for i in range(table.row_count)),
    )


# ------------------------------------------------------------------------------------------------ arguments


#: ``--dims`` default of the benchmarks: the paper's Matryoshka ladder.
PAPER_DIMS_ARG = ",".join(map(str, PAPER_MRL_DIMS))


def dims_arg(text: str) -> list[int]:
    """A comma-separated list of Matryoshka dims (``--dims 2048,1024,512``): each once, largest first."""
    return sorted({int(d) for d in text.split(",")}, reverse=True)


# ------------------------------------------------------------------------------------------------ timing


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes (wall clock)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def single_query_ms(index: Any, queries: Any, n_single: int, k: int, dim: int) -> list[float]:
    """Milliseconds of each of ``n_single`` one-query searches (``queries[i : i + 1]``) through
    ``EmbeddingIndex.search`` at ``dim``, after one untimed warm-up search."""
    index.search(queries[:1], k=k, dim=dim)  # warm-up
    single = []
    for i in range(n_single):
        t0 = time.perf_counter()
        index.search(queries[i : i + 1], k=k, dim=dim)
        single.append((time.perf_counter() - t0) * 1000)
    return single
