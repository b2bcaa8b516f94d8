"""Command line: ``python -m nyx.train.run --config cfg.json`` (a :class:`~nyx.train.config.TrainConfig` as JSON).

Works in one process and under the launchers::

    torchrun --nproc_per_node 2 -m nyx.train.run --config cfg.json
    deepspeed --num_gpus 2 --module nyx.train.run --config cfg.json      # passes --local_rank=N

Metrics go to the log and to ``<output_dir>/metrics.jsonl`` (rank 0). Orchestration (MLflow, Dagster Pipes)
calls :func:`nyx.train.trainer.train` with its own ``on_log`` hook instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from nyx.train.config import TrainConfig
from nyx.train.trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nyx.train.run", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="TrainConfig JSON file")
    parser.add_argument(
        "--resume_from_checkpoint",
        "--resume-from-checkpoint",
        default=None,
        help="'latest' or a checkpoint folder (overrides the config)",
    )
    parser.add_argument("--output_dir", "--output-dir", default=None, help="overrides the config's output_dir")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    logging.basicConfig(
        level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    config = TrainConfig.from_json(args.config)
    updates = {
        k: v
        for k, v in (("resume_from_checkpoint", args.resume_from_checkpoint), ("output_dir", args.output_dir))
        if v is not None
    }
    if updates:
        config = config.model_copy(update=updates)
    result = train(config)
    if os.environ.get("RANK", "0") == "0":
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
