"""Command line: ``python -m nyx.train.run --config cfg.json`` (a :class:`~nyx.train.config.TrainConfig` as JSON).

Works in one process and under the launchers::

    torchrun --nproc_per_node 2 -m nyx.train.run --config cfg.json
    deepspeed --num_gpus 2 --module nyx.train.run --config cfg.json      # passes --local_rank=N

Metrics go to the log and to ``<output_dir>/metrics.jsonl`` (rank 0). Orchestration (MLflow, Dagster Pipes)
calls :func:`nyx.train.trainer.train` with its own ``on_log`` hook instead.
"""

from __future__ import annotations

import json
import os
import sys

from nyx.train.entry import start_process, training_parser
from nyx.train.trainer import train


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("nyx.train.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--resume_from_checkpoint",
        "--resume-from-checkpoint",
        default=None,
        help="'latest' or a checkpoint folder (overrides the config)",
    )
    parser.add_argument("--output_dir", "--output-dir", default=None, help="overrides the config's output_dir")
    args, config = start_process(parser, argv, _is_rank0)
    updates = {
        k: v
        for k, v in (("resume_from_checkpoint", args.resume_from_checkpoint), ("output_dir", args.output_dir))
        if v is not None
    }
    if updates:
        config = config.model_copy(update=updates)
    result = train(config)
    if _is_rank0():
        print(
            json.dumps(
                {
                    "final_dir": str(result.final_dir),
                    "global_step": result.global_step,
                    "last": result.history[-1] if result.history else None,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
