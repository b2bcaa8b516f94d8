"""A `dvc push` killed mid-way (a real SIGKILL): the next snapshot removes its partial files, pushes what the remote
lacks, and leaves `dvc status -c` clean, so `dvc checkout` of that version restores the data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nyx.versioning.dvc import Dvc
from tests.paths import REPO

pytestmark = pytest.mark.slow


def _repo(tmp_path: Path) -> Dvc:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(120):  # ~240 MB of incompressible files: a push takes long enough to be killed mid-way
        (data / f"part-{i:03d}.bin").write_bytes(rng.bytes(2 << 20))
    repo = Dvc(tmp_path, remote_url=str(tmp_path / "remote"))
    repo.ensure_init()
    repo.add("data")
    return repo


def test_snapshot_after_a_killed_push_completes_it_and_removes_its_partial_files(tmp_path):
    repo = _repo(tmp_path)
    remote = tmp_path / "remote"
    push = subprocess.Popen(
        repo._exe() + ["push", "-q", "data.dvc"],
        cwd=tmp_path,
        start_new_session=True,
        env=dict(os.environ, DVC_NO_ANALYTICS="1"),
    )
    deadline = time.time() + 60
    while sum(1 for p in remote.rglob("*") if p.is_file()) < 5:  # some objects are on the remote: kill it
        assert push.poll() is None, "dvc push finished before it could be killed: make the data larger"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(push.pid, signal.SIGKILL)
    push.wait()
    # what the operator meets: data.dvc points at a version the remote lacks
    assert repo.cloud_status("data")
    planted = next(p for p in remote.rglob("*") if p.is_file()).parent / ".AbCdEfGhIjKlMnOpQrStUv.tmp"
    planted.write_bytes(b"partial")  # as a dead upload leaves it (whether or not this kill happened to)

    snap = repo.snapshot("data")
    assert snap["remote_clean"] and repo.cloud_status("data") == {}
    assert str(planted) in snap["removed_temps"] and not planted.exists()
    assert not [p for p in remote.rglob(".*.tmp")]

    # that version restores from the remote alone
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    repo.pull("data")
    assert len(list((tmp_path / "data").iterdir())) == 120
    assert repo.status("data") == {}


def test_partial_files_are_left_alone_while_a_dvc_command_holds_the_repository(tmp_path):
    import fcntl

    repo = Dvc(tmp_path, remote_url=str(tmp_path / "remote"))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    repo.ensure_init()
    temp = tmp_path / "remote" / ".AbCdEfGhIjKlMnOpQrStUv.tmp"
    temp.write_bytes(b"being written")
    lock = tmp_path / ".dvc" / "tmp" / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a running dvc command holds
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from nyx.versioning.dvc import Dvc; "
                "print(len(Dvc(sys.argv[1], remote_url=sys.argv[2]).remove_dead_temps()))",
                str(tmp_path),
                str(tmp_path / "remote"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
    assert child.stdout.strip() == "0", child.stderr
    assert temp.exists()
    assert repo.remove_dead_temps() == [temp] and not temp.exists()
