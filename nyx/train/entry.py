"""What the training command lines (``python -m nyx.train.run``, ``python -m nyx.train.tracked``) share: the
``--config`` and ``--local_rank`` arguments, ``LOCAL_RANK`` taken from the ``--local_rank`` the deepspeed launcher
passes, the log at INFO on the main process only (WARNING on the others), and the
:class:`~nyx.train.config.TrainConfig` read from ``--config``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence

from nyx.train.config import TrainConfig


def training_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of a training command line with its ``--config``; add the command's own arguments to it, then
    call :func:`start_process`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="TrainConfig JSON file")
    return parser


def start_process(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, is_main: Callable[[], bool]
) -> tuple[argparse.Namespace, TrainConfig]:
    """Parse ``argv`` (``--local_rank`` added last), export ``LOCAL_RANK`` when the launcher passed it, set up
    logging (``is_main()``, asked after that: INFO, else WARNING) and read the config. Returns the arguments and
    the config."""
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    logging.basicConfig(
        level=logging.INFO if is_main() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args, TrainConfig.from_json(args.config)
