"""A second pipeline run on the same data root refuses at once, naming the first; a killed holder's lock is taken
over (real processes, real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nyx.utils.runlock import OWNER_NAME, PipelineBusy, pipeline_lock
from tests.paths import REPO

HOLD = (
    "import sys, time\nfrom nyx.utils.runlock import pipeline_lock\n"
    "with pipeline_lock(sys.argv[1], what='make run'):\n    print('held', flush=True)\n    time.sleep(120)\n"
)


@pytest.fixture()
def holder(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc, work
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_second_make_run_refuses_within_seconds_naming_the_first_and_touches_nothing(holder, tmp_path):
    proc, work = holder
    env = {**os.environ, "NYX_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dh")}
    t0 = time.time()
    second = subprocess.run(
        [sys.executable, "-m", "orchestration.run_sample"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 3 and time.time() - t0 < 30
    assert f"pid {proc.pid}" in second.stderr and "already running the pipeline" in second.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "dh").exists()  # nothing of the first's touched
    assert json.loads((work / OWNER_NAME).read_text())["pid"] == proc.pid


def test_the_lock_of_a_killed_run_is_taken_over(holder):
    proc, work = holder
    with pytest.raises(PipelineBusy, match=f"pid {proc.pid}"):
        with pipeline_lock(work):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pipeline_lock(work) as me:  # the kernel released the dead holder's lock; its owner file is replaced
        assert json.loads((work / OWNER_NAME).read_text())["pid"] == me["pid"] == os.getpid()
    assert not (work / OWNER_NAME).exists()
