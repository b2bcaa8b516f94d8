"""The contrastive trainer: the training loop of one run, around accelerate (single process, DDP, or DeepSpeed ZeRO-2).

What accelerate does (:mod:`nyx.train.backend`): process group, device placement, DDP / DeepSpeed wrapping,
mixed precision, saving and loading the model/optimizer/scheduler/RNG state. What this module adds: the
contrastive step (plain or gradient cache, :mod:`nyx.train.gradcache`) with the global-batch loss
(:mod:`nyx.train.loss`) on the model :mod:`nyx.train.model_setup` prepares (LoRA/DoRA or full fine-tuning),
deterministic global batches every process slices the same way, step-exact resume (:mod:`nyx.train.checkpoints`),
the ``on_log`` hook, and a final save that :meth:`nyx.model.NyxEncoder.from_pretrained` loads.

Layout of ``output_dir``::

    checkpoints/step-00000050/   a checkpoint (:mod:`nyx.train.checkpoints`)
    final/                       adapter (or full model) + processor + nyx_profile.json + train_summary.json
    merged/                      (LoRA with ``save_merged``) the merged model in HF layout
    metrics.jsonl                one line per logged step (rank 0)
    rejects.jsonl                training records that were rejected or repaired
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nyx.data.rejects import RejectLog
from nyx.train.backend import AcceleratorBackprop, make_accelerator
from nyx.train.checkpoints import checkpoint_step, resolve_resume, save_checkpoint
from nyx.train.config import TrainConfig
from nyx.train.dataset import (
    TrainingExample,
    batch_records,
    build_training_set,
    global_batches,
    in_batch_false_negatives,
    local_slice,
)
from nyx.train.gradcache import LossFn, cached_step, plain_step
from nyx.train.loss import MatryoshkaInfoNCE
from nyx.train.model_setup import load_encoder
from nyx.utils.batches import chunked
from nyx.utils.integrity import write_manifest
from nyx.utils.io import write_json

log = logging.getLogger(__name__)

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
        acc = make_accelerator(cfg)
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

        encoder = load_encoder(cfg, acc.device)
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
        resume = resolve_resume(cfg.resume_from_checkpoint, self.output_dir)
        if resume is not None:
            acc.load_state(str(resume / "state"))
            start_step = checkpoint_step(resume)
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
            step_loss: LossFn = loss_fn
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
                save_checkpoint(acc, self.output_dir, step, self._save_model, cfg)

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

    # -- logging, final save ----------------------------------------------------------------------------------

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.on_log is not None:
            self.on_log(step, dict(metrics))

    def _save_model(self, folder: Path) -> None:
        """Adapter (LoRA) or full weights, the processor and nyx_profile.json, in HF layout (rank 0 only)."""
        module = self.accelerator.unwrap_model(self.model)
        # nyx_profile.json: the profile with the input settings trained with (nyx.model.config)
        self.encoder.save_pretrained(folder, backbone=module.backbone)

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
