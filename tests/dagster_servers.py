"""A Dagster server (``dagster-webserver`` or ``dagster dev``) on a free local port for the UI and API tests: started
in its own process group, ready when a check passes, and stopped with everything it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.paths import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dagster_server(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    ready: Callable[[httpx.Client], bool],
    timeout: float = 120,
) -> Iterator[tuple[str, httpx.Client]]:
    """Run ``<venv>/bin/<command[0]> <command[1:]> -m orchestration.definitions -h 127.0.0.1 -p <port>`` and yield
    ``(base URL, client)`` once ``ready(client)`` is true; the server's log is at ``log_path``."""
    port = free_port()
    exe = str(Path(sys.executable).with_name(command[0]))
    args = [exe, *command[1:], "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        # its own process group: stopping it stops the code server and daemon it starts
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                deadline = time.monotonic() + timeout
                while True:
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    try:
                        if ready(client):
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, f"{command[0]} was not ready within {timeout:.0f} s"
                    time.sleep(0.5)
                yield base, client
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
