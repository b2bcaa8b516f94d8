"""The back-end a training run steps through: the ``accelerate.Accelerator`` (single process, DDP, or DeepSpeed
ZeRO-2 from the repo's JSON, ``"auto"`` values filled from :class:`~nyx.train.config.TrainConfig`) and the
:class:`~nyx.train.gradcache.Backprop` that runs backward through it."""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from pathlib import Path
from typing import Any

import torch

from nyx.train.config import DEFAULT_DEEPSPEED_CONFIG, TrainConfig
from nyx.train.gradcache import Backprop


def resolve_deepspeed_config(path: str | os.PathLike) -> Path:
    """A DeepSpeed JSON as given, or relative to the repository (profiles say ``configs/deepspeed_zero2.json``,
    which must not depend on the directory a launcher starts in)."""
    p = Path(path)
    for candidate in (p, DEFAULT_DEEPSPEED_CONFIG.parents[1] / p):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"DeepSpeed config {path} not found (also looked in {DEFAULT_DEEPSPEED_CONFIG.parent})")


def _disable_deepspeed_shm_op() -> None:
    """Skip DeepSpeed's JIT-compiled shared-memory op on CPU (50-75 s on a fresh machine); gloo does the work."""
    with contextlib.suppress(ImportError):
        comm: Any = importlib.import_module("deepspeed.comm.torch")
        comm.build_shm_op = lambda: None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_process_env() -> None:
    """DeepSpeed in a single plain process (no launcher): give it a one-process group to join."""
    if "LOCAL_RANK" not in os.environ:
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=os.environ.get("MASTER_PORT") or str(_free_port()),
        )


def _resolve_bf16(setting: bool | str) -> bool:
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


def make_accelerator(cfg: TrainConfig):
    """The ``accelerate.Accelerator`` ``cfg`` trains with (DeepSpeed plugin, mixed precision, gloo on CPU), seeded.
    :meth:`~nyx.train.trainer.ContrastiveTrainer.train` calls it; benchmarks use it to time steps the same way."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, set_seed

    plugin = None
    if cfg.deepspeed:
        _disable_deepspeed_shm_op()
        _ensure_process_env()
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        plugin = DeepSpeedPlugin(
            hf_ds_config=str(resolve_deepspeed_config(cfg.deepspeed)),
            gradient_clipping=cfg.max_grad_norm,
            gradient_accumulation_steps=1,
        )
    on_cpu = not torch.cuda.is_available()
    accelerator = Accelerator(
        mixed_precision="bf16" if _resolve_bf16(cfg.bf16) else "no",
        deepspeed_plugin=plugin,
        step_scheduler_with_optimizer=False,
        # CPU: DDP needs cpu=True (gloo, MULTI_CPU); DeepSpeed needs the gloo backend named explicitly,
        # otherwise accelerate finds no device backend and counts a single process.
        cpu=on_cpu and plugin is None,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if on_cpu and plugin is not None else None,
    )
    if plugin is not None:  # the "auto" batch sizes: no dataloader goes through accelerate.prepare
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=cfg.per_device_batch_size,
            train_batch_size=cfg.per_device_batch_size * accelerator.num_processes,
            gradient_accumulation_steps=1,
        )
    set_seed(cfg.seed)
    return accelerator


class AcceleratorBackprop(Backprop):
    """Backward through accelerate: DDP ``no_sync`` except for the last chunk; with DeepSpeed, the engine's
    gradient-accumulation boundary is the last chunk (the engine then clips and steps the optimizer)."""

    def __init__(self, accelerator: Any, model: torch.nn.Module):
        from accelerate.utils import DistributedType

        self.accelerator = accelerator
        self.model = model
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED

    def sync(self, is_last: bool):
        if is_last or self.deepspeed:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.model)

    def backward(self, tensor: torch.Tensor, is_last: bool) -> None:
        if self.deepspeed:
            self.accelerator.deepspeed_engine_wrapped.backward(tensor, sync_gradients=is_last)
        else:
            self.accelerator.backward(tensor)
