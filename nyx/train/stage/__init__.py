"""The life cycle of one training stage, whatever starts it (a Dagster asset, a script, a notebook).

A stage (``stage1``: contrastive training on NyxQA; ``stage2``: VLM-feedback alignment) goes through:

1. :func:`stage_train_config` (:mod:`~nyx.train.stage.inputs`): the :class:`~nyx.train.config.TrainConfig` the
   profile asks for, with its data sources and the input files whose content it depends on. Stage 2 ``continue``
   builds on Stage 1: a LoRA Stage 1 is continued as an adapter (``init_adapter``, on Stage 1's base model), a fully
   fine-tuned one is loaded as the model; ``retrain`` starts again from the base on the Stage-1 mix plus the feedback.
2. :func:`plan_stage` (:mod:`~nyx.train.stage.plan`): skip (a finished run matches config, inputs and code), resume
   (a run with the same fingerprint was interrupted) or start fresh; the fingerprint hashes all three.
3. The caller launches ``python -m nyx.train.tracked --config <out>/train_config.json`` (one process or many).
4. :func:`finish_stage` (:mod:`~nyx.train.stage.finish`): dev-split retrieval metrics of the trained model and of
   the model it started from, logged to the stage's MLflow run; the model registered as a version of the profile's
   registered model, with its dev metrics on the version (what promotion decides on: the test split never selects a
   model).

All of it is recorded in ``<checkpoints>/<stage>/nyx_state.json`` as a :class:`StageState`
(:mod:`~nyx.train.stage.state`, which also chooses between the finished stages: :func:`best_stage`);
:func:`loss_trend` (:mod:`~nyx.train.stage.trend`) tells whether a run's loss fell.
"""

from nyx.train.stage.finish import TRAIN_RESULT_FILE, WEIGHTS_TAG, evaluate_dev, finish_stage
from nyx.train.stage.inputs import StageInputs, stage_train_config
from nyx.train.stage.plan import CODE_VERSIONS, TRAIN_CONFIG_FILE, StagePlan, fingerprint, plan_stage, start_stage
from nyx.train.stage.state import (
    STAGES,
    STATE_FILE,
    Stage,
    StageNotFinished,
    StageState,
    best_stage,
    finished_stage,
    load_stage,
    model_spec,
    stage_dir,
)
from nyx.train.stage.trend import loss_trend

__all__ = [
    "CODE_VERSIONS",
    "STAGES",
    "STATE_FILE",
    "TRAIN_CONFIG_FILE",
    "TRAIN_RESULT_FILE",
    "WEIGHTS_TAG",
    "Stage",
    "StageInputs",
    "StageNotFinished",
    "StagePlan",
    "StageState",
    "best_stage",
    "evaluate_dev",
    "finish_stage",
    "fingerprint",
    "finished_stage",
    "load_stage",
    "loss_trend",
    "model_spec",
    "plan_stage",
    "stage_dir",
    "stage_train_config",
    "start_stage",
]
