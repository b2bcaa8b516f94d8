"""Encoding throughput and Matryoshka search latency (``make bench``).

1. **Encoding**: the same inputs (corpus chunks of the bundled synthetic sample, ``nyx.data.sample`` cut by
   ``nyx.synth.chunking`` as the retrieval corpus is) and the same model (the ``tiny`` profile), encoded
   (a) one document per forward pass the research code's way (the stock processor and model forward),
   (a') one document per pass through the Nyx encoder and (b) with the batched encoder (length-sorted
   batches, the CPU side prefetched in a background thread). Reports documents/s cold (first pass: oneDNN
   builds kernels per new input shape) and warm (median of the other ``--repeats`` passes), in wall-clock
   and CPU time; the time of the CPU side alone (images, tokens, collation) and of the model alone, with
   the model's FLOPs and its share of this CPU's measured matmul speed; the speed-ups; the peak RSS above
   the start of one more, untimed pass per mode (sampled with psutil every 2 ms, so torch's allocations
   count too) and the largest difference between the embeddings (they must agree). Every mode runs with
   ``--threads`` torch threads (default 1: see :func:`bench_encoding`). ``--device cuda`` runs the models
   on a GPU instead (the CPU side stays on the CPU), which is where batching is expected to pay most.
2. **Search**: ``EmbeddingIndex`` (flat inner product) over N random unit vectors of 2048 dims, searched at
   each Matryoshka prefix: latency per query for single queries (median) and for a batch of queries, and a
   check that the results equal an exact numpy search (matrix product + sort) at every dimension.

Prints rich tables and writes JSON to ``benchmarks/results/encode_search.json``. ``--quick`` runs a small
version (seconds) for smoke tests.
"""

from __future__ import annotations

import os

# faiss-cpu's OpenBLAS runs its own thread pool inside FAISS's OpenMP loops: on a few cores the two
# oversubscribe and a 64-query batch at 256 dims is ~5x slower than single-threaded BLAS (measured here).
# Must be set before numpy/faiss load OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import PAPER_DIMS_ARG, dims_arg, machine, report_header, right_table, single_query_ms  # noqa: E402
from nyx.data.records import Record  # noqa: E402
from nyx.index import EmbeddingIndex  # noqa: E402

TARGET_BATCH_SPEEDUP = 5.0
TARGET_DIM_SPEEDUP = 6.0  # 256 vs 2048 dims at the largest corpus

console = Console(width=140)


# ------------------------------------------------------------------------------------------------ memory


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.proc = psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    @contextmanager
    def measure(self) -> Iterator[PeakRSS]:
        self.start = self.peak = self.proc.memory_info().rss
        self._stop.clear()
        t = threading.Thread(target=self._run, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


# ------------------------------------------------------------------------------------------------ encoding


def sample_chunks(n_docs: int, tokenizer_dir: Path, folder: Path) -> list[Record]:
    """The bundled sample's documents (written to ``folder``), chunked like the retrieval corpus
    (<= 200 tokens, an image counting as one)."""
    from nyx.data.obelics import read_obelics
    from nyx.data.sample import generate_sample
    from nyx.synth.chunking import ChunkingConfig, chunk_documents

    generate_sample(folder, n_docs=n_docs)
    chunks, _ = chunk_documents(read_obelics(folder), ChunkingConfig(tokenizer=str(tokenizer_dir)))
    return chunks


MODES = ("research_code", "nyx_one_at_a_time", "batched")
#: The batched encoder with one more EncoderConfig knob each (side by side with "batched", today's default path).
KNOB_MODES = {"batched_compile": {"compile": True}, "batched_bf16": {"autocast": "bfloat16"}}


def bench_encoding(
    n_docs: int,
    batch_size: int,
    repeats: int,
    threads: int | None = 1,
    device: str = "cpu",
    knobs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """``threads``: torch intra-op threads for every mode (``None``: torch's default, one per core).
    ``device``: where the models run (``cuda``: the profile's dtype there, bf16; the CPU side stays on the CPU).

    One thread is the default because this machine's cores are shared with other jobs: with as many OpenMP
    threads as cores and a load above the core count, every parallel op waits at a barrier for a
    descheduled thread (measured here: an elementwise op on 360k floats takes 15 ms with 2 threads and
    0.3 ms with 1), which swamps every mode with noise and slows them 5-10x. It also leaves a core to the
    encoder's prefetch thread.

    ``knobs``: which of :data:`KNOB_MODES` to run beside the three modes (default: ``batched_compile``, and
    ``batched_bf16`` where it applies: a CPU with native bf16; on a GPU the model is bf16 already).
    """
    import torch

    from nyx.model.tiny import ensure_tiny_model

    if threads is not None:
        torch.set_num_threads(threads)

    tiny = ensure_tiny_model()
    tmp = Path(tempfile.mkdtemp(prefix="nyx-bench-"))
    try:
        if knobs is None:
            import importlib.util

            from nyx.model.vision_speedups import cpu_supports_bf16

            # inductor on a GPU needs triton; the GPU model is bf16 already
            can_compile = device == "cpu" or importlib.util.find_spec("triton") is not None
            knobs = (("batched_compile",) if can_compile else ()) + (
                ("batched_bf16",) if device == "cpu" and cpu_supports_bf16() else ()
            )
        # compile time as a first user pays it: inductor's on-disk cache starts empty
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor-cache")
        return _bench_encoding(
            sample_chunks(n_docs, tiny, tmp / "sample"), n_docs, batch_size, repeats, device, tuple(knobs)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(
    m: int, k: int, n: int, device: Any = "cpu", dtype: Any = None, repeats: int = 10, warmup: int = 2
) -> float:
    """Speed of one (m x k) @ (k x n) product, best of ``repeats`` after ``warmup`` untimed ones."""
    import torch

    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(warmup):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def matmul_peak_gflops(device: Any = "cpu", dtype: Any = None, repeats: int = 20) -> float:
    """Matrix-product speed on ``device`` in ``dtype`` (CPU: with the current torch threads):
    (4096 x 256) @ (256 x 256), best of ``repeats``. The tiny model's largest products have this shape
    (a batch's tokens x its hidden sizes)."""
    return matmul_gflops(4096, 256, 256, device, dtype, repeats=repeats, warmup=3)


#: Kernel classes of the per-kernel breakdown, by profiler event name (self time; see :func:`kernel_breakdown`).
KERNEL_CLASSES = (
    "matmul",
    "attention",
    "elementwise",
    "copy/index",
    "fused (inductor)",
    "other ops",
    "python/framework",
)
_MATMUL = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_addmm_activation",
    "mkldnn::_linear_pointwise",
    "aten::mkldnn_linear",
}
_COPY = {
    "aten::copy_",
    "aten::cat",
    "aten::index_select",
    "aten::index_copy_",
    "aten::index",
    "aten::clone",
    "aten::masked_scatter_",
    "aten::_to_copy",
    "aten::stack",
    "aten::repeat_interleave",
    "aten::gather",
    "aten::scatter",
    "aten::index_put_",
    "aten::_index_put_impl_",
    "aten::fill_",
    "aten::zero_",
    "aten::contiguous",
    "aten::_unsafe_index",
}
_ELEMENTWISE = {
    "aten::mul",
    "aten::add",
    "aten::sub",
    "aten::div",
    "aten::silu",
    "aten::gelu",
    "aten::pow",
    "aten::rsqrt",
    "aten::mean",
    "aten::neg",
    "aten::cos",
    "aten::sin",
    "aten::sum",
    "aten::exp",
    "aten::add_",
    "aten::mul_",
    "aten::sqrt",
    "aten::max",
    "aten::argmax",
    "aten::linalg_vector_norm",
    "aten::clamp_min",
    "aten::where",
    "aten::eq",
    "aten::ne",
    "aten::lt",
    "aten::ge",
    "aten::gt",
    "aten::bitwise_and",
    "aten::bitwise_not",
    "aten::cumsum",
    "aten::softmax",
    "aten::_softmax",
}


def _kernel_class(name: str) -> str | None:
    if name in _MATMUL:
        return "matmul"
    if "scaled_dot_product" in name:
        return "attention"
    if name in _ELEMENTWISE:
        return "elementwise"
    if name in _COPY:
        return "copy/index"
    if name.startswith(("cpp_fused", "triton_")) or "Compiled" in name or "Torch-Compiled" in name:
        return "fused (inductor)"
    if name.startswith(("aten::", "mkldnn::", "inductor::", "cuda")):
        return "other ops"
    return None  # record_function ranges, module scopes: their self time is Python between ops


def _op_flops(name: str, shapes: list, causal: bool) -> float:
    """FLOPs of a matmul or SDPA event from its input shapes (attention: 4·B·H·L·S·D, half when causal)."""
    try:
        if name in ("aten::mm",):
            (m, k), (_, n) = shapes[0], shapes[1]
            return 2.0 * m * k * n
        if name == "aten::addmm":
            (m, k), (_, n) = shapes[1], shapes[2]
            return 2.0 * m * k * n
        if name in ("aten::bmm",):
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return 2.0 * b * m * k * n
        if "scaled_dot_product" in name and name.startswith("aten::_"):
            (b, h, n_q, d), (_, _, s_, _) = shapes[0], shapes[1]
            return 4.0 * b * h * n_q * s_ * d * (0.5 if causal else 1.0)
    except (ValueError, TypeError, IndexError):
        pass
    return 0.0


def kernel_breakdown(encoder: Any, batches: list[dict[str, Any]], peak_gflops: float) -> dict[str, Any]:
    """One profiled pass of ``encoder.embed`` over ``batches``: self time per kernel class, split into the
    vision tower and the rest (language model, mRoPE positions, pooling), with the FLOPs of the matmul and
    attention kernels (from their input shapes) and their speed as a share of ``peak_gflops``.
    ``python/framework`` is the pass's wall time not spent inside any op (Python, dispatch, the profiler's own
    cost); shares are of the profiled wall time, which the profiler inflates by ~10-25% (per-op overhead)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    visual = getattr(encoder.module.vl_model(), "visual", None)
    scopes: list[Any] = []
    hooks = []
    if visual is not None:

        def enter(*_: Any) -> None:
            scopes.append(record_function("nyx::vision_tower"))
            scopes[-1].__enter__()

        def leave(*_: Any) -> None:
            scopes.pop().__exit__(None, None, None)

        hooks = [visual.register_forward_pre_hook(enter), visual.register_forward_hook(leave)]
    try:
        with torch.inference_mode():
            for inputs in batches[:2]:
                encoder.embed(inputs)  # warm (first-shape kernels)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                _sync(encoder.device)
                t0 = time.perf_counter()
                for inputs in batches:
                    encoder.embed(inputs)
                _sync(encoder.device)
                wall = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    seconds = {(c, part): 0.0 for c in KERNEL_CLASSES for part in ("vision", "rest")}
    flops = {(c, part): 0.0 for c in ("matmul", "attention") for part in ("vision", "rest")}
    shapes: dict[tuple[int, int], float] = {}  # matmul (K, N) -> FLOPs
    for ev in prof.events():
        cls = _kernel_class(ev.name)
        if cls is None:
            continue
        parent, part = ev.cpu_parent, "rest"
        while parent is not None:
            if parent.name == "nyx::vision_tower":
                part = "vision"
                break
            parent = parent.cpu_parent
        seconds[(cls, part)] += ev.self_cpu_time_total / 1e6
        if cls in ("matmul", "attention"):
            f = _op_flops(ev.name, ev.input_shapes, causal=part == "rest")
            flops[(cls, part)] += f
            if cls == "matmul" and f:
                a, b = (ev.input_shapes[1], ev.input_shapes[2]) if ev.name == "aten::addmm" else ev.input_shapes[:2]
                shapes[(a[-1], b[-1])] = shapes.get((a[-1], b[-1]), 0.0) + f
    in_ops = sum(seconds.values())
    seconds[("python/framework", "rest")] = max(wall - in_ops, 0.0)
    rows = []
    for c in KERNEL_CLASSES:
        s_all = seconds[(c, "vision")] + seconds[(c, "rest")]
        f_all = flops.get((c, "vision"), 0.0) + flops.get((c, "rest"), 0.0)
        row = {
            "kernel": c,
            "seconds": s_all,
            "share": s_all / wall,
            "vision_seconds": seconds[(c, "vision")],
            "gflop": f_all / 1e9,
        }
        if f_all and s_all:
            row["gflops"] = f_all / s_all / 1e9
            row["share_of_matmul_peak"] = row["gflops"] / peak_gflops
        rows.append(row)
    # What the matmul kernels themselves can reach at the model's own (K, N) shapes, M = 4096 rows
    dtype = next(encoder.module.parameters()).dtype
    if encoder.config.autocast:
        dtype = getattr(torch, encoder.config.autocast)
    shape_rows = []
    for (k, n), f in sorted(shapes.items(), key=lambda kv: -kv[1]):
        g = matmul_gflops(4096, k, n, encoder.device, dtype)
        shape_rows.append(
            {"k": k, "n": n, "gflop": f / 1e9, "gflops_alone": g, "share_of_matmul_peak": g / peak_gflops}
        )
    total_f = sum(r["gflop"] for r in shape_rows)
    ceiling = total_f / sum(r["gflop"] / r["gflops_alone"] for r in shape_rows) if shape_rows else 0.0
    return {
        "profiled_wall_seconds": wall,
        "rows": rows,
        "matmul_shapes": shape_rows,
        "matmul_ceiling_gflops": ceiling,
        "matmul_ceiling_share_of_peak": ceiling / peak_gflops,
        "vision_share": sum(seconds[(c, "vision")] for c in KERNEL_CLASSES) / wall,
    }


def padding_stats(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Padded token slots per real token in the language model's batches (the vision tower packs its patches)."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    slots = sum(int(b["attention_mask"].numel()) for b in batches)
    return {
        "real_tokens": real,
        "padded_slots": slots - real,
        "padding_share": (slots - real) / real,
        "image_patches": sum(int(b["pixel_values"].shape[0]) for b in batches if "pixel_values" in b),
    }


class ResearchCodeEncoder:
    """The research code's way: the stock processor call and the stock model forward, one document per pass.

    The backbone and processor are loaded from the same folder as the Nyx encoder's, without Nyx's vision
    fast paths or its own collation. Each record's text and images come from ``NyxEncoder.prepare`` so
    that both encoders see exactly the same inputs (the benchmark checks the embeddings agree).
    """

    def __init__(self, encoder: Any):
        from nyx.model.backbone import load_backbone, load_profile_processor

        self.nyx = encoder
        # Qwen2_5_VLModel (the LM head is never needed), on the encoder's device in the profile's dtype
        self.model = load_backbone(encoder.profile, device=encoder.device).model
        self.processor = load_profile_processor(encoder.profile)

    def inputs(self, record: Record) -> dict[str, Any]:
        p = self.nyx.prepare(record, is_query=False)
        return dict(self.processor(text=[p.text], images=p.images or None, return_tensors="pt"))

    def embed(self, inputs: dict[str, Any]) -> np.ndarray:
        import torch

        dev = self.nyx.device
        inputs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        hidden = self.model(**inputs, use_cache=False).last_hidden_state[:, -1]
        return torch.nn.functional.normalize(hidden.float(), dim=-1).cpu().numpy()

    def encode(self, records: list[Record]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.concatenate([self.embed(self.inputs(r)) for r in records])


def _phases(cpu_side: Any, model_side: Any, device: Any, gflop: float | None = None) -> dict[str, float]:
    """Seconds of the CPU side alone (images, tokens, collation) and of the model alone (on those inputs),
    with the model's FLOPs (torch's FLOP counter, one more pass)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    t0 = time.perf_counter()
    batches = cpu_side()
    cpu_s = time.perf_counter() - t0
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        for inputs in batches:
            model_side(inputs)
        _sync(device)
        model_s = time.perf_counter() - t0
        if gflop is None:  # given for the knob modes: the same maths as "batched" (and compiled code would recompile)
            with FlopCounterMode(display=False) as counter:
                for inputs in batches:
                    model_side(inputs)
            gflop = counter.get_total_flops() / 1e9
    return {"cpu_side_seconds": cpu_s, "model_seconds": model_s, "model_gflop": gflop}


def _bench_encoding(
    records: list[Record], n_docs: int, batch_size: int, repeats: int, device: str = "cpu", knobs: tuple[str, ...] = ()
) -> dict[str, Any]:
    import torch

    from nyx.model.encoder import EncodeBatch, NyxEncoder

    encoder = NyxEncoder.from_pretrained("tiny", device=device, show_progress=False)
    research = ResearchCodeEncoder(encoder)
    research.encode(records[:2])  # warm-up (lazy inits, allocator)
    t0 = time.perf_counter()
    encoder.encode_documents(records[:2], batch_size=2)
    eager_warmup_s = time.perf_counter() - t0
    # one encoder (own backbone: compile works in place) per knob; the warm-up pays the compilation
    knob_encoders: dict[str, Any] = {}
    setup_s: dict[str, float] = {}
    for name in knobs:
        knob_encoders[name] = NyxEncoder.from_pretrained("tiny", device=device, show_progress=False, **KNOB_MODES[name])
        t0 = time.perf_counter()
        knob_encoders[name].encode_documents(records[:2], batch_size=2)
        setup_s[name] = time.perf_counter() - t0 - eager_warmup_s
    all_modes = MODES + tuple(knobs)
    mem = PeakRSS()

    def nyx_one_at_a_time() -> np.ndarray:
        return np.concatenate([encoder.encode_documents([r], batch_size=1) for r in records])

    def batched() -> np.ndarray:
        return encoder.encode_documents(records, batch_size=batch_size)

    def nyx_batches(bs: int) -> list[dict[str, Any]]:
        return [item.inputs for item in encoder.iter_batches(records, False, bs) if isinstance(item, EncodeBatch)]

    modes = {
        "research_code": lambda: research.encode(records),
        "nyx_one_at_a_time": nyx_one_at_a_time,
        "batched": batched,
    }
    phases = {
        "research_code": (lambda: [research.inputs(r) for r in records], research.embed),
        "nyx_one_at_a_time": (lambda: nyx_batches(1), encoder.embed),
        "batched": (lambda: nyx_batches(batch_size), encoder.embed),
    }
    for name, enc_k in knob_encoders.items():
        modes[name] = lambda e=enc_k: e.encode_documents(records, batch_size=batch_size)
        phases[name] = (lambda: nyx_batches(batch_size), enc_k.embed)
    times: dict[str, list[float]] = {m: [] for m in all_modes}
    cpu: dict[str, list[float]] = {m: [] for m in all_modes}
    peaks: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):  # interleaved, so background load hits every mode alike
        for name, fn in modes.items():
            # Timed without the RSS sampler: its 2 ms wake-ups take the GIL and a core from the timed code.
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    for name, fn in modes.items():  # memory: one more (untimed) pass per mode
        with mem.measure():
            fn()
        peaks[name] = mem.delta_mb
    dtype = encoder.module.vl_model().dtype
    peak_gflops = matmul_peak_gflops(encoder.device, dtype)
    bf16_peak = (
        matmul_peak_gflops(encoder.device, torch.bfloat16)
        if "batched_bf16" in knobs and dtype != torch.bfloat16
        else None
    )
    n = len(records)
    batch_inputs = nyx_batches(batch_size)
    result: dict[str, Any] = {
        "model": "tiny",
        "model_id": encoder.model_id,
        "device": str(encoder.device),
        "dtype": str(dtype).replace("torch.", ""),
        "inputs": {
            "source": f"nyx.data.sample (n_docs={n_docs}, seed 0) chunked by nyx.synth.chunking",
            "n_records": n,
            "n_images": sum(r.n_images for r in records),
            "n_text_only": sum(1 for r in records if r.n_images == 0),
        },
        "batch_size": batch_size,
        "prefetch_batches": encoder.config.prefetch_batches,
        "sort_window": batch_size * encoder.config.sort_window_batches,
        "repeats": repeats,
        "torch_threads": __import__("torch").get_num_threads(),
        "matmul_peak_gflops": peak_gflops,
        "matmul_peak_gflops_bf16": bf16_peak,
        "knobs": {name: KNOB_MODES[name] for name in knobs},
        "max_abs_diff_vs_batched": {m: float(np.abs(outputs[m] - outputs["batched"]).max()) for m in all_modes},
        "min_cosine_vs_batched": {
            m: float((outputs[m].astype(np.float64) * outputs["batched"]).sum(1).min()) for m in all_modes
        },
        "padding": padding_stats(batch_inputs),
        # per kernel class, for today's batched path and each knob (same inputs, one profiled pass each)
        "kernel_breakdown": {
            m: kernel_breakdown(encoder if m == "batched" else knob_encoders[m], batch_inputs, peak_gflops)
            for m in ("batched",) + tuple(knobs)
        },
    }
    for name in all_modes:
        # The first pass is "cold": oneDNN builds a kernel for every new input shape, and one-at-a-time
        # encoding meets one shape per record. Later passes ("warm", the steady state of a long indexing run)
        # reuse them. docs_per_s is the warm median (the cold one when there is a single repeat).
        warm = times[name][1:] or times[name]
        med = statistics.median(warm)
        cpu_med = statistics.median(cpu[name][1:] or cpu[name])
        ph = _phases(*phases[name], encoder.device, gflop=result["batched"]["model_gflop"] if name in knobs else None)
        result[name] = {
            "seconds_median": med,
            "seconds_all": times[name],
            "docs_per_s": n / med,
            "docs_per_s_cold": n / times[name][0],
            "cpu_seconds_median": cpu_med,
            "docs_per_cpu_s": n / cpu_med,
            "peak_rss_delta_mb": peaks[name],
            **ph,
            "model_gflops": ph["model_gflop"] / ph["model_seconds"],
            "model_share_of_matmul_peak": ph["model_gflop"] / ph["model_seconds"] / peak_gflops,
        }
        if name in knobs:
            result[name]["setup_seconds"] = setup_s[name]  # compile: the compilation (cold inductor cache)
            result[name]["speedup_vs_batched"] = {
                "wall": result[name]["docs_per_s"] / result["batched"]["docs_per_s"],
                "model_only": result["batched"]["model_seconds"] / result[name]["model_seconds"],
            }
            if name == "batched_bf16" and bf16_peak:
                result[name]["model_share_of_bf16_matmul_peak"] = result[name]["model_gflops"] / bf16_peak
    batched_s = result["batched"]
    for base in ("research_code", "nyx_one_at_a_time"):
        b = result[base]
        result[f"speedup_vs_{base}"] = {
            "wall": batched_s["docs_per_s"] / b["docs_per_s"],
            "cold": batched_s["docs_per_s_cold"] / b["docs_per_s_cold"],
            # CPU time (all threads of this process) barely moves when other processes share the cores.
            "cpu_time": batched_s["docs_per_cpu_s"] / b["docs_per_cpu_s"],
            "model_only": b["model_seconds"] / batched_s["model_seconds"],
            "cpu_side_only": b["cpu_side_seconds"] / batched_s["cpu_side_seconds"],
        }
    # What no batching can beat here: the batched model pass at this CPU's full matmul speed, with the CPU
    # side entirely hidden behind it.
    result["speedup_ceiling_vs_research_code"] = result["research_code"]["seconds_median"] / (
        batched_s["model_gflop"] / peak_gflops
    )
    # The definition: (a) the research code's way, one document per forward pass, vs (b) batched.
    result["speedup"] = result["speedup_vs_research_code"]["wall"]
    result["target_speedup"] = TARGET_BATCH_SPEEDUP
    result["meets_target"] = result["speedup"] >= TARGET_BATCH_SPEEDUP
    return result


# ------------------------------------------------------------------------------------------------ search


def exact_search(docs: np.ndarray, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by numpy: re-normalised prefixes, matrix product, sort."""
    d = docs[:, :dim] / np.linalg.norm(docs[:, :dim], axis=1, keepdims=True)
    q = queries[:, :dim] / np.linalg.norm(queries[:, :dim], axis=1, keepdims=True)
    scores = q @ d.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def score_tolerance(dim: int) -> float:
    """Float32 rounding of a cosine score: a normalisation and a dot product, each a sum of ``dim`` terms, so
    ``8 * dim * eps32`` (Higham's n*u summation bound with a safety factor), whatever the CPU's kernels."""
    return 8 * dim * float(np.finfo(np.float32).eps)


def compare(result, want_idx: np.ndarray, want_scores: np.ndarray, doc_ids: list[str], dim: int) -> dict[str, Any]:
    """Same ranked ids as numpy (a swap of two scores within rounding counts as a tie, not a mismatch)."""
    tol = score_tolerance(dim)
    got_scores = np.stack(result.scores)
    max_diff = float(np.abs(got_scores - want_scores).max())
    mismatches = ties = 0
    for got, want, ws in zip(result.ids, want_idx, want_scores):
        want_ids = [doc_ids[i] for i in want]
        if got == want_ids:
            continue
        if sorted(got) == sorted(want_ids) or np.all(np.abs(np.diff(ws)) < tol):
            ties += 1
        else:
            mismatches += 1
    return {
        "equal": mismatches == 0 and max_diff <= tol,
        "mismatched_queries": mismatches,
        "tie_swaps": ties,
        "max_abs_score_diff": max_diff,
        "tolerance": tol,
    }


def bench_search(
    sizes: list[int], dims: list[int], n_queries: int, n_single: int, k: int, seed: int, batch_repeats: int = 5
) -> list[dict]:
    """Latency per dimension. Batched figures are the best of ``batch_repeats`` runs, single-query figures
    the median (and minimum) of ``n_single`` queries: on a shared machine the minimum is the least disturbed."""
    rows = []
    full = max(dims)
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((n_queries, full), dtype=np.float32)
    for n in sizes:
        index = EmbeddingIndex.create(model_id="random-vectors", dim=full, mrl_dims=dims)
        shard = 25_000
        for start in range(0, n, shard):  # built shard by shard, as an encoder would feed it
            m = min(shard, n - start)
            index.add([f"d{i}" for i in range(start, start + m)], rng.standard_normal((m, full), dtype=np.float32))
        for dim in dims:
            t0 = time.perf_counter()
            index.faiss_index(dim)
            build_s = time.perf_counter() - t0
            single = single_query_ms(index, queries, n_single, k, dim)
            batch_ms = []
            for _ in range(batch_repeats):
                t0 = time.perf_counter()
                result = index.search(queries, k=k, dim=dim)
                batch_ms.append((time.perf_counter() - t0) * 1000 / n_queries)
            want_idx, want_scores = exact_search(index.vectors, queries, dim, k)
            rows.append(
                {
                    "n": n,
                    "dim": dim,
                    "build_s": build_s,
                    "single_query_ms_median": statistics.median(single),
                    "single_query_ms_min": min(single),
                    "batched_ms_per_query": min(batch_ms),
                    "n_queries": n_queries,
                    "k": k,
                    "exact_check": compare(result, want_idx, want_scores, index.doc_ids, dim),
                }
            )
        del index
    return rows


def dim_speedups(rows: list[dict], dims: list[int]) -> dict[str, Any]:
    n = max(r["n"] for r in rows)
    at = {r["dim"]: r for r in rows if r["n"] == n}
    big, small = max(dims), min(dims)
    single = at[big]["single_query_ms_median"] / at[small]["single_query_ms_median"]
    single_min = at[big]["single_query_ms_min"] / at[small]["single_query_ms_min"]
    batched = at[big]["batched_ms_per_query"] / at[small]["batched_ms_per_query"]
    return {
        "n": n,
        "from_dim": big,
        "to_dim": small,
        "single_query": single,
        "single_query_min": single_min,
        "batched": batched,
        "target": TARGET_DIM_SPEEDUP,
        "meets_target_single": single >= TARGET_DIM_SPEEDUP,
        "meets_target_batched": batched >= TARGET_DIM_SPEEDUP,
    }


# ------------------------------------------------------------------------------------------------ report


def print_report(enc: dict[str, Any] | None, search: list[dict], speed: dict[str, Any] | None) -> None:
    if enc is not None:
        t = right_table(
            f"Encoding: {enc['inputs']['n_records']} sample chunks "
            f"({enc['inputs']['n_images']} images), tiny model on {enc['device']} ({enc['dtype']}), "
            f"{enc['torch_threads']} torch thread(s); "
            f"prefetch {enc['prefetch_batches']} batches; cold = first pass, warm = median of the other {enc['repeats'] - 1}",  # noqa: E501
            (
                "mode",
                "docs/s warm",
                "docs/s cold",
                "warm s",
                "docs/CPU-s",
                "CPU side s",
                "model s",
                "model GFLOP/s",
                "% matmul peak",
                "peak RSS +MB",
                "max |Δ| vs batched",
            ),
        )
        labels = {
            "research_code": "research code, 1/pass",
            "nyx_one_at_a_time": "Nyx, 1/pass",
            "batched": f"Nyx, batch {enc['batch_size']}",
            "batched_compile": f"Nyx, batch {enc['batch_size']}, compile",
            "batched_bf16": f"Nyx, batch {enc['batch_size']}, bf16 autocast",
        }
        knobs = tuple(enc.get("knobs", {}))
        for name in MODES + knobs:
            e = enc[name]
            t.add_row(
                labels[name],
                f"{e['docs_per_s']:.1f}",
                f"{e['docs_per_s_cold']:.1f}",
                f"{e['seconds_median']:.2f}",
                f"{e['docs_per_cpu_s']:.1f}",
                f"{e['cpu_side_seconds']:.2f}",
                f"{e['model_seconds']:.2f}",
                f"{e['model_gflops']:.1f}",
                f"{100 * e['model_share_of_matmul_peak']:.0f}%",
                f"{e['peak_rss_delta_mb']:.0f}",
                f"{enc['max_abs_diff_vs_batched'][name]:.1e}",
            )
        console.print(t)
        for name in knobs:
            e = enc[name]
            extra = (
                f"; {100 * e['model_share_of_bf16_matmul_peak']:.0f}% of the bf16 matmul peak "
                f"({enc['matmul_peak_gflops_bf16']:.0f} GFLOP/s)"
                if e.get("model_share_of_bf16_matmul_peak")
                else ""
            )
            console.print(
                f"{labels[name]}: {e['speedup_vs_batched']['wall']:.2f}x the batched docs/s, model alone "
                f"{e['speedup_vs_batched']['model_only']:.2f}x; setup {e['setup_seconds']:.1f} s; "
                f"min cosine to batched float32 {enc['min_cosine_vs_batched'][name]:.6f}{extra}"
            )
        pad = enc["padding"]
        console.print(
            f"padding: {pad['padded_slots']:,} padded slots for {pad['real_tokens']:,} real tokens "
            f"({100 * pad['padding_share']:.1f}%) in the batch-{enc['batch_size']} language-model inputs; "
            f"{pad['image_patches']:,} image patches, packed (no padding) in the vision tower"
        )
        peak = enc["matmul_peak_gflops"]
        for mode, kb in enc["kernel_breakdown"].items():
            kt = right_table(
                f"Per kernel class, {labels[mode]} (one profiled pass, {kb['profiled_wall_seconds']:.2f} s; "
                f"vision tower {100 * kb['vision_share']:.0f}% of it); % of the {peak:.0f} GFLOP/s matmul peak",
                ("kernel", "s", "% of pass", "of which vision s", "GFLOP", "GFLOP/s", "% matmul peak"),
            )
            for r in kb["rows"]:
                kt.add_row(
                    r["kernel"],
                    f"{r['seconds']:.2f}",
                    f"{100 * r['share']:.0f}%",
                    f"{r['vision_seconds']:.2f}",
                    f"{r['gflop']:.1f}" if r["gflop"] else "",
                    f"{r['gflops']:.0f}" if "gflops" in r else "",
                    f"{100 * r['share_of_matmul_peak']:.0f}%" if "gflops" in r else "",
                )
            console.print(kt)
            console.print(
                "  matmul alone at the model's own shapes (M=4096): "
                + ", ".join(
                    f"{r['k']}x{r['n']} {100 * r['share_of_matmul_peak']:.0f}%" for r in kb["matmul_shapes"][:6]
                )
                + f"; FLOP-weighted ceiling {100 * kb['matmul_ceiling_share_of_peak']:.0f}% of peak"
            )
        ok = "meets" if enc["meets_target"] else "MISSES"
        for base, label in (("research_code", "the research code's way"), ("nyx_one_at_a_time", "Nyx at 1 doc/pass")):
            sp = enc[f"speedup_vs_{base}"]
            console.print(
                f"batched vs {label}: {sp['wall']:.1f}x warm wall-clock, {sp['cold']:.1f}x cold, "
                f"{sp['cpu_time']:.1f}x CPU time; model alone {sp['model_only']:.1f}x, "
                f"CPU side alone {sp['cpu_side_only']:.1f}x"
            )
        console.print(
            f"target: {TARGET_BATCH_SPEEDUP:.0f}x vs the research code's way -> {enc['speedup']:.1f}x "
            f"({ok}); ceiling here (batched model FLOPs at the measured "
            f"{enc['matmul_peak_gflops']:.0f} GFLOP/s matmul peak, CPU side fully hidden): "
            f"{enc['speedup_ceiling_vs_research_code']:.1f}x"
        )
    if speed is None:
        return
    t = right_table(
        "Search: flat inner-product index over random unit vectors, per Matryoshka dimension",
        (
            "docs",
            "dim",
            "build s",
            "1 query ms median",
            "1 query ms min",
            "batched ms/query",
            "= numpy exact",
            "max |Δscore|",
        ),
    )
    for r in search:
        chk = r["exact_check"]
        t.add_row(
            f"{r['n']:,}",
            str(r["dim"]),
            f"{r['build_s']:.2f}",
            f"{r['single_query_ms_median']:.3f}",
            f"{r['single_query_ms_min']:.3f}",
            f"{r['batched_ms_per_query']:.3f}",
            "yes" if chk["equal"] else f"NO ({chk['mismatched_queries']})",
            f"{chk['max_abs_score_diff']:.1e}",
        )
    console.print(t)
    console.print(
        f"{speed['to_dim']} vs {speed['from_dim']} dims at {speed['n']:,} docs: "
        f"{speed['single_query']:.1f}x faster per single query (median; {speed['single_query_min']:.1f}x by minimum), "
        f"{speed['batched']:.1f}x batched "
        f"(target {TARGET_DIM_SPEEDUP:.0f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--n-docs", type=int, default=300, help="sample documents to chunk and encode (300: the bundled sample)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="where the encoding benchmark runs the models (cpu, cuda)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the encoding benchmark, both modes (0: torch's default)",
    )
    ap.add_argument("--sizes", default="10000,100000", help="corpus sizes for the search benchmark")
    ap.add_argument("--dims", default=PAPER_DIMS_ARG)
    ap.add_argument("--queries", type=int, default=64, help="queries per batched search")
    ap.add_argument("--single", type=int, default=32, help="single-query searches timed per dim")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument(
        "--knobs",
        default=None,
        help=f"comma-separated extra batched modes ({', '.join(KNOB_MODES)}; 'none'); default: compile, "
        "and bf16 where the CPU has native bf16",
    )
    ap.add_argument("--skip-encoding", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "encode_search.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_docs, args.repeats, args.sizes, args.queries, args.single = 12, 1, "2000", 8, 4

    from nyx.utils.io import write_json

    sizes = [int(s) for s in args.sizes.split(",")]
    dims = dims_arg(args.dims)
    t0 = time.perf_counter()
    threads = args.threads if args.threads > 0 else None
    knobs = None if args.knobs is None else tuple(k for k in args.knobs.split(",") if k and k != "none")
    if knobs and set(knobs) - set(KNOB_MODES):
        ap.error(f"unknown --knobs {sorted(set(knobs) - set(KNOB_MODES))}; choose from {list(KNOB_MODES)}")
    enc = (
        None
        if args.skip_encoding
        else bench_encoding(args.n_docs, args.batch_size, args.repeats, threads, args.device, knobs)
    )
    search = [] if args.skip_search else bench_search(sizes, dims, args.queries, args.single, args.k, seed=0)
    speed = dim_speedups(search, dims) if search else None
    print_report(enc, search, speed)
    report = {
        **report_header("encode_search"),
        "machine": machine(
            faiss_threads=__import__("faiss").omp_get_max_threads(),
            openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
        ),
        "encoding": enc,
        "search": search,
        "dim_speedup": speed,
        "all_exact": all(r["exact_check"]["equal"] for r in search),
        "seconds": time.perf_counter() - t0,
    }
    write_json(report, args.out)
    console.print(f"wrote {args.out}")
    return 0 if report["all_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
