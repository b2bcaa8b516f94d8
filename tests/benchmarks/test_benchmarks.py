"""The CPU benchmarks run end to end in their quick mode and write what their tables report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO
from tests.tolerances import EPS32, assert_within, rounding_tol


@pytest.mark.slow
def test_encode_search_quick_reports_every_encoding_mode_and_exact_search(tmp_path):
    out = tmp_path / "encode_search.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "encode_search.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    enc = report["encoding"]
    for mode in ("research_code", "nyx_one_at_a_time", "batched"):
        row = enc[mode]
        assert row["docs_per_s"] > 0 and row["model_seconds"] > 0 and row["cpu_side_seconds"] > 0
        assert 0 < row["model_share_of_matmul_peak"] < 1.5
        assert row["model_gflop"] > 0
        # the same inputs and the same float32 model give the same unit vectors in every mode, up to rounding
        # (measured <= 3e-7); the tolerance is that of one float32 norm over the tiny model's 128 dims
        assert_within(
            f"encode_search: {mode} vs batched embeddings",
            enc["max_abs_diff_vs_batched"][mode],
            0.0,
            rounding_tol(EPS32, 128),
        )
    # the knob modes (EncoderConfig.compile, .autocast) run side by side with today's batched path
    from nyx.model.vision_speedups import cpu_supports_bf16

    assert set(enc["knobs"]) == {"batched_compile"} | ({"batched_bf16"} if cpu_supports_bf16() else set())
    assert_within(
        "encode_search: batched_compile vs batched embeddings",
        enc["max_abs_diff_vs_batched"]["batched_compile"],
        0.0,
        rounding_tol(EPS32, 128),
    )
    for mode in enc["knobs"]:
        assert enc[mode]["docs_per_s"] > 0 and enc[mode]["speedup_vs_batched"]["model_only"] > 0
    if "batched_bf16" in enc["knobs"]:  # bf16 rounding (eps 2**-7), not float32's: cosine to float32 close to 1
        assert 1 - enc["min_cosine_vs_batched"]["batched_bf16"] <= 2.0**-7
        assert enc["batched_bf16"]["model_share_of_bf16_matmul_peak"] > 0
    pad = enc["padding"]
    assert pad["real_tokens"] > 0 and pad["padded_slots"] >= 0 and pad["padding_share"] >= 0
    for _mode, kb in enc["kernel_breakdown"].items():
        rows = {r["kernel"]: r for r in kb["rows"]}
        assert set(rows) == {
            "matmul",
            "attention",
            "elementwise",
            "copy/index",
            "fused (inductor)",
            "other ops",
            "python/framework",
        }
        assert sum(r["share"] for r in kb["rows"]) == pytest.approx(1.0, abs=0.05)  # the remainder is python
        assert rows["matmul"]["gflop"] > 0 and rows["attention"]["gflop"] > 0
        assert kb["matmul_shapes"] and kb["matmul_ceiling_gflops"] > 0
    assert enc["kernel_breakdown"]["batched"]["rows"][0]["gflops"] > 0
    # one document per pass pays for padding-free sequences only; batching pads, so it does more FLOPs
    assert enc["batched"]["model_gflop"] >= enc["nyx_one_at_a_time"]["model_gflop"] * 0.99
    assert enc["speedup"] == pytest.approx(enc["speedup_vs_research_code"]["wall"])
    assert enc["meets_target"] == (enc["speedup"] >= enc["target_speedup"])
    assert report["all_exact"] and {r["dim"] for r in report["search"]} == {2048, 1024, 512, 256}
    for row in report["search"]:
        check = row["exact_check"]
        assert check["tolerance"] == pytest.approx(rounding_tol(EPS32, row["dim"]), rel=1e-12)
        assert_within(
            f"encode_search: flat search scores at dim {row['dim']}",
            check["max_abs_score_diff"],
            0.0,
            check["tolerance"],
        )
    assert "target: 5x vs the research code's way" in proc.stdout


def _run_quick(script: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_index_scale_quick_measures_every_type_and_its_memory_formula(tmp_path):
    report = _run_quick("index_scale.py", tmp_path / "index_scale.json")
    rows = {(r["type"], r["dim"]): r for r in report["rows"]}
    assert set(rows) == {(t, d) for t in report["types"] for d in report["dims"]}
    for (kind, dim), r in rows.items():
        assert r["n"] == report["n"] and r["index_bytes"] > 0
        # the per-vector formula predicts the serialised size (fixed parts aside) within 1%
        assert abs(r["formula_vs_measured"] - 1) < 0.01, (kind, dim, r["formula_vs_measured"])
        assert r["per_million"]["index_bytes"] > 0
        if kind == "flat":
            assert r["recall_at_10_vs_flat"] == 1.0 and r["index_bytes_per_doc"] >= 4 * dim
        else:  # measured against flat on stored vectors used as queries
            assert r["recall_queries"] > 0 and 0.0 <= r["recall_at_10_vs_flat"] <= 1.0
    assert rows[("ivfpq", report["dims"][0])]["index_bytes"] < rows[("flat", report["dims"][0])]["index_bytes"]


@pytest.mark.slow
def test_serve_load_quick_answers_every_request_with_and_without_batching(tmp_path):
    report = _run_quick("serve_load.py", tmp_path / "serve_load.json")
    assert report["errors"] == 0
    off, on = (next(r for r in report["rows"] if r["batching"] == b) for b in ("off", "on"))
    for row in (off, on):
        assert row["ok"] == row["requests"] == report["requests"] and row["qps"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["same_topk_as_first"] == 1.0  # batching never changes a query's results
    assert off["encoder_batches"] == off["requests"] and on["encoder_batches"] < on["requests"]


@pytest.mark.slow
def test_embedding_fingerprint_tells_identical_embeddings_from_changed_ones(tmp_path, tiny_dir):
    """Two runs on one machine agree (to float32 rounding: a run can differ in its last bits); an array changed in
    the saved file is reported as changed, by the size of the change."""
    import numpy as np

    script = [sys.executable, str(REPO / "benchmarks" / "embedding_fingerprint.py"), "--model", str(tiny_dir)]
    saved, report = tmp_path / "before.npz", tmp_path / "after.json"
    first = subprocess.run([*script, "--save", str(saved)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    arrays = dict(np.load(saved))
    changed = "queries, batch 2"
    arrays[changed] = arrays[changed].copy()
    arrays[changed][0, 0] += 1e-3
    np.savez(saved, **arrays)
    second = subprocess.run(
        [*script, "--against", str(saved), "--out", str(report)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    rows = {r["set"]: r for r in json.loads(report.read_text())["rows"]}
    assert set(rows) == set(arrays) and len(rows) == 4
    assert not rows[changed]["identical"] and abs(rows[changed]["max_abs_diff"] - 1e-3) < 1e-4
    hidden = rows["documents, batch 2"]["shape"][1]
    for name, row in rows.items():
        if name != changed:
            assert_within(f"fingerprint rerun: {name}", row["max_abs_diff"], 0.0, rounding_tol(EPS32, hidden))
