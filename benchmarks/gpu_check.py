"""GPU check: encoding throughput and one LoRA training step of the paper-size Nyx model (one H100/H200).

Nothing is downloaded. The backbone is the Qwen2.5-VL-3B-Instruct *architecture* (3.75B parameters, the
values of the hub ``config.json`` written below) with RANDOM weights, created directly on the device in
bf16; the processor and tokenizer are the tiny model's (:func:`nyx.model.backbone.ensure_tiny_model`), which
carry Qwen's special tokens. The config's special-token ids are set to that tokenizer's ids and the
vocabulary keeps its 151,936 rows, so compute and memory are the real model's while the text is meaningless.

Phases (each reported with status ``ok``, ``skipped`` (budget) or ``error``):

1. ``encode`` — documents/s of the project's encoder (:class:`nyx.model.encoder.NyxEncoder`, bf16,
   ``inference_mode``) on synthetic mixed documents (~200 text tokens + one 560x560 RGB image = 400 image
   tokens at ``max_pixels = 400*28*28``): per batch size, the model alone on a pre-collated batch
   (``NyxEncoder.collate`` once, ``NyxEncoder.embed`` timed) with its peak GPU memory, then end to end
   (``NyxEncoder.encode_documents``: image loading, processor and model) at the largest batch size.
2. ``train_plain`` and ``train_gradcache`` — one optimizer step of LoRA (rank 8 on the language model's
   projections, :data:`nyx.train.config.DEFAULT_LORA_TARGET`) with gradient checkpointing, per-device batch
   of 20 queries (text questions with four options, in the paper's instruction) + 20 positives + 20 hard
   negatives (documents as above), InfoNCE + Matryoshka
   (2048/1024/512/256) from :mod:`nyx.train.loss`, through :func:`nyx.train.gradcache.plain_step` and
   :func:`~nyx.train.gradcache.cached_step` (chunk 4). The accelerator is the trainer's own
   (:func:`nyx.train.backend.make_accelerator`): DeepSpeed ZeRO-2 from ``configs/deepspeed_zero2.json`` on one
   process, or, when DeepSpeed is missing or cannot initialise, plain accelerate with torch AdamW (the JSON
   says which, and why). Reported: step time (after warm-up), collate time, peak GPU memory
   (``torch.cuda.max_memory_allocated``, reset per phase) and the memory held before the phase.

``--budget-s`` bounds the wall-clock time: a phase (or a batch size, or a timed step) that would start after
the budget is spent is skipped and marked so. Prints a rich table and writes
``benchmarks/results/gpu_check.json``; exits 1 when a phase failed.

    python benchmarks/gpu_check.py                          # paper size, one GPU (budget 420 s + 45 s grace)
    python benchmarks/gpu_check.py --device cpu --tiny      # the same code path on the tiny model (smoke test)
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # the budget counts from here (imports included)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check.json"
PHASES = ("encode", "train_plain", "train_gradcache")

# ------------------------------------------------------------------------------------------------ the model


def build_random_backbone(config: Any, device: Any, dtype: Any, seed: int = 0):
    """``Qwen2_5_VLForConditionalGeneration(config)`` with random weights, created on ``device`` in ``dtype``
    (no CPU round trip: 3.75B parameters initialise on the GPU in seconds). Returned in eval mode."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()  # a no-op unless some buffer was made elsewhere


def build_encoder(tiny: bool, device: Any, dtype: Any, seed: int = 0):
    """A :class:`NyxEncoder` over a random-weight backbone (paper size, or the tiny architecture) and the tiny
    model's processor. Returns ``(encoder, info)``."""
    from transformers import AutoConfig

    from nyx.model.architecture import PAPER_TOKEN_IDS, SPECIAL_TOKEN_ID_KEYS, paper_architecture_config
    from nyx.model.backbone import load_profile_processor, resolve_profile
    from nyx.model.config import EncoderConfig
    from nyx.model.encoder import NyxEncoder
    from nyx.model.tiny import ensure_tiny_model

    tiny_dir = ensure_tiny_model()
    tiny_config = AutoConfig.from_pretrained(tiny_dir)
    profile = resolve_profile("tiny" if tiny else "paper")
    config = tiny_config if tiny else paper_architecture_config(tiny_config)
    t0 = time.perf_counter()
    backbone = build_random_backbone(config, device, dtype, seed)
    _sync(device)
    build_s = time.perf_counter() - t0
    encoder = NyxEncoder(
        backbone,
        load_profile_processor(resolve_profile("tiny")),
        profile,
        EncoderConfig.from_profile(profile, show_progress=False),
    )
    info = {
        "profile": profile.name,
        "architecture": "Qwen2_5_VLForConditionalGeneration (random weights)",
        "n_params": sum(p.numel() for p in backbone.parameters()),
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(device),
        "build_s": build_s,
        "hidden_size": encoder.hidden_size,
        "text_layers": config.text_config.num_hidden_layers,
        "vision_depth": config.vision_config.depth,
        "vocab_size": config.text_config.vocab_size,
        "processor": str(tiny_dir),
        "token_ids": {k: getattr(config, k) for k in SPECIAL_TOKEN_ID_KEYS},
    }
    if not tiny:
        info["released_model_token_ids"] = PAPER_TOKEN_IDS  # what the real checkpoint uses, for comparison
    return encoder, info


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class CheckSettings:
    """What one run measures. The defaults are the GPU check; :meth:`tiny_cpu` is the CPU smoke run
    (smaller batches, 280x280 images, no warm-up step)."""

    device: str = "cuda"
    tiny: bool = False
    dtype: str = "auto"
    encode_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 16, 32])  # 1: one document per pass
    encode_iters: int = 3
    encode_e2e_docs: int = 64
    doc_text_tokens: int = 200
    image_side: int = 560  # 560*560 = 400*28*28 pixels: 400 image tokens, no resize
    train_batch: int = 20
    n_negatives: int = 1
    chunk_size: int = 4
    lora_rank: int = 8
    warmup_steps: int = 1
    timed_steps: int = 2
    optimizer: str = "deepspeed"  # or "adamw"
    budget_s: float = 420.0
    grace_s: float = 45.0  # a phase running this long past the budget is interrupted
    seed: int = 0

    def __post_init__(self) -> None:
        counts = dict(
            encode_iters=self.encode_iters,
            encode_e2e_docs=self.encode_e2e_docs,
            doc_text_tokens=self.doc_text_tokens,
            image_side=self.image_side,
            train_batch=self.train_batch,
            chunk_size=self.chunk_size,
            lora_rank=self.lora_rank,
            timed_steps=self.timed_steps,
        )
        bad = {k: v for k, v in counts.items() if v < 1}
        if bad or not self.encode_batch_sizes or min(self.encode_batch_sizes) < 1:
            raise ValueError(f"must be positive: {bad or {'encode_batch_sizes': self.encode_batch_sizes}}")
        if self.n_negatives < 0 or self.warmup_steps < 0:
            raise ValueError("n_negatives and warmup_steps must be >= 0")
        if self.optimizer not in ("deepspeed", "adamw"):
            raise ValueError(f"optimizer must be 'deepspeed' or 'adamw', got {self.optimizer!r}")

    @classmethod
    def tiny_cpu(cls, **overrides: Any) -> CheckSettings:
        base = dict(
            device="cpu",
            tiny=True,
            encode_batch_sizes=[1, 2],
            encode_iters=1,
            encode_e2e_docs=4,
            image_side=280,
            train_batch=2,
            chunk_size=2,
            warmup_steps=0,
            timed_steps=1,
            budget_s=120.0,
        )
        return cls(**{**base, **overrides})


class HardDeadline(Exception):
    """Raised (by SIGALRM) in whatever is running when the budget plus its grace period is over."""


class Budget:
    """Wall-clock budget counted from the script's start. Phases check it before they start; the hard
    deadline (``budget + grace_s``) interrupts a phase that runs far over, so the report is still written."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def spent(self) -> float:
        return time.perf_counter() - T_START

    def left(self) -> float:
        return self.seconds - self.spent()

    def exhausted(self) -> bool:
        return self.left() <= 0

    @contextlib.contextmanager
    def hard_deadline(self, grace_s: float) -> Iterator[None]:
        if not hasattr(signal, "SIGALRM"):
            yield
            return

        def _raise(signum: int, frame: Any) -> None:
            raise HardDeadline(f"hard deadline: {self.seconds + grace_s:.0f} s since start")

        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, max(self.left() + grace_s, 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------------ measuring


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` (reset at entry) on a GPU; on the CPU the
    process's resident high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; where that
    cannot be reset, the peak since the process started). ``base_mib`` is what was held at entry."""

    def __init__(self, device: Any):
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.kind = "cuda_max_memory_allocated" if self.cuda else "process_rss_high_water_mark"
        self.base_mib = self.peak_mib = 0.0

    @staticmethod
    def _status_mib(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        raise OSError(f"no {key} in /proc/self/status")

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_mib = torch.cuda.memory_allocated() / 2**20
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM to the current RSS
            except OSError:
                self.kind = "process_rss_peak_since_start"
            self.base_mib = self._status_mib("VmRSS")
        try:
            yield self
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
            else:  # the kernel's RSS counters are approximate: never report a peak below the start
                self.peak_mib = max(self._status_mib("VmHWM"), self.base_mib)

    def as_dict(self) -> dict[str, Any]:
        return {
            "memory_kind": self.kind,
            "base_mib": self.base_mib,
            "peak_mib": self.peak_mib,
            "peak_over_base_mib": self.peak_mib - self.base_mib,
        }


def _timed(fn: Callable[[], Any], device: Any) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _error(e: BaseException) -> dict[str, Any]:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
    return {
        "status": "error",
        "error": f"{type(e).__name__}: {e}"[:2000],
        "traceback": traceback.format_exc(limit=8)[-4000:],
    }


# ------------------------------------------------------------------------------------------------ inputs

WORDS = (
    "river stone light garden window paper music bridge forest market winter engine silver harbour letter "
    "mountain candle station island thunder museum painting village ancient modern city north south "
    "history science people water summer color large small building festival"
).split()


def write_images(folder: Path, n: int, side: int, seed: int) -> list[str]:
    """``n`` distinct ``side`` x ``side`` RGB JPEGs (smooth colour fields with noise, like photos compress)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:side, 0:side] / side
    paths = []
    for i in range(n):
        base = np.stack([np.sin(2 * np.pi * (a * xx + b * yy)) for a, b in rng.uniform(0.5, 3, (3, 2))], -1)
        arr = np.clip((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    return paths


def synthetic_documents(n: int, images: list[str], tokenizer: Any, text_tokens: int, prefix: str = "d") -> list:
    """``n`` documents: ``text_tokens`` tokens of text (cut with ``tokenizer``) followed by one image."""
    from nyx.data.records import Part, Record

    docs = []
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k * 3 + k * k) % len(WORDS)] for k in range(text_tokens * 2))
        ids = tokenizer(words, add_special_tokens=False)["input_ids"][:text_tokens]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        docs.append(Record(f"{prefix}{i}", [Part.of_text(text), Part.of_image(images[i % len(images)])]))
    return docs


def training_examples(n: int, n_negatives: int, images: list[str], tokenizer: Any, text_tokens: int) -> list:
    """``n`` NyxQA-like triples: a text question with four options, a positive and ``n_negatives`` negatives."""
    from nyx.data.records import Part, Record
    from nyx.train.dataset import TrainingExample

    pos = synthetic_documents(n, images, tokenizer, text_tokens, prefix="p")
    neg = synthetic_documents(n * n_negatives, images[::-1], tokenizer, text_tokens, prefix="n")
    out = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 5 + 3) % len(WORDS)]
        query = Record(
            f"q{i}",
            [Part.of_text(f"Which {a} is shown near the {b} in the picture of the document?")],
            {"choices": [WORDS[(i + k) % len(WORDS)] for k in range(4)]},
        )
        out.append(TrainingExample(query, pos[i], tuple(neg[i * n_negatives : (i + 1) * n_negatives]), "gpu-check"))
    return out


# ------------------------------------------------------------------------------------------------ phase 1


def run_encode(encoder: Any, docs: list, s: CheckSettings, budget: Budget) -> dict[str, Any]:
    """Model-only docs/s per batch size (with the speed-up over batch 1 when it is measured), then end-to-end
    ``encode_documents`` at the largest batch size and one document per call."""
    import numpy as np
    import torch

    rows: list[dict[str, Any]] = []
    for bs in s.encode_batch_sizes:
        if budget.exhausted():
            rows.append({"batch_size": bs, "status": "skipped", "reason": "budget"})
            continue
        try:
            t0 = time.perf_counter()
            inputs = encoder.collate(docs[:bs], is_query=False)
            collate_s = time.perf_counter() - t0
            mem = PeakMemory(s.device)
            with torch.inference_mode(), mem.measure():
                _timed(lambda: encoder.embed(inputs), s.device)  # warm-up (kernels, allocator)  # noqa: B023
                times = [_timed(lambda: encoder.embed(inputs), s.device)[1] for _ in range(s.encode_iters)]  # noqa: B023
            med = statistics.median(times)
            tokens = int(inputs["attention_mask"].sum())
            rows.append(
                {
                    "batch_size": bs,
                    "status": "ok",
                    "docs_per_s": bs / med,
                    "tokens_per_s": tokens / med,
                    "seconds_median": med,
                    "seconds_all": times,
                    "tokens": tokens,
                    "image_tokens": int((inputs["input_ids"] == encoder.module.vl_model().config.image_token_id).sum()),
                    "collate_s": collate_s,
                    "collate_docs_per_s": bs / collate_s,
                    **mem.as_dict(),
                }
            )
        except Exception as e:  # noqa: BLE001 - one batch size failing (OOM) must not hide the others
            rows.append({"batch_size": bs, **_error(e)})
    single = next((r for r in rows if r["batch_size"] == 1 and r["status"] == "ok"), None)
    for r in rows:
        if single is not None and r["status"] == "ok":
            r["speedup_vs_batch_1"] = r["docs_per_s"] / single["docs_per_s"]
    result: dict[str, Any] = {"model_only": rows}
    bs = max(s.encode_batch_sizes)
    n = min(s.encode_e2e_docs, len(docs))
    runs = {
        "end_to_end": lambda: encoder.encode_documents(docs[:n], batch_size=bs),
        # the research code's way: one document per call (images, processor and model each time)
        "end_to_end_one_at_a_time": lambda: np.concatenate(
            [encoder.encode_documents([d], batch_size=1) for d in docs[:n]]
        ),
    }
    for key, run in runs.items():
        if budget.exhausted():
            result[key] = {"status": "skipped", "reason": "budget"}
            continue
        try:
            emb, secs = _timed(run, s.device)
            result[key] = {
                "status": "ok",
                "batch_size": bs if key == "end_to_end" else 1,
                "n_docs": n,
                "seconds": secs,
                "docs_per_s": n / secs,
                "dim": int(emb.shape[1]),
                "finite": bool(math.isfinite(float(abs(emb).sum()))),
            }
        except Exception as e:  # noqa: BLE001
            result[key] = _error(e)
    if result["end_to_end"]["status"] == result["end_to_end_one_at_a_time"]["status"] == "ok":
        result["end_to_end_speedup"] = (
            result["end_to_end"]["docs_per_s"] / result["end_to_end_one_at_a_time"]["docs_per_s"]
        )
    parts = rows + [result["end_to_end"], result["end_to_end_one_at_a_time"]]
    result["status"] = (
        "error"
        if any(p["status"] == "error" for p in parts)
        else "ok"
        if any(p["status"] == "ok" for p in parts)
        else "skipped"
    )
    return result


# ------------------------------------------------------------------------------------------------ phases 2-3


@dataclass
class TrainingSetup:
    """The prepared model, optimizer and loss, shared by both training phases."""

    accelerator: Any
    model: Any
    optimizer: Any
    trainable: list
    loss_fn: Any
    backprop: Any
    backend: str
    backend_note: str | None
    is_deepspeed: bool
    max_grad_norm: float
    info: dict[str, Any]


def _reset_accelerate(env_before: dict[str, str]) -> None:
    """Forget a failed accelerate/DeepSpeed set-up so the next one starts clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    for k in set(os.environ) - set(env_before):
        del os.environ[k]
    os.environ.update(env_before)


def prepare_training(encoder: Any, s: CheckSettings, workdir: Path) -> TrainingSetup:
    """Gradient checkpointing and LoRA as the trainer applies them, then the trainer's accelerator: DeepSpeed
    ZeRO-2 when asked for and possible, otherwise plain accelerate with torch AdamW."""
    import torch

    from nyx.train.backend import AcceleratorBackprop, make_accelerator
    from nyx.train.config import DEFAULT_DEEPSPEED_CONFIG, LoraSettings, TrainConfig
    from nyx.train.loss import MatryoshkaInfoNCE
    from nyx.train.model_setup import prepare_for_training

    t0 = time.perf_counter()
    lora = LoraSettings(rank=s.lora_rank)
    prepare_for_training(encoder, lora, gradient_checkpointing=True)
    trainable = [p for p in encoder.module.parameters() if p.requires_grad]
    profile = encoder.profile
    loss_fn = MatryoshkaInfoNCE(list(profile.mrl_dims), list(profile.mrl_weights), hidden_size=encoder.hidden_size)
    bf16 = encoder.module.vl_model().dtype == torch.bfloat16

    attempts = ["deepspeed", "adamw"] if s.optimizer == "deepspeed" else ["adamw"]
    note = None
    for backend in attempts:
        if backend == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
            note = "deepspeed is not installed: fell back to torch AdamW without DeepSpeed"
            continue
        env_before = dict(os.environ)
        try:
            cfg = TrainConfig(
                model=profile.name,
                output_dir=str(workdir / "train"),
                lora=lora,
                gradient_checkpointing=True,
                per_device_batch_size=s.train_batch,
                n_negatives=s.n_negatives,
                grad_cache_chunk_size=s.chunk_size,
                bf16=bf16,
                seed=s.seed,
                deepspeed=str(DEFAULT_DEEPSPEED_CONFIG) if backend == "deepspeed" else None,
            )
            acc = make_accelerator(cfg)
            optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            model, optimizer = acc.prepare(encoder.module, optimizer)
        except Exception as e:  # noqa: BLE001 - DeepSpeed failing to start is a finding, not the end
            if backend == attempts[-1]:
                raise
            note = f"DeepSpeed could not initialise ({type(e).__name__}: {str(e)[:500]}): fell back to torch AdamW"
            _reset_accelerate(env_before)
            continue
        from accelerate.utils import DistributedType

        is_ds = acc.distributed_type == DistributedType.DEEPSPEED
        info = {
            "backend": "deepspeed_zero2" if is_ds else "torch_adamw",
            "backend_note": note,
            "mixed_precision": str(acc.mixed_precision),
            "num_processes": acc.num_processes,
            "lora_rank": lora.rank,
            "lora_alpha": lora.alpha,
            "lora_target": lora.target_modules,
            "trainable_params": sum(p.numel() for p in trainable),
            "gradient_checkpointing": True,
            "mrl_dims": list(profile.mrl_dims),
            "mrl_weights": list(profile.mrl_weights),
            "temperature": loss_fn.temperature,
            "setup_s": time.perf_counter() - t0,
        }
        return TrainingSetup(
            acc,
            model,
            optimizer,
            trainable,
            loss_fn,
            AcceleratorBackprop(acc, model),
            info["backend"],
            note,
            is_ds,
            cfg.max_grad_norm,
            info,
        )
    raise RuntimeError("no training backend could be set up")  # unreachable: the last attempt raises


def run_train(
    mode: str, encoder: Any, setup: TrainingSetup, examples: list, s: CheckSettings, budget: Budget
) -> dict[str, Any]:
    """Warm-up plus timed optimizer steps of ``plain_step`` or ``cached_step`` on one fixed batch."""
    import torch

    from nyx.train.dataset import batch_records
    from nyx.train.gradcache import cached_step, plain_step
    from nyx.utils.batches import chunked

    acc = setup.accelerator
    queries, docs = batch_records(examples)

    def encode(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return setup.model(**{k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})

    t0 = time.perf_counter()
    if mode == "plain":
        q_in, d_in = encoder.collate(queries, is_query=True), encoder.collate(docs, is_query=False)
        batches = [q_in, d_in]
    else:
        q_in = [encoder.collate(c, is_query=True) for c in chunked(queries, s.chunk_size)]
        d_in = [encoder.collate(c, is_query=False) for c in chunked(docs, s.chunk_size)]
        batches = q_in + d_in
    collate_s = time.perf_counter() - t0

    def step() -> tuple[dict[str, float], float]:
        if mode == "plain":
            out = plain_step(encode, q_in, d_in, len(queries), setup.loss_fn, setup.backprop)
        else:
            out = cached_step(encode, q_in, d_in, len(queries), setup.loss_fn, setup.backprop)
        if setup.is_deepspeed:  # the engine clipped and stepped inside the last backward
            norm = acc.deepspeed_engine_wrapped.get_global_grad_norm()
        else:
            norm = acc.clip_grad_norm_(setup.trainable, setup.max_grad_norm)
            setup.optimizer.step()
            setup.optimizer.zero_grad(set_to_none=True)
        return out.loss.as_metrics(), float(norm) if norm is not None else float("nan")

    encoder.module.train()
    mem = PeakMemory(s.device)
    times: list[float] = []
    warmup_s: float | None = None
    skipped = 0
    with mem.measure():
        for i in range(s.warmup_steps + s.timed_steps):
            if times and budget.exhausted():  # always time at least one step once a phase has started
                skipped = s.warmup_steps + s.timed_steps - i
                break
            (metrics, grad_norm), dt = _timed(step, s.device)
            if i >= s.warmup_steps:
                times.append(dt)
            else:
                warmup_s = dt
    n_docs = len(docs)
    return {
        "status": "ok",
        "mode": mode,
        "backend": setup.backend,
        "chunk_size": s.chunk_size if mode == "gradcache" else None,
        "queries": len(queries),
        "documents": n_docs,
        "hard_negatives_per_query": s.n_negatives,
        "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
        "padded_tokens": int(sum(b["attention_mask"].numel() for b in batches)),
        "images": int(sum(len(b["image_grid_thw"]) for b in batches if "image_grid_thw" in b)),
        "collate_s": collate_s,
        "warmup_step_s": warmup_s,
        "step_s": statistics.mean(times),
        "step_s_all": times,
        "steps_skipped_for_budget": skipped,
        "examples_per_s": len(queries) / statistics.mean(times),
        "loss": metrics["loss"],
        "loss_per_dim": {k: v for k, v in metrics.items() if k != "loss"},
        "grad_norm": grad_norm,
        "finite": math.isfinite(metrics["loss"]),
        **mem.as_dict(),
    }


# ------------------------------------------------------------------------------------------------ driver


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": _versions(),
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": p.name,
            "memory_gib": p.total_memory / 2**30,
            "capability": f"{p.major}.{p.minor}",
            "cuda": torch.version.cuda,
        }
    return info


def run_check(s: CheckSettings, workdir: Path) -> dict[str, Any]:
    """All phases in order under the budget; every phase gets an entry, whatever happens."""
    import torch

    from nyx.model.backbone import resolve_dtype

    budget = Budget(s.budget_s)
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": asdict(s),
        "machine": _machine(s.device),
        "model": None,
        "training": None,
        "phases": {p: {"status": "skipped", "reason": "budget"} for p in PHASES},
    }
    if budget.exhausted():
        return report
    torch.manual_seed(s.seed)
    dtype = resolve_dtype(s.dtype, s.device)
    encoder, report["model"] = build_encoder(s.tiny, s.device, dtype, s.seed)
    tok = encoder.tokenizer
    images = write_images(workdir / "images", 8, s.image_side, s.seed)
    n_docs = max(max(s.encode_batch_sizes), s.encode_e2e_docs)
    docs = synthetic_documents(n_docs, images, tok, s.doc_text_tokens)
    examples = training_examples(s.train_batch, s.n_negatives, images, tok, s.doc_text_tokens)

    setup: TrainingSetup | None = None
    try:
        with budget.hard_deadline(s.grace_s):
            if not budget.exhausted():
                try:
                    report["phases"]["encode"] = run_encode(encoder, docs, s, budget)
                except Exception as e:  # noqa: BLE001
                    report["phases"]["encode"] = _error(e)
            for mode in ("plain", "gradcache"):
                name = f"train_{mode}"
                if budget.exhausted():
                    continue
                try:
                    if setup is None:
                        setup = prepare_training(encoder, s, workdir)
                        report["training"] = setup.info
                    report["phases"][name] = run_train(mode, encoder, setup, examples, s, budget)
                except Exception as e:  # noqa: BLE001 - OOM in the plain step must not hide the gradient cache
                    report["phases"][name] = _error(e)
    finally:
        if setup is not None:
            with contextlib.suppress(Exception):
                setup.accelerator.end_training()  # closes the (one-process) process group
    return report


def print_report(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    model = report.get("model") or {}
    gpu = report["machine"].get("gpu", {}).get("name", report["settings"]["device"])
    title = (
        f"GPU check on {gpu}: {model.get('profile', '?')} architecture "
        f"({model.get('n_params', 0) / 1e9:.2f}B params, random weights, {model.get('dtype', '?')})"
    )
    t = Table(title=title)
    for c in ("phase", "setting", "status", "docs/s or step s", "tokens", "peak MiB", "peak - base MiB", "notes"):
        t.add_column(c, justify="right" if c not in ("phase", "notes", "status") else "left")

    def mem(r: dict[str, Any]) -> tuple[str, str]:
        if "peak_mib" not in r:
            return "", ""
        return f"{r['peak_mib']:,.0f}", f"{r['peak_over_base_mib']:,.0f}"

    enc = report["phases"]["encode"]
    if "model_only" in enc:
        for r in enc["model_only"]:
            ok = r["status"] == "ok"
            speedup = f", {r['speedup_vs_batch_1']:.1f}x batch 1" if "speedup_vs_batch_1" in r else ""
            t.add_row(
                "encode (model)",
                f"batch {r['batch_size']}",
                r["status"],
                f"{r['docs_per_s']:.1f} docs/s" if ok else "",
                str(r.get("tokens", "")),
                *mem(r),
                f"collate {r['collate_docs_per_s']:.1f} docs/s{speedup}" if ok else r.get("error", r.get("reason", "")),
            )
        for key in ("end_to_end_one_at_a_time", "end_to_end"):
            e2e = enc[key]
            ok = e2e["status"] == "ok"
            speedup = (
                f", {enc['end_to_end_speedup']:.1f}x one at a time"
                if key == "end_to_end" and "end_to_end_speedup" in enc
                else ""
            )
            t.add_row(
                "encode (end to end)",
                f"batch {e2e.get('batch_size', '')}",
                e2e["status"],
                f"{e2e['docs_per_s']:.1f} docs/s" if ok else "",
                "",
                "",
                "",
                f"{e2e['n_docs']} docs, images+processor+model{speedup}"
                if ok
                else e2e.get("error", e2e.get("reason", "")),
            )
    else:
        t.add_row("encode", "", enc["status"], "", "", "", "", enc.get("error", enc.get("reason", "")))
    for mode in ("plain", "gradcache"):
        r = report["phases"][f"train_{mode}"]
        ok = r["status"] == "ok"
        setting = (
            f"{r['queries']}q+{r['documents']}d" + (f", chunk {r['chunk_size']}" if r.get("chunk_size") else "")
            if ok
            else ""
        )
        notes = (
            f"{r['backend']}, loss {r['loss']:.3f}, collate {r['collate_s']:.1f}s"
            if ok
            else r.get("error", r.get("reason", ""))
        )
        t.add_row(
            f"train ({mode})",
            setting,
            r["status"],
            f"{r['step_s']:.2f} s/step" if ok else "",
            str(r.get("tokens", "")),
            *mem(r),
            notes,
        )
    console.print(t)
    train = report.get("training") or {}
    if train.get("backend_note"):
        console.print(f"[yellow]{train['backend_note']}[/yellow]")
    console.print(f"total {report['elapsed_s']:.1f} s (budget {report['settings']['budget_s']:.0f} s)")


def parse_args(argv: list[str] | None) -> tuple[CheckSettings, Path]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny architecture instead of the paper's")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on a GPU, fp32 on the CPU")
    ap.add_argument("--encode-batch-sizes", type=int, nargs="+")
    ap.add_argument("--train-batch", type=int, help="queries per step (each with a positive and negatives)")
    ap.add_argument("--chunk-size", type=int, help="gradient-cache chunk size")
    ap.add_argument("--warmup-steps", type=int)
    ap.add_argument("--timed-steps", type=int)
    ap.add_argument("--optimizer", choices=("deepspeed", "adamw"), help="deepspeed: ZeRO-2, else falls back")
    ap.add_argument("--budget-s", type=float, help="skip what would start after this many seconds")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.device.startswith("cpu") and not args.tiny:
        ap.error("the paper-size model needs a GPU: use --device cuda, or --tiny on the CPU")
    overrides = {
        k: v
        for k, v in dict(
            device=args.device,
            dtype=args.dtype,
            encode_batch_sizes=args.encode_batch_sizes,
            train_batch=args.train_batch,
            chunk_size=args.chunk_size,
            warmup_steps=args.warmup_steps,
            timed_steps=args.timed_steps,
            optimizer=args.optimizer,
            budget_s=args.budget_s,
        ).items()
        if v is not None
    }
    settings = (
        CheckSettings.tiny_cpu(**overrides)
        if args.tiny and args.device.startswith("cpu")
        else CheckSettings(tiny=args.tiny, **overrides)
    )
    return settings, args.out


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    settings, out = parse_args(argv)
    console = Console(width=160)
    workdir = Path(tempfile.mkdtemp(prefix="nyx-gpu-check-"))
    try:
        report = run_check(settings, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["elapsed_s"] = time.perf_counter() - T_START
    from nyx.utils.io import write_json

    write_json(report, out)
    print_report(report, console)
    console.print(f"wrote {out}")
    return 1 if any(p["status"] == "error" for p in report["phases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
