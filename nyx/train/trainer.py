"""The contrastive trainer: a small loop around accelerate (single process, DDP, or DeepSpeed ZeRO-2).

What accelerate does: process group, device placement, DDP / DeepSpeed wrapping (from the repo's ZeRO-2
JSON, ``"auto"`` values filled from :class:`TrainConfig`), mixed precision, saving and loading the
model/optimizer/scheduler/RNG state. What this module adds: the contrastive step (plain or gradient cache,
:mod:`nyx.train.gradcache`) with the global-batch loss (:mod:`nyx.train.loss`), LoRA/DoRA or full
fine-tuning, deterministic global batches every process slices the same way, step-exact resume, the
``on_log`` hook, and a final save that :meth:`nyx.model.NyxEncoder.from_pretrained` loads.

Layout of ``output_dir``::

    checkpoints/step-00000050/   state/ (accelerate: weights, optimizer, scheduler, RNG per rank)
                                 model/ (LoRA adapter or full HF weights + processor + nyx_profile.json)
                                 trainer_state.json (written last: a checkpoint without it is incomplete)
    final/                       adapter (or full model) + processor + nyx_profile.json + train_summary.json
    merged/                      (LoRA with ``save_merged``) the merged model in HF layout
    metrics.jsonl                one line per logged step (rank 0)
    rejects.jsonl                training records that were rejected or repaired
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nyx.data.rejects import RejectLog
from nyx.train.config import DEFAULT_DEEPSPEED_CONFIG, TrainConfig
from nyx.train.data import (
    TrainingExample,
    batch_records,
    build_training_set,
    global_batches,
    in_batch_false_negatives,
    local_slice,
)
from nyx.train.gradcache import Backprop, cached_step, chunked, plain_step
from nyx.train.loss import MatryoshkaInfoNCE
from nyx.utils.integrity import is_verified, verify_manifest, write_manifest
from nyx.utils.io import read_json, write_json

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
CHECKPOINTS = "checkpoints"

#: ``on_log(step, metrics)``: called on rank 0 only, every ``logging_steps`` and at the last step.
OnLog = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """Where the model went and how the run ended."""

    output_dir: Path
    final_dir: Path
    global_step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per optimizer step (rank 0)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: int = 0
    run_info: dict[str, Any] = field(default_factory=dict)  # how it really ran: see ContrastiveTrainer.run_info


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


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
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


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


def find_latest_checkpoint(output_dir: str | os.PathLike, verify: bool = True) -> Path | None:
    """The complete checkpoint with the highest step whose files match its manifest, or None. A checkpoint that
    fails verification (a zeroed or truncated file) is skipped with a warning naming the file, so training resumes
    from the last one that verifies."""
    root = Path(output_dir) / CHECKPOINTS
    found: list[tuple[int, Path]] = []
    if root.is_dir():
        for d in root.iterdir():
            m = re.fullmatch(r"step-(\d+)", d.name)
            if m and (d / TRAINER_STATE).is_file():
                found.append((int(m.group(1)), d))
    for _, d in sorted(found, reverse=True):
        ok, reason = is_verified(d) if verify else (True, "")
        if ok:
            return d
        log.warning("skipping checkpoint %s: %s", d, reason)
    return None


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


# ----------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------


class ContrastiveTrainer:
    """Stage-1 (and Stage-2) contrastive training of a :class:`~nyx.model.NyxEncoder`.

    Args:
        config: the run's settings.
        on_log: metrics hook, called on rank 0 with ``loss``, ``loss_dim_{d}``, ``lr``, ``grad_norm``,
            ``samples_per_sec``, ``epoch``.
        examples: training examples to use instead of ``config.data`` (tests, notebooks).
    """

    def __init__(
        self, config: TrainConfig, on_log: OnLog | None = None, examples: Sequence[TrainingExample] | None = None
    ):
        self.config = config
        self.on_log = on_log
        self._examples = list(examples) if examples is not None else None
        self.output_dir = Path(config.output_dir)
        self.rejects = RejectLog(stage="train-data")
        self.history: list[dict[str, float]] = []

    # -- setup --------------------------------------------------------------------------------------------

    def make_accelerator(self):
        """The ``accelerate.Accelerator`` this config trains with (DeepSpeed plugin, mixed precision, gloo on
        CPU), seeded. :meth:`train` calls it; benchmarks use it to time steps the same way."""
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, set_seed

        cfg = self.config
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

    def _load_encoder(self, device: torch.device):
        from nyx.model.encoder import NyxEncoder

        cfg = self.config
        overrides: dict[str, Any] = {"show_progress": False}
        for key in ("max_length", "max_pixels", "min_pixels"):
            if getattr(cfg, key) is not None:
                overrides[key] = getattr(cfg, key)
        encoder = NyxEncoder.from_pretrained(cfg.model, device=device, dtype="float32", **overrides)
        backbone = encoder.backbone
        if cfg.gradient_checkpointing:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lora.enabled:
            from peft import LoraConfig, PeftModel, get_peft_model

            if cfg.init_adapter:
                backbone = PeftModel.from_pretrained(backbone, cfg.init_adapter, is_trainable=True)
            else:
                lc = cfg.lora
                backbone = get_peft_model(
                    backbone,
                    LoraConfig(
                        r=lc.rank,
                        lora_alpha=lc.alpha,
                        lora_dropout=lc.dropout,
                        use_dora=lc.use_dora,
                        target_modules=lc.target_modules,
                        bias="none",
                    ),
                )
            encoder.module.backbone = backbone
        encoder.module.train()
        return encoder

    def _training_examples(self) -> tuple[list[TrainingExample], dict[str, dict[str, int]]]:
        if self._examples is not None:
            return self._examples, {
                "given": {"loaded": len(self._examples), "usable": len(self._examples), "mixed": len(self._examples)}
            }
        if not self.config.data:
            raise ValueError("TrainConfig.data lists no training source")
        ts = build_training_set(self.config.data, self.config.n_negatives, self.config.seed, self.rejects)
        return ts.examples, ts.counts

    # -- the run ------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        from accelerate.utils import DistributedType
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        acc = self.make_accelerator()
        self.accelerator = acc
        rank0 = acc.is_main_process
        world = acc.num_processes

        examples, counts = self._training_examples()
        for ex in examples:
            if len(ex.negatives) != cfg.n_negatives:
                raise ValueError(
                    f"example {ex.query.id!r} has {len(ex.negatives)} negatives, "
                    f"{cfg.n_negatives} configured (use build_training_set / fill_negatives)"
                )
        global_bs = cfg.per_device_batch_size * world
        steps_per_epoch = len(examples) // global_bs
        if steps_per_epoch == 0:
            raise ValueError(
                f"{len(examples)} examples cannot fill one global batch of {global_bs} "
                f"({cfg.per_device_batch_size} per device x {world} processes)"
            )
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)

        encoder = self._load_encoder(acc.device)
        self.encoder = encoder
        profile = encoder.profile
        dims = cfg.mrl_dims if cfg.mrl_dims is not None else list(profile.mrl_dims)
        weights = (
            cfg.mrl_weights
            if cfg.mrl_weights is not None
            else (list(profile.mrl_weights) if cfg.mrl_dims is None else [1.0] * len(dims))
        )
        loss_fn = MatryoshkaInfoNCE(dims, weights, cfg.temperature, hidden_size=encoder.hidden_size)

        trainable = [p for p in encoder.module.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("no trainable parameters (check lora.target_modules)")
        optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
        model, optimizer, scheduler = acc.prepare(encoder.module, optimizer, scheduler)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        is_deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        backprop = AcceleratorBackprop(acc, model)
        self.run_info = self._run_info(acc, global_bs, sum(p.numel() for p in trainable))
        if cfg.deepspeed and not is_deepspeed:
            raise RuntimeError(
                f"a DeepSpeed config was given ({cfg.deepspeed}) but accelerate runs "
                f"{acc.distributed_type.value}: refusing to train without DeepSpeed"
            )

        start_step = 0
        resume = self._resolve_resume()
        if resume is not None:
            acc.load_state(str(resume / "state"))
            start_step = int(read_json(resume / TRAINER_STATE)["global_step"])
            if rank0:
                log.info("resumed from %s at step %d", resume, start_step)

        def encode(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            return model(**{k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})

        if rank0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            n_train = sum(p.numel() for p in trainable)
            log.info(
                "training %d examples, %d steps (%d/epoch), global batch %d on %d process(es), "
                "%d trainable parameters, mrl dims %s",
                len(examples),
                total_steps,
                steps_per_epoch,
                global_bs,
                world,
                n_train,
                dims,
            )

        step = start_step
        window: list[dict[str, float]] = []
        t_window = time.perf_counter()
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            batch_ids = global_batches(len(examples), global_bs, cfg.seed, epoch)[index]
            local = [examples[i] for i in local_slice(batch_ids, acc.process_index, world)]
            queries, docs = batch_records(local)
            step_loss = loss_fn
            n_masked = 0
            if cfg.mask_false_negatives:  # every process builds the same mask over the global batch
                mask = in_batch_false_negatives([examples[i] for i in batch_ids])
                n_masked = int(mask.sum())
                if n_masked:
                    step_loss = functools.partial(loss_fn, false_negatives=mask)
            if cfg.grad_cache:
                size = cfg.grad_cache_chunk_size
                out = cached_step(
                    encode,
                    [encoder.collate(c, is_query=True) for c in chunked(queries, size)],
                    [encoder.collate(c, is_query=False) for c in chunked(docs, size)],
                    len(queries),
                    step_loss,
                    backprop,
                )
            else:
                out = plain_step(
                    encode,
                    encoder.collate(queries, is_query=True),
                    encoder.collate(docs, is_query=False),
                    len(queries),
                    step_loss,
                    backprop,
                )
            lr = float(scheduler.get_last_lr()[0])
            if is_deepspeed:  # the engine clipped and stepped inside the last backward
                grad_norm = acc.deepspeed_engine_wrapped.get_global_grad_norm()
            else:
                grad_norm = acc.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1

            metrics = out.loss.as_metrics()
            metrics.update(
                lr=lr,
                grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
                masked_false_negatives=float(n_masked),
            )
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"loss is {metrics['loss']} at step {step}")
            self.history.append({"step": step, **metrics})
            window.append(metrics)
            if step % cfg.logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - t_window
                logged = {k: sum(m[k] for m in window) / len(window) for k in window[0] if k.startswith("loss")}
                logged.update(
                    lr=lr,
                    grad_norm=metrics["grad_norm"],
                    epoch=step / steps_per_epoch,
                    masked_false_negatives=sum(m["masked_false_negatives"] for m in window),
                    samples_per_sec=len(window) * global_bs / max(elapsed, 1e-9),
                )
                if rank0:
                    self._log(step, logged)
                window, t_window = [], time.perf_counter()
            if step % cfg.save_steps == 0 and step < total_steps:
                self.save_checkpoint(step)

        final_dir = self.save_final(step, counts)
        if rank0 and len(self.rejects):
            self.rejects.write(self.output_dir / "rejects.jsonl")
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(self.output_dir, final_dir, step, self.history, counts, len(self.rejects), self.run_info)

    def _run_info(self, acc, global_bs: int, n_trainable: int) -> dict[str, Any]:
        """What the run actually got (not what was asked for): processes, global batch (the in-batch candidates
        each query is contrasted with), backend, ZeRO stage, LoRA rank. Logged as MLflow params by
        :mod:`nyx.train.tracked` and saved in ``final/train_summary.json``."""
        cfg = self.config
        plugin = getattr(acc.state, "deepspeed_plugin", None)
        return {
            "world_size": acc.num_processes,
            "per_device_batch_size": cfg.per_device_batch_size,
            "global_batch_size": global_bs,
            "distributed_type": acc.distributed_type.value,
            "zero_stage": int(plugin.zero_stage) if plugin is not None else None,
            "lora_rank": cfg.lora.rank if cfg.lora.enabled else None,
            "init_adapter": cfg.init_adapter,
            "grad_cache": cfg.grad_cache,
            "trainable_params": int(n_trainable),
            "device": str(acc.device),
        }

    # -- logging, checkpoints, final save -------------------------------------------------------------------

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.on_log is not None:
            self.on_log(step, dict(metrics))

    def _resolve_resume(self) -> Path | None:
        which = self.config.resume_from_checkpoint
        if which is None:
            return None
        if which == "latest":
            found = find_latest_checkpoint(self.output_dir)
            if found is None:
                log.info("resume_from_checkpoint='latest' but no checkpoint in %s: starting fresh", self.output_dir)
            return found
        path = Path(which)
        if not (path / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINER_STATE})")
        verify_manifest(path)  # a named checkpoint that does not verify is an error, never silently used
        return path

    def _save_model(self, folder: Path) -> None:
        """Adapter (LoRA) or full weights, the processor and nyx_profile.json, in HF layout (rank 0 only)."""
        module = self.accelerator.unwrap_model(self.model)
        # nyx_profile.json: the profile with the input settings trained with (nyx.model.config)
        self.encoder.save_pretrained(folder, backbone=module.backbone)

    def save_checkpoint(self, step: int) -> Path:
        """Write ``checkpoints/step-N`` (all ranks take part); prune to ``save_total_limit``."""
        acc = self.accelerator
        root = self.output_dir / CHECKPOINTS
        final = root / f"step-{step:08d}"
        tmp = root / f".step-{step:08d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            # every rank writes into state/ (its RNG state, its ZeRO shard): it must exist before any of them
            # starts, or a fast rank races the main process's makedirs inside save_state
            (tmp / "state").mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp / "state"))
        acc.wait_for_everyone()  # every rank's shard is on disk before the manifest hashes it
        if acc.is_main_process:
            self._save_model(tmp / "model")
            write_json({"global_step": step, "config": self.config.model_dump(mode="json")}, tmp / TRAINER_STATE)
            write_manifest(tmp)  # last: a checkpoint without it is incomplete
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune_checkpoints(root)
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self, root: Path) -> None:
        limit = self.config.save_total_limit
        if limit is None:
            return
        done = sorted((d for d in root.iterdir() if re.fullmatch(r"step-\d+", d.name)), key=lambda d: d.name)
        for d in done[:-limit]:
            shutil.rmtree(d, ignore_errors=True)

    def save_final(self, step: int, counts: dict[str, dict[str, int]]) -> Path:
        """``final/`` (adapter or full model) and, for LoRA with ``save_merged``, ``merged/``."""
        acc = self.accelerator
        final = self.output_dir / "final"
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = self.output_dir / ".final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self._save_model(tmp)
            write_json(
                {
                    "global_step": step,
                    "counts": counts,
                    "rejected": len(self.rejects),
                    "run": getattr(self, "run_info", {}),
                    "config": self.config.model_dump(mode="json"),
                    "last": self.history[-1] if self.history else None,
                },
                tmp / "train_summary.json",
            )
            write_manifest(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            if self.config.lora.enabled and self.config.save_merged:
                self._save_merged(self.output_dir / "merged")
        acc.wait_for_everyone()
        return final

    def _save_merged(self, folder: Path) -> None:
        import copy

        peft_model = self.accelerator.unwrap_model(self.model).backbone
        merged = copy.deepcopy(peft_model).merge_and_unload()
        shutil.rmtree(folder, ignore_errors=True)
        self.encoder.save_pretrained(folder, backbone=merged)  # the processor and config final/ has
        write_manifest(folder)


def train(
    config: TrainConfig, on_log: OnLog | None = None, examples: Sequence[TrainingExample] | None = None
) -> TrainResult:
    """Run one training job (see :class:`ContrastiveTrainer`)."""
    return ContrastiveTrainer(config, on_log=on_log, examples=examples).train()
