"""nyx.utils.build_cache: a folder built once, reused while its stamp holds, rebuilt otherwise."""

from __future__ import annotations

import json

from nyx.utils.build_cache import STAMP_FILENAME, ensure_built, is_current


def _builder(calls: list):
    def build(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"w" * 10)

    return build


def test_a_current_folder_is_reused_and_a_stale_one_rebuilt(tmp_path):
    calls: list = []
    target = tmp_path / "model"
    assert ensure_built(target, {"v": "1"}, _builder(calls), "a model") == target
    assert is_current(target, {"v": "1"}) and (target / "weights.bin").is_file()
    ensure_built(target, {"v": "1"}, _builder(calls), "a model")
    assert len(calls) == 1  # reused
    ensure_built(target, {"v": "2"}, _builder(calls), "a model")
    assert len(calls) == 2 and json.loads((target / STAMP_FILENAME).read_text()) == {"v": "2"}


def test_what_a_killed_builder_left_is_removed_by_the_next(tmp_path):
    """A builder killed mid-way (SIGKILL: no cleanup ran) leaves atomic_dir's temporary sibling; the next builder
    removes it under the lock and builds the folder."""
    left = tmp_path / ".model.abc123.tmp"
    left.mkdir()
    (left / "weights.bin").write_bytes(b"half")
    calls: list = []
    target = ensure_built(tmp_path / "model", {"v": "1"}, _builder(calls), "a model")
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]
    assert (target / "weights.bin").read_bytes() == b"w" * 10


def test_a_failed_build_leaves_no_folder_and_no_stamp(tmp_path):
    def broken(folder):
        (folder / "part").write_text("x")
        raise RuntimeError("out of disk")

    target = tmp_path / "model"
    try:
        ensure_built(target, {"v": "1"}, broken, "a model")
    except RuntimeError:
        pass
    assert not target.exists() and not is_current(target, {"v": "1"})
    assert [p.name for p in tmp_path.iterdir()] == [".model.lock"]
