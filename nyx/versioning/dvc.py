"""DVC data versioning: a thin wrapper over the ``dvc`` CLI plus DVC's own directory hashing.

DVC holds a repository lock, so callers must serialise calls (the Dagster ``dvc`` pool does it for assets).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml


class DvcError(RuntimeError):
    pass


def dvc_md5(path: str | os.PathLike) -> str:
    """The md5 DVC gives ``path`` (``<hex>.dir`` for a folder), computed without touching any cache."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {path}: it does not exist")
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        odb = HashFileDB(fs, tmp)
        _, _, obj = build(odb, os.fspath(path), fs, "md5", dry_run=True)
    return str(obj.hash_info.value)


@dataclass
class Dvc:
    """Runs ``dvc`` in ``repo_dir`` (a git repository) with analytics off."""

    repo_dir: Path
    remote_url: str | None = None
    remote_name: str = "local"

    def __post_init__(self) -> None:
        self.repo_dir = Path(self.repo_dir)

    def _exe(self) -> list[str]:
        exe = Path(sys.executable).with_name("dvc")
        return [str(exe)] if exe.exists() else [sys.executable, "-m", "dvc"]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_NO_UPDATE_CHECK="1")
        proc = subprocess.run(self._exe() + list(args), cwd=self.repo_dir, env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise DvcError(f"dvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def ensure_init(self) -> None:
        """``dvc init`` if needed, analytics off, and the default remote configured."""
        if not (self.repo_dir / ".dvc").is_dir():
            self.run("init", "-q")
        self.run("config", "core.analytics", "false")
        if self.remote_url:
            url = self.remote_url
            if "://" not in url:
                Path(url if os.path.isabs(url) else self.repo_dir / url).mkdir(parents=True, exist_ok=True)
            self.run("remote", "add", "-f", "-d", self.remote_name, url)

    def add(self, target: str = "data") -> str:
        self.run("add", "-q", target)
        return self.tracked_md5(target)

    def push(self, target: str = "data") -> None:
        self.run("push", "-q", f"{target}.dvc")

    def pull(self, target: str = "data") -> None:
        self.run("pull", "-q", f"{target}.dvc")

    def checkout(self, target: str = "data") -> None:
        self.run("checkout", "-q", "--force", f"{target}.dvc")

    def status(self, target: str = "data") -> dict:
        """``dvc status`` as JSON: an empty dict means the workspace matches the .dvc file."""
        import json

        out = self.run("status", "--json", f"{target}.dvc").stdout.strip()
        return json.loads(out) if out else {}

    def tracked_md5(self, target: str = "data") -> str:
        """The md5 recorded in ``<target>.dvc`` (what git versions)."""
        dvc_file = self.repo_dir / f"{target}.dvc"
        if not dvc_file.is_file():
            raise DvcError(f"{dvc_file} does not exist: run `dvc add {target}` first")
        outs = yaml.safe_load(dvc_file.read_text()).get("outs") or []
        if not outs:
            raise DvcError(f"{dvc_file} lists no outputs")
        return str(outs[0]["md5"])
