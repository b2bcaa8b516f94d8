"""benchmarks/gpu_check.py: the paper-size config, the budget guard, and a CPU run of the tiny model.

The real check needs one H100/H200; here the same code path runs on the tiny architecture on the CPU
(``--device cpu --tiny``) so the script cannot rot unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nyx.model.architecture import PAPER_N_PARAMS, paper_architecture_config
from tests.paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("nyx_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _run(tmp_path: Path, *args: str, timeout: float = 150) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_paper_config_builds_the_3b_architecture_with_the_tiny_tokenizer_ids(gpu_check):
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from nyx.model.tiny import ensure_tiny_model

    tiny = AutoConfig.from_pretrained(ensure_tiny_model())
    cfg = paper_architecture_config(tiny)
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers, cfg.text_config.vocab_size) == (
        2048,
        36,
        151936,
    )
    assert cfg.text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (cfg.vision_config.depth, cfg.vision_config.out_hidden_size) == (32, 2048)
    assert cfg.vision_config.fullatt_block_indexes == [7, 15, 23, 31]
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert getattr(cfg, key) == getattr(tiny, key)  # ids the inputs actually carry
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == PAPER_N_PARAMS  # Qwen2.5-VL-3B: 3.75B


def test_paper_size_on_the_cpu_is_refused(gpu_check, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--device", "cpu"])
    assert "needs a GPU" in capsys.readouterr().err


def test_hard_deadline_interrupts_a_phase_that_runs_past_the_budget(gpu_check):
    budget = gpu_check.Budget(seconds=0.0)  # already spent: fires after the grace period
    t0 = time.perf_counter()
    with pytest.raises(gpu_check.HardDeadline):
        with budget.hard_deadline(grace_s=0.2):
            time.sleep(5)
    assert time.perf_counter() - t0 < 2


def test_spent_budget_skips_every_phase_and_says_so(gpu_check, tmp_path):
    report = gpu_check.run_check(gpu_check.CheckSettings.tiny_cpu(budget_s=0), tmp_path)
    assert report["model"] is None  # not even built
    assert set(report["phases"]) == {"encode", "train_plain", "train_gradcache"}
    assert all(p == {"status": "skipped", "reason": "budget"} for p in report["phases"].values())


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_phase_with_numbers(tmp_path):
    t0 = time.perf_counter()
    proc, report = _run(tmp_path, "--budget-s", "110")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.perf_counter() - t0 < 120
    s = report["settings"]
    assert report["model"]["profile"] == "tiny" and report["model"]["n_params"] > 0

    enc = report["phases"]["encode"]
    assert enc["status"] == "ok"
    assert [r["batch_size"] for r in enc["model_only"]] == s["encode_batch_sizes"]
    for row in enc["model_only"]:
        assert row["status"] == "ok", row
        assert row["docs_per_s"] > 0 and row["peak_mib"] > 0 and row["collate_s"] > 0
        # one 400-pixel-budget image per document: (side/28)^2 merged image tokens each
        assert row["image_tokens"] == row["batch_size"] * (s["image_side"] // 28) ** 2
        assert row["tokens"] > row["image_tokens"] + row["batch_size"] * s["doc_text_tokens"] * 0.9
    assert enc["model_only"][0]["speedup_vs_batch_1"] == 1.0
    for key in ("end_to_end", "end_to_end_one_at_a_time"):
        e2e = enc[key]
        assert e2e["status"] == "ok" and e2e["docs_per_s"] > 0 and e2e["finite"], e2e
        assert e2e["dim"] == report["model"]["hidden_size"]
    assert enc["end_to_end_one_at_a_time"]["batch_size"] == 1
    assert enc["end_to_end_speedup"] == pytest.approx(
        enc["end_to_end"]["docs_per_s"] / enc["end_to_end_one_at_a_time"]["docs_per_s"]
    )

    train = report["training"]
    deepspeed_here = importlib.util.find_spec("deepspeed") is not None
    assert train["backend"] == ("deepspeed_zero2" if deepspeed_here else "torch_adamw"), train
    assert train["trainable_params"] > 0 and train["gradient_checkpointing"]
    for mode in ("plain", "gradcache"):
        r = report["phases"][f"train_{mode}"]
        assert r["status"] == "ok", r
        assert r["queries"] == s["train_batch"] and r["documents"] == s["train_batch"] * (1 + s["n_negatives"])
        assert r["images"] == r["documents"]  # each document carries one image
        assert len(r["step_s_all"]) == s["timed_steps"] and r["step_s"] > 0
        assert r["finite"] and r["loss"] > 0 and set(r["loss_per_dim"]) == {f"loss_dim_{d}" for d in train["mrl_dims"]}
        assert r["peak_mib"] >= r["base_mib"] > 0
    assert report["phases"]["train_gradcache"]["chunk_size"] == s["chunk_size"]
    assert "train (gradcache)" in proc.stdout  # the rich table was printed
