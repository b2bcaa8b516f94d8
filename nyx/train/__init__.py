"""Stage-1/Stage-2 contrastive training: data, loss (InfoNCE + Matryoshka), gradient cache and trainer.

Entry points: :func:`nyx.train.trainer.train` (library) and ``python -m nyx.train.run --config cfg.json``
(CLI, also under ``torchrun`` and the ``deepspeed`` launcher). Heavy modules are imported lazily so that
``import nyx.train`` stays cheap.
"""

from nyx.train.loss import MatryoshkaInfoNCE, MatryoshkaLossOutput, info_nce, matryoshka_info_nce

__all__ = ["MatryoshkaInfoNCE", "MatryoshkaLossOutput", "info_nce", "matryoshka_info_nce"]
