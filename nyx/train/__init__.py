"""Stage-1/Stage-2 contrastive training: data, loss (InfoNCE + Matryoshka), gradient cache and trainer.

Entry points: :func:`nyx.train.trainer.train` (library) and ``python -m nyx.train.run --config cfg.json``
(CLI, also under ``torchrun`` and the ``deepspeed`` launcher). Only the loss is re-exported here; the
trainer (accelerate, peft, transformers) is imported from :mod:`nyx.train.trainer` when needed.
"""

from nyx.train.loss import MatryoshkaInfoNCE, MatryoshkaLossOutput, info_nce, matryoshka_info_nce

__all__ = ["MatryoshkaInfoNCE", "MatryoshkaLossOutput", "info_nce", "matryoshka_info_nce"]
