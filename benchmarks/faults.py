"""``python -m benchmarks.faults``: inject the faults operators meet into a scratch copy of the sample pipeline, end to
end, and print what the operator saw, whether it recovered, what was lost and how long recovery took.

Each fault runs against the real driver (``python -m orchestration.run_sample``, what ``make run`` runs) in a scratch
folder with its own data, Dagster home, MLflow store and DVC remote, on a small sample (24 documents, 6 training
steps). Faults: ``make run`` killed with SIGKILL while Stage 1 trains (then run again: the dead run is cleaned and
training resumes, each step logged once), two ``make run`` at once, a rerun with nothing changed, the Stage-1
weights zeroed, a truncated Parquet shard, a ``dvc push`` killed mid-way. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"per_device_batch_size": 8, "max_steps": 6, "save_steps": 3, "logging_steps": 1, "epochs": 1,
         "max_length": 256}
OVERRIDES = {"nyxqa": {"dev_per_group": 3, "test_per_group": 4}, "miner": {"retriever": "bm25"},
             "stage1": {"train": TRAIN}, "stage2": {"train": TRAIN}, "feedback": {"top_k": 5},
             "eval": {"baselines": ["bm25"]},
             # recovery is measured here, not model quality: a retrained challenger is promoted even if no better,
             # so that one fault's retraining does not fail the gate for all that follow
             "promotion": {"gate_metrics": {"ndcg@10": -1.0, "recall@10": -1.0}}}
LONG = json.loads(json.dumps(OVERRIDES))
LONG["stage1"]["train"].update(max_steps=30, save_steps=2, epochs=20)


class Scratch:
    def __init__(self, root: Path, log_dir: Path | None = None):
        self.root = root
        self.log_dir = log_dir
        self.n_runs = 0

    def env(self, overrides: dict[str, Any] = OVERRIDES) -> dict[str, str]:
        r = self.root
        return {**os.environ, "NYX_DATA_DIR": str(r / "data"), "NYX_REPO_DIR": str(r),
                "NYX_DVC_REMOTE": str(r / "remote"), "DAGSTER_HOME": str(r / "dh"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{r}/mlflow.db", "NYX_PROFILE": "sample",
                "NYX_PROFILE_OVERRIDES": json.dumps(overrides), "OMP_NUM_THREADS": "1"}

    def start(self, overrides: dict[str, Any] = OVERRIDES) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "orchestration.run_sample"], cwd=REPO, env=self.env(overrides),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def run(self, overrides: dict[str, Any] = OVERRIDES) -> tuple[int, str, float]:
        t0 = time.time()
        proc = self.start(overrides)
        out, _ = proc.communicate(timeout=1800)
        self.n_runs += 1
        if self.log_dir is not None:  # every run's output, to read when a fault does not recover
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"run-{self.n_runs:02d}.log").write_text(out)
        return proc.returncode, out, time.time() - t0

    @property
    def stage1(self) -> Path:
        return self.root / "work" / "checkpoints" / "stage1"

    def client(self):
        from mlflow import MlflowClient

        uri = f"sqlite:///{self.root}/mlflow.db"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _lines(out: str, *needles: str) -> str:
    """The first output line holding one of ``needles``, without Dagster's log prefix (time - dagster - level -
    job - run - step -)."""
    for line in out.splitlines():
        if any(n in line for n in needles):
            parts = line.strip().split(" - ")
            message = " - ".join(parts[6:]) if len(parts) > 6 and parts[1] == "dagster" else line.strip()
            return message if len(message) <= 220 else message[:217] + "..."
    return ""


def fault_killed_run(s: Scratch) -> dict[str, Any]:
    # the stage-1 settings change (a longer run), so Stage 1 trains again: killed once it has 2 new checkpoints
    longer = json.loads(json.dumps(LONG))
    longer["stage1"]["train"]["max_steps"] = 40
    old_run = json.loads((s.stage1 / "nyx_state.json").read_text())["mlflow_run_id"]
    proc = s.start(longer)
    deadline = time.time() + 900
    while time.time() < deadline:
        state = json.loads((s.stage1 / "nyx_state.json").read_text()) if (s.stage1 / "nyx_state.json").exists() else {}
        cks = list((s.stage1 / "checkpoints").glob("step-*")) if (s.stage1 / "checkpoints").exists() else []
        if state.get("mlflow_run_id") not in (None, old_run) and state.get("status") == "running" and len(cks) >= 2:
            break
        if proc.poll() is not None:
            return {"saw": "the run ended before it could be killed", "recovered": False, "lost": "?", "seconds": 0}
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = json.loads((s.stage1 / "nyx_state.json").read_text())["mlflow_run_id"]
    rc, out, secs = s.run(longer)
    state = json.loads((s.stage1 / "nyx_state.json").read_text())
    steps = [m.step for m in s.client().get_metric_history(run_id, "loss")]
    ok = rc == 0 and state["mlflow_run_id"] == run_id and len(steps) == len(set(steps)) and max(steps) == 40
    LONG["stage1"]["train"]["max_steps"] = 40  # the later faults start from this finished run
    return {"saw": _lines(out, "cleaned:") or "no stale run reported",
            "recovered": ok, "lost": "none" if ok else f"rc={rc}, steps logged {len(steps)} ({len(set(steps))} "
                                                             "distinct)",
            "seconds": secs, "detail": f"resumed from step {state['summary'].get('resumed_from_step')}, "
                                       f"{len(steps)} loss steps logged once each"}


def fault_second_make_run(s: Scratch) -> dict[str, Any]:
    first = s.start(LONG)
    time.sleep(5)
    rc, out, secs = s.run(LONG)
    first_out, _ = first.communicate(timeout=1800)
    return {"saw": _lines(out, "already running") or out[-160:], "recovered": rc == 3 and first.returncode == 0,
            "lost": "none" if first.returncode == 0 else "the first run failed", "seconds": secs}


def fault_rerun_unchanged(s: Scratch, first_run_s: float) -> dict[str, Any]:
    rc, out, secs = s.run(LONG)
    return {"saw": _lines(out, "unchanged") or out[-160:], "recovered": rc == 0, "lost": "none",
            "seconds": secs, "detail": f"{secs / first_run_s:.2f} of the first run's time"}


def fault_zeroed_weights(s: Scratch) -> dict[str, Any]:
    weights = next((s.stage1 / "final").glob("*.safetensors"))
    weights.write_bytes(b"\0" * weights.stat().st_size)
    query = "name='nyx-retriever'"
    before = len(s.client().search_model_versions(query))
    rc, out, secs = s.run(LONG)
    from nyx.utils.integrity import is_verified

    ok = rc == 0 and is_verified(s.stage1 / "final")[0]
    return {"saw": _lines(out, "failed verification") or out[-160:], "recovered": ok,
            "lost": "none (retrained from the last checkpoint that verifies)" if ok else f"rc={rc}",
            "seconds": secs,
            "detail": f"registered versions {before} -> {len(s.client().search_model_versions(query))}"}


def fault_truncated_shard(s: Scratch) -> dict[str, Any]:
    shard = s.root / "data" / "raw" / "shard-00001.parquet"
    backup = s.root / "shard-00001.parquet.bak"
    shutil.copy2(shard, backup)
    shard.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    rc, out, _ = s.run(LONG)
    saw = _lines(out, "rejected, not ingested") or _lines(out, "was rejected at ingestion") or out[-160:]
    good = (s.root / "data" / "documents" / "shard-00000.jsonl").is_file()
    shutil.copy2(backup, shard)  # what the operator does: put a good copy back, run again
    rc2, _, secs = s.run(LONG)
    return {"saw": saw, "recovered": rc2 == 0 and good,
            "lost": "none (the other shards were ingested; the bad one named in rejects/)" if good else "good shards",
            "seconds": secs, "detail": f"run with the bad shard: exit {rc} (only its partition failed)"}


def fault_killed_dvc_push(s: Scratch) -> dict[str, Any]:
    from nyx.versioning.dvc import Dvc

    repo = Dvc(s.root, remote_url=str(s.root / "remote"))
    shutil.rmtree(s.root / "remote")
    (s.root / "remote").mkdir()
    push = subprocess.Popen(repo._exe() + ["push", "-q", "data.dvc"], cwd=s.root, start_new_session=True)
    while push.poll() is None and not any(p.is_file() for p in (s.root / "remote").rglob("*")):
        time.sleep(0.005)
    how = "killed mid-way"
    if push.poll() is None:
        os.killpg(push.pid, signal.SIGKILL)
        push.wait()
    objects = [p for p in (s.root / "remote").rglob("*") if p.is_file()]
    if not repo.cloud_status("data"):  # the push won the race: take objects away as a kill would have left them
        for p in objects[::2]:
            p.unlink()
        how = "finished before the kill; half its objects removed"
    (s.root / "remote" / ".AbCdEfGhIjKlMnOpQrStUv.tmp").write_bytes(b"partial")
    missing = len(repo.cloud_status("data"))
    rc, out, secs = s.run(LONG)
    clean = repo.cloud_status("data") == {}
    return {"saw": f"remote lacked {missing} output(s); " + (_lines(out, "partial file") or ""),
            "recovered": rc == 0 and clean and not list((s.root / "remote").rglob(".*.tmp")),
            "lost": "none" if clean else "objects missing on the remote", "seconds": secs, "detail": how}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.faults", description=__doc__)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "faults.json"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--logs", default=str(REPO / "benchmarks" / "results" / "faults-logs"),
                        help="where each run's output goes")
    args = parser.parse_args(argv)
    from nyx.data.sample import generate_sample

    root = Path(tempfile.mkdtemp(prefix="nyx-faults-"))
    shutil.rmtree(args.logs, ignore_errors=True)
    s = Scratch(root, Path(args.logs))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    generate_sample(root / "data" / "raw", n_docs=24, seed=7, n_shards=2)
    rows: list[dict[str, Any]] = []
    try:
        rc, out, first = s.run(LONG)
        if rc != 0:
            print(out[-4000:])
            raise SystemExit("the baseline run failed")
        for name, fn in (("make run killed (SIGKILL) while Stage 1 trains, run again", fault_killed_run),
                         ("two make run at once", fault_second_make_run),
                         ("make run again, nothing changed", lambda sc: fault_rerun_unchanged(sc, first)),
                         ("Stage-1 weights zeroed (same size)", fault_zeroed_weights),
                         ("one truncated Parquet shard in data/raw", fault_truncated_shard),
                         ("dvc push killed mid-way", fault_killed_dvc_push)):
            t0 = time.time()
            try:
                row = fn(s)
            except Exception as e:  # a fault that breaks the benchmark is a finding, not a crash
                row = {"saw": f"{type(e).__name__}: {e}"[:160], "recovered": False, "lost": "?",
                       "seconds": time.time() - t0}
            rows.append({"fault": name, **row})
            print(f"{name}: recovered={row['recovered']} ({row['seconds']:.0f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report = {"first_run_seconds": first, "faults": rows, "scratch": str(root)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nfirst run: {first:.0f} s\n")
    print("| fault | what the operator saw | recovered | data lost | time to recover |")
    print("|---|---|---|---|---|")
    for r in rows:
        saw = r["saw"].replace("|", "/") + (f" ({r['detail']})" if r.get("detail") else "")
        print(f"| {r['fault']} | {saw} | {'yes' if r['recovered'] else 'no'} | {r['lost']} | {r['seconds']:.0f} s |")
    return 0 if all(r["recovered"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
