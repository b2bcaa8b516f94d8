"""``python -m benchmarks.faults``: inject the faults operators meet into a scratch copy of the sample pipeline, end to
end, and print what the operator saw, whether it recovered, what was lost and how long recovery took.

Each fault runs against the real driver (``python -m orchestration.run_sample``, what ``make run`` runs) in a scratch
folder with its own data, Dagster home, MLflow store and DVC remote, on a small sample (24 documents, 6 training
steps). Faults: ``make run`` killed with SIGKILL while Stage 1 trains (then run again: the dead run is cleaned and
training resumes, each step logged once), two ``make run`` at once, a rerun with nothing changed, the Stage-1
weights zeroed, a truncated Parquet shard, a ``dvc push`` killed mid-way. Takes about 10 minutes on 2 cores.

``--only KEY`` (repeatable) runs only the named faults (``--list`` shows the keys). ``--pipeline data`` runs them
against the data assets alone (``raw_documents``, then ``corpus_chunks`` and ``synthetic_qa`` over every shard in
one run, as a backfill launched from the UI does) instead of the whole of ``make run``: a check of the data faults
in well under a minute (``--only truncated-shard --pipeline data``).
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
TRAIN = {
    "per_device_batch_size": 8,
    "max_steps": 6,
    "save_steps": 3,
    "logging_steps": 1,
    "epochs": 1,
    "max_length": 256,
}
OVERRIDES = {
    "nyxqa": {"dev_per_group": 3, "test_per_group": 4},
    "miner": {"retriever": "bm25"},
    # Stage 2 for two whole epochs: stage2_loss_not_rising then compares the same examples (epoch 1 vs 2);
    # with 0.6 epoch it compares one batch with another, whose difficulty moves the loss more than six steps
    # of training (3.9 -> 4.7 on this corpus once images reached training shrunk instead of dropped)
    "stage1": {"train": TRAIN},
    "stage2": {"train": {**TRAIN, "epochs": 2, "max_steps": 200}},
    "feedback": {"top_k": 5},
    "eval": {"baselines": ["bm25"]},
    # recovery is measured here, not model quality: a retrained challenger is promoted even if no better,
    # so that one fault's retraining does not fail the gate for all that follow
    "promotion": {"gate_metrics": {"ndcg@10": -1.0, "recall@10": -1.0}},
}
LONG = json.loads(json.dumps(OVERRIDES))
LONG["stage1"]["train"].update(max_steps=30, save_steps=2, epochs=20)


#: what each scratch pipeline runs: ``full`` is ``make run``; ``data`` the data assets alone (:func:`drive_data`)
PIPELINES = {"full": ["-m", "orchestration.run_sample"], "data": ["-m", "benchmarks.faults", "--drive-data"]}


class Scratch:
    """A scratch copy of the pipeline under ``root``. ``in_process`` (``data`` pipeline only) runs the pipeline in
    this process, in the scratch's environment, instead of a child process: the same assets and output, without
    paying the imports (torch, Great Expectations) on every run; what the test of this benchmark uses."""

    def __init__(self, root: Path, log_dir: Path | None = None, pipeline: str = "full", in_process: bool = False):
        if in_process and pipeline != "data":
            raise ValueError("only the data pipeline runs in-process")
        self.root = root
        self.log_dir = log_dir
        self.pipeline = pipeline
        self.in_process = in_process
        self.n_runs = 0
        self.first_run_s = 0.0

    def env(self, overrides: dict[str, Any] = OVERRIDES) -> dict[str, str]:
        r = self.root
        return {
            **os.environ,
            "NYX_DATA_DIR": str(r / "data"),
            "NYX_REPO_DIR": str(r),
            "NYX_DVC_REMOTE": str(r / "remote"),
            "DAGSTER_HOME": str(r / "dh"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{r}/mlflow.db",
            "NYX_PROFILE": "sample",
            "NYX_PROFILE_OVERRIDES": json.dumps(overrides),
            "OMP_NUM_THREADS": "1",
        }

    def start(self, overrides: dict[str, Any] = OVERRIDES) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, *PIPELINES[self.pipeline]],
            cwd=REPO,
            env=self.env(overrides),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def run(self, overrides: dict[str, Any] = OVERRIDES) -> tuple[int, str, float]:
        t0 = time.time()
        if self.in_process:
            rc, out = self._run_in_process(overrides)
        else:
            proc = self.start(overrides)
            out, _ = proc.communicate(timeout=1800)
            rc = proc.returncode
        self.n_runs += 1
        if self.log_dir is not None:  # every run's output, to read when a fault does not recover
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"run-{self.n_runs:02d}.log").write_text(out)
        return rc, out, time.time() - t0

    def _run_in_process(self, overrides: dict[str, Any]) -> tuple[int, str]:
        import contextlib
        import io
        import traceback

        saved = dict(os.environ)
        buf = io.StringIO()
        try:
            os.environ.clear()
            os.environ.update(self.env(overrides))
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                try:
                    rc = drive_data()
                except Exception:  # what a child process would print before exiting 1
                    traceback.print_exc()
                    rc = 1
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return rc, buf.getvalue()

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
    return {
        "saw": _lines(out, "cleaned:") or "no stale run reported",
        "recovered": ok,
        "lost": "none" if ok else f"rc={rc}, steps logged {len(steps)} ({len(set(steps))} distinct)",
        "seconds": secs,
        "detail": f"resumed from step {state['summary'].get('resumed_from_step')}, "
        f"{len(steps)} loss steps logged once each",
    }


def fault_second_make_run(s: Scratch) -> dict[str, Any]:
    first = s.start(LONG)
    time.sleep(5)
    rc, out, secs = s.run(LONG)
    first_out, _ = first.communicate(timeout=1800)
    return {
        "saw": _lines(out, "already running") or out[-160:],
        "recovered": rc == 3 and first.returncode == 0,
        "lost": "none" if first.returncode == 0 else "the first run failed",
        "seconds": secs,
    }


def fault_rerun_unchanged(s: Scratch, first_run_s: float) -> dict[str, Any]:
    rc, out, secs = s.run(LONG)
    return {
        "saw": _lines(out, "unchanged") or out[-160:],
        "recovered": rc == 0,
        "lost": "none",
        "seconds": secs,
        "detail": f"{secs / first_run_s:.2f} of the first run's time",
    }


def fault_zeroed_weights(s: Scratch) -> dict[str, Any]:
    weights = next((s.stage1 / "final").glob("*.safetensors"))
    weights.write_bytes(b"\0" * weights.stat().st_size)
    query = "name='nyx-retriever'"
    before = len(s.client().search_model_versions(query))
    rc, out, secs = s.run(LONG)
    from nyx.utils.integrity import is_verified

    ok = rc == 0 and is_verified(s.stage1 / "final")[0]
    return {
        "saw": _lines(out, "failed verification") or out[-160:],
        "recovered": ok,
        "lost": "none (retrained from the last checkpoint that verifies)" if ok else f"rc={rc}",
        "seconds": secs,
        "detail": f"registered versions {before} -> {len(s.client().search_model_versions(query))}",
    }


def fault_truncated_shard(s: Scratch) -> dict[str, Any]:
    data = s.root / "data"
    shard = data / "raw" / "shard-00001.parquet"
    backup = s.root / "shard-00001.parquet.bak"
    shutil.copy2(shard, backup)
    # what the good version of the shard left: the cut copy must withdraw it, so nothing downstream reads it
    derived = [data / d / "shard-00001.jsonl" for d in ("documents", "chunks", "synthetic_qa")]
    stale = [f for f in derived if f.is_file()]
    shard.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    rc, out, _ = s.run(LONG)
    saw = _lines(out, "rejected, not ingested") or _lines(out, "was rejected at ingestion") or out[-160:]
    good = (data / "documents" / "shard-00000.jsonl").is_file() and (data / "chunks" / "shard-00000.jsonl").is_file()
    left = [f.name for f in stale if f.is_file()]
    partitions = _lines(out, "corpus_chunks partitions:")  # the data pipeline's per-partition outcome
    shutil.copy2(backup, shard)  # what the operator does: put a good copy back, run again
    rc2, _, secs = s.run(LONG)
    back = all(f.is_file() for f in derived)
    ok = rc2 == 0 and good and not left and back
    lost = (
        "none (the other shards were ingested; the bad one named in rejects/)"
        if good and back
        else "good shards"
        if not good
        else "the repaired shard's outputs"
    )
    return {
        "saw": saw,
        "recovered": ok,
        "lost": lost,
        "seconds": secs,
        "detail": f"run with the bad shard: exit {rc} ({partitions or 'only its partition failed'}); "
        + (
            f"{len(stale)} stale file(s) of its good version withdrawn"
            if not left
            else f"stale files left: {', '.join(left)}"
        ),
    }


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
    return {
        "saw": f"remote lacked {missing} output(s); " + (_lines(out, "partial file") or ""),
        "recovered": rc == 0 and clean and not list((s.root / "remote").rglob(".*.tmp")),
        "lost": "none" if clean else "objects missing on the remote",
        "seconds": secs,
        "detail": how,
    }


#: key -> (what the table calls it, the fault, the pipelines it can be injected into); in the order they run
FAULTS: dict[str, tuple[str, Any, frozenset[str]]] = {
    "killed-run": ("make run killed (SIGKILL) while Stage 1 trains, run again", fault_killed_run, frozenset({"full"})),
    "second-run": ("two make run at once", fault_second_make_run, frozenset({"full"})),
    "rerun-unchanged": (
        "make run again, nothing changed",
        lambda sc: fault_rerun_unchanged(sc, sc.first_run_s),
        frozenset({"full"}),
    ),
    "zeroed-weights": ("Stage-1 weights zeroed (same size)", fault_zeroed_weights, frozenset({"full"})),
    "truncated-shard": ("one truncated Parquet shard in data/raw", fault_truncated_shard, frozenset({"full", "data"})),
    "killed-dvc-push": ("dvc push killed mid-way", fault_killed_dvc_push, frozenset({"full"})),
}


def render_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows`` (``fault``, ``saw``, optional ``detail``, ``recovered``, ``lost``,
    ``seconds``), as printed and as kept in docs/operations.md; a ``|`` in a cell is written ``/``."""

    def cell(x: Any) -> str:
        return str(x).replace("|", "/").replace("\n", " ")

    lines = ["| fault | what the operator saw | recovered | data lost | time to recover |", "|---|---|---|---|---|"]
    for r in rows:
        saw = r["saw"] + (f" ({r['detail']})" if r.get("detail") else "")
        lines.append(
            f"| {cell(r['fault'])} | {cell(saw)} | {'yes' if r['recovered'] else 'no'} | {cell(r['lost'])} "
            f"| {r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def run_faults(s: Scratch, keys: list[str]) -> list[dict[str, Any]]:
    """Inject each fault of ``keys`` in turn into the scratch pipeline ``s`` (already run once); one row each. A
    fault that breaks the benchmark itself is a row that did not recover, not a crash."""
    rows: list[dict[str, Any]] = []
    for key in keys:
        name, fn, _ = FAULTS[key]
        t0 = time.time()
        try:
            row = fn(s)
        except Exception as e:  # a fault that breaks the benchmark is a finding, not a crash
            row = {
                "saw": f"{type(e).__name__}: {e}"[:160],
                "recovered": False,
                "lost": "?",
                "seconds": time.time() - t0,
            }
        rows.append({"fault": name, **row})
        print(f"{name}: recovered={row['recovered']} ({row['seconds']:.0f} s)", flush=True)
    return rows


def drive_data() -> int:
    """The ``data`` scratch pipeline (run as ``python -m benchmarks.faults --drive-data`` in a scratch's
    environment): ``raw_documents``, then ``corpus_chunks`` and ``synthetic_qa`` over every shard in one run (a
    single-run backfill), with their checks, on this environment's Dagster instance. Exit 1 if a run failed."""
    from orchestration.instance_setup import ensure_instance

    ensure_instance()
    import dagster as dg

    import assets.corpus_chunks
    import assets.hard_negatives
    import assets.nyxqa
    import assets.raw
    import assets.synthetic_qa
    from assets.corpus_chunks import corpus_chunks
    from assets.raw import raw_documents
    from assets.synthetic_qa import synthetic_qa
    from orchestration.definitions import resources as environment_resources
    from orchestration.partitions import sync_shard_partitions

    bound = environment_resources()  # NYX_DATA_DIR, NYX_REPO_DIR, ... of this scratch's environment
    settings = bound["settings"]
    resources = {"settings": settings, "dvc": bound["dvc"]}
    modules = [assets.raw, assets.corpus_chunks, assets.synthetic_qa, assets.nyxqa, assets.hard_negatives]
    defs = [raw_documents, corpus_chunks, synthetic_qa, *dg.load_asset_checks_from_modules(modules)]
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with dg.DagsterInstance.get() as instance:
        raw = dg.materialize(
            defs,
            selection=[raw_documents],
            instance=instance,
            resources=resources,
            run_config=run_config,
            raise_on_error=False,
        )
        if not raw.success:
            return 1
        keys = sync_shard_partitions(instance, settings.paths)
        shards = dg.materialize(
            defs,
            selection=[corpus_chunks, synthetic_qa],
            instance=instance,
            resources=resources,
            run_config=run_config,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        status = instance.get_status_by_partition(corpus_chunks.key, keys, corpus_chunks.partitions_def)
    print("corpus_chunks partitions: " + ", ".join(f"{k}={v.value if v else 'missing'}" for k, v in status.items()))
    return 0 if shards.success else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks.faults", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        help="the JSON report (default benchmarks/results/faults.json for every fault on "
        "the full pipeline, faults-partial.json otherwise)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--logs",
        help="where each run's output goes (default benchmarks/results/faults-logs, "
        "faults-partial-logs for a partial run)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(FAULTS),
        metavar="KEY",
        help="run only this fault (repeatable; --list shows the keys)",
    )
    parser.add_argument(
        "--pipeline",
        choices=list(PIPELINES),
        default="full",
        help="what the scratch runs: full (make run) or data (the data assets alone, fast)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="with --pipeline data: run the scratch pipeline in this process (faster: the imports are paid once)",
    )
    parser.add_argument("--list", action="store_true", help="list the faults and the pipelines they run in")
    parser.add_argument("--drive-data", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive_data:
        return drive_data()
    if args.list:
        for key, (name, _, pipelines) in FAULTS.items():
            print(f"{key:16s} {name} [{', '.join(sorted(pipelines))}]")
        return 0
    keys = [k for k in FAULTS if k in args.only] if args.only else list(FAULTS)
    if args.only is None and args.pipeline != "full":
        keys = [k for k in keys if args.pipeline in FAULTS[k][2]]
    wrong = [k for k in keys if args.pipeline not in FAULTS[k][2]]
    if args.in_process and args.pipeline != "data":
        parser.error("--in-process runs only the data pipeline (--pipeline data)")
    if wrong:
        parser.error(
            f"--pipeline {args.pipeline} cannot run {', '.join(wrong)} (it needs "
            + "; ".join(f"{k}: {', '.join(sorted(FAULTS[k][2]))}" for k in wrong)
            + ")"
        )
    results = REPO / "benchmarks" / "results"
    stem = "faults" if keys == list(FAULTS) and args.pipeline == "full" else "faults-partial"  # keep the full table
    args.out = args.out or str(results / f"{stem}.json")
    args.logs = args.logs or str(results / f"{stem}-logs")
    from nyx.data.sample import generate_sample

    root = Path(tempfile.mkdtemp(prefix="nyx-faults-"))
    shutil.rmtree(args.logs, ignore_errors=True)
    s = Scratch(root, Path(args.logs), pipeline=args.pipeline, in_process=args.in_process)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    generate_sample(root / "data" / "raw", n_docs=24, seed=7, n_shards=2)
    try:
        rc, out, s.first_run_s = s.run(LONG)
        if rc != 0:
            print(out[-4000:])
            raise SystemExit("the baseline run failed")
        rows = run_faults(s, keys)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report = {"first_run_seconds": s.first_run_s, "pipeline": args.pipeline, "faults": rows, "scratch": str(root)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nfirst run: {s.first_run_s:.0f} s ({args.pipeline} pipeline)\n")
    print(render_table(rows))
    return 0 if all(r["recovered"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
