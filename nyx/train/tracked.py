"""``python -m nyx.train.tracked --config cfg.json``: training that reports to MLflow and Dagster Pipes.

The same as ``nyx.train.run`` plus: rank 0 logs params and step metrics to the MLflow run named by ``MLFLOW_RUN_ID``
and, when started by Dagster Pipes, streams log lines and reports the materialisation. Other ranks only train.
"""

from __future__ import annotations

import json
import os
import sys

from nyx.tracking import TrainingReporter, process_rank
from nyx.train.checkpoints import resume_step
from nyx.train.entry import start_process, training_parser
from nyx.train.trainer import train
from nyx.utils.io import write_json


def main(argv: list[str] | None = None) -> int:
    _, config = start_process(training_parser("nyx.train.tracked"), argv, lambda: process_rank() == 0)
    reporter = TrainingReporter()
    try:
        reporter.log_params(json.loads(config.model_dump_json()))
        start = resume_step(config)
        reporter.info(
            f"training {config.model} -> {config.output_dir}"
            + (f" (resuming at step {start})" if start is not None else "")
        )
        result = train(config, on_log=reporter.on_log)
        if process_rank() == 0:
            losses = [h["loss"] for h in result.history if "loss" in h]
            reporter.log_params({"run": result.run_info})  # what the run got: world size, global batch, ZeRO
            if result.counts:  # per training source: loaded / usable / mixed
                reporter.log_params({"source": result.counts})
            summary = {
                "final_dir": str(result.final_dir),
                "global_step": result.global_step,
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "rejected": result.rejected,
                "counts": result.counts,
                "resumed_from_step": start,
                **result.run_info,
            }
            write_json(summary, os.path.join(config.output_dir, "train_result.json"))
            reporter.finish({k: v for k, v in summary.items() if k != "counts"})
        else:
            reporter.close()
    except BaseException:
        reporter.close()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
