"""DVC data versioning: a thin wrapper over the ``dvc`` CLI plus DVC's own directory hashing.

DVC holds a repository lock, so callers must serialise calls (the Dagster ``dvc`` pool does it for assets).

What is *not* part of a data version (rejects logs, reader caches: :attr:`nyx.paths.DataPaths.unversioned`) is listed
in the repository's ``.dvcignore`` (:meth:`Dvc.ensure_ignored`; DVC refuses a ``.dvcignore`` inside a tracked
folder), so ``dvc status`` stays clean when they change and ``dvc checkout`` of another version leaves them alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml


class DvcError(RuntimeError):
    pass


#: The comment above the patterns :meth:`Dvc.ensure_ignored` appends to ``.dvcignore``.
IGNORE_HEADER = "# nyx: not part of the data version (nyx.paths.DataPaths.unversioned: rejects, reader caches)"
#: Key under ``meta`` in a ``.dvc`` file: snapshot asset -> the md5 it recorded.
SNAPSHOTS_META = "nyx_snapshots"


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
            raise DvcError(
                f"dvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
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

    def checkout(self, target: str = "data", force: bool = False) -> None:
        """``dvc checkout <target>.dvc``. Without ``force`` DVC refuses to delete files it has no copy of ("Can't
        remove the following unsaved files") instead of losing them; with every writer inside a snapshot or
        ``.dvcignore``d, a checkout after the pipeline ran needs no force."""
        self.run("checkout", "-q", *(["--force"] if force else []), f"{target}.dvc")

    def status(self, target: str = "data") -> dict:
        """``dvc status`` as JSON: an empty dict means the workspace matches the .dvc file."""
        import json

        out = self.run("status", "--json", f"{target}.dvc").stdout.strip()
        return json.loads(out) if out else {}

    def cloud_status(self, target: str = "data") -> dict:
        """``dvc status -c`` as JSON: what the remote lacks of ``<target>.dvc`` (empty: the remote has it all)."""
        import json

        out = self.run("status", "-c", "--json", f"{target}.dvc").stdout.strip()
        return json.loads(out) if out else {}

    def _local_stores(self) -> list[Path]:
        """The cache and, when it is a folder, the remote: where a killed ``dvc add``/``push`` leaves temp files."""
        stores = [self.repo_dir / ".dvc" / "cache"]
        if self.remote_url and "://" not in self.remote_url:
            url = Path(self.remote_url)
            stores.append(url if url.is_absolute() else self.repo_dir / url)
        return [s for s in stores if s.is_dir()]

    def remove_dead_temps(self) -> list[Path]:
        """Remove the partial files (``.<token>.tmp``) that a killed ``dvc push``/``add`` left in the cache and a
        local remote. Only when no ``dvc`` command holds this repository's lock (a live one may be writing them);
        returns what was removed."""
        import fcntl
        import re

        lock_path = self.repo_dir / ".dvc" / "tmp" / "lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        partial = re.compile(r"^\.[A-Za-z0-9_-]{16,}\.tmp$")
        removed: list[Path] = []
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return removed  # a dvc command is running in this repository: its temp files are alive
            try:
                for store in self._local_stores():
                    for p in store.rglob(".*.tmp"):
                        if p.is_file() and partial.match(p.name):
                            p.unlink()
                            removed.append(p)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return removed

    def ensure_ignored(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        """Make sure the repository's ``.dvcignore`` lists each of ``paths`` (folders, relative to the repository
        root) as an anchored pattern (``/data/rejects/``), so that ``dvc add``/``status``/``checkout`` leave them
        alone. Appends only what is missing (under a ``# nyx:`` comment); returns the patterns it added."""
        file = self.repo_dir / ".dvcignore"
        text = file.read_text() if file.exists() else ""
        present = {line.strip() for line in text.splitlines()}
        patterns = []
        for p in paths:
            rel = Path(p).as_posix().strip("/")
            if not rel or rel == "." or Path(p).is_absolute() or rel.startswith("../"):
                raise ValueError(f"{p}: an ignored path must be a folder inside the repository, relative to its root")
            patterns.append(f"/{rel}/")
        missing = [p for p in dict.fromkeys(patterns) if p not in present]
        if missing:
            if text and not text.endswith("\n"):
                text += "\n"
            if IGNORE_HEADER not in present:
                text += IGNORE_HEADER + "\n"
            text += "".join(f"{p}\n" for p in missing)
            tmp = file.with_name(f".dvcignore.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, file)
        return missing

    def snapshot(
        self,
        target: str = "data",
        *,
        label: str | None = None,
        keep: tuple[str, ...] = (),
        ignore: Sequence[str | os.PathLike] = (),
    ) -> dict:
        """Version ``target`` and make sure the remote holds all of it: list ``ignore`` in ``.dvcignore``, remove
        what a killed push left, ``add``, ``push`` (which sends whatever the remote lacks, also from an earlier
        interrupted push), then check with ``status -c``. Raises :class:`DvcError` naming what the remote still lacks.

        ``label`` (the snapshot asset's name) is recorded with the md5 under ``meta.nyx_snapshots`` in
        ``<target>.dvc`` (DVC keeps ``meta`` and ignores it), together with the earlier entries named in ``keep``:
        a later snapshot of the same folder (``feedback_snapshot`` after ``data_snapshot``) thus still names the
        version the earlier one took, which is what trainings started in between are tagged with."""
        added = self.ensure_ignored(ignore) if ignore else []
        removed = self.remove_dead_temps()
        before = self.snapshots(target)
        md5 = self.add(target)
        if label:
            self._write_snapshots(target, {**{k: v for k, v in before.items() if k in keep}, label: md5})
        self.push(target)
        missing = self.cloud_status(target)
        if missing:
            raise DvcError(
                f"after `dvc push` the remote still lacks {len(missing)} output(s) of {target}.dvc: "
                f"{sorted(missing)[:10]}"
            )
        return {
            "md5": md5,
            "removed_temps": [str(p) for p in removed],
            "remote_clean": True,
            "ignore_added": added,
            "snapshots": self.snapshots(target),
        }

    def snapshots(self, target: str = "data") -> dict[str, str]:
        """``meta.nyx_snapshots`` of ``<target>.dvc``: snapshot asset -> the md5 it recorded (empty if none)."""
        dvc_file = self.repo_dir / f"{target}.dvc"
        if not dvc_file.is_file():
            return {}
        meta = (yaml.safe_load(dvc_file.read_text()) or {}).get("meta") or {}
        return {str(k): str(v) for k, v in (meta.get(SNAPSHOTS_META) or {}).items()} if isinstance(meta, dict) else {}

    def _write_snapshots(self, target: str, snapshots: dict[str, str]) -> None:
        dvc_file = self.repo_dir / f"{target}.dvc"
        doc = yaml.safe_load(dvc_file.read_text()) or {}
        found = doc.get("meta")
        meta = found if isinstance(found, dict) else {}
        doc["meta"] = {**meta, SNAPSHOTS_META: snapshots}
        tmp = dvc_file.with_name(f".{dvc_file.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        os.replace(tmp, dvc_file)

    def tracked_md5(self, target: str = "data") -> str:
        """The md5 recorded in ``<target>.dvc`` (what git versions)."""
        dvc_file = self.repo_dir / f"{target}.dvc"
        if not dvc_file.is_file():
            raise DvcError(f"{dvc_file} does not exist: run `dvc add {target}` first")
        outs = yaml.safe_load(dvc_file.read_text()).get("outs") or []
        if not outs:
            raise DvcError(f"{dvc_file} lists no outputs")
        return str(outs[0]["md5"])
