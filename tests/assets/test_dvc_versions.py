"""DVC data versions a user can trust (issue 15, item 2), in a temporary git repository with a local DVC remote:

- everything written for training is inside a snapshot taken after it is written: ``data_snapshot`` after the data
  assets, ``feedback_snapshot`` after the feedback triples (what Stage 2 trains on);
- what is written into ``data/`` after the snapshots (reader caches, rejects of the index assets, of feedback) is
  ``.dvcignore``d, so ``dvc status data.dvc`` is clean after a whole run;
- two committed versions of ``data.dvc``: ``git checkout REV -- data.dvc && dvc checkout data.dvc`` restores the first
  one without ``--force``, and the assets' data versions (Dagster data version = DVC md5) go back with it;
- snapshot -> change -> restore through ``data_snapshot`` (the data folder reached through a symlink), and the first
  version pulled back from the remote alone.

The writers after the snapshots are played with the library functions the assets call, at the locations
:class:`nyx.paths.DataPaths` defines; ``tests/e2e/test_end_to_end.py`` checks the same on the real graph.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from nyx.paths import DataPaths
from nyx.versioning.dvc import Dvc
from orchestration.resources import DvcResource, NyxSettings

pytestmark = pytest.mark.slow


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _dvc_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The ``dvc`` command exactly as a user types it (not through the library)."""
    return subprocess.run(Dvc(repo)._exe() + list(args), cwd=repo, capture_output=True, text=True)


def _status_clean(repo: Path) -> tuple[bool, str]:
    proc = _dvc_cli(repo, "status", "data.dvc")
    assert proc.returncode == 0, proc.stderr
    return "up to date" in proc.stdout, proc.stdout


@pytest.fixture
def env(tmp_path: Path, monkeypatch):
    """A git repository with the bundled sample's raw shards under data/raw, and the pipeline's resources."""
    from nyx.data.sample import generate_sample

    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    paths = DataPaths.at(repo / "data")
    generate_sample(paths.raw, n_docs=12, seed=1, n_shards=1)
    resources = {
        "settings": NyxSettings(data_dir=str(paths.root), profile="sample"),
        "dvc": DvcResource(repo_dir=str(repo), remote_url=str(tmp_path / "remote")),
    }
    return {"repo": repo, "paths": paths, "resources": resources, "instance": dg.DagsterInstance.ephemeral()}


def _materialize(env, *names: str) -> dict[str, str]:
    """Materialise the named assets in one run; their Dagster data versions."""
    from assets.raw import raw_documents
    from assets.versioning import data_snapshot, feedback_snapshot

    by_name = {a.key.to_user_string(): a for a in (raw_documents, data_snapshot, feedback_snapshot)}
    result = dg.materialize([by_name[n] for n in names], instance=env["instance"], resources=env["resources"])
    assert result.success
    versions = {}
    for n in names:
        mat = result.asset_materializations_for_node(n)[0]
        versions[n] = mat.tags["dagster/data_version"]
    return versions


def _latest_data_version(env, name: str) -> str:
    """What the Dagster instance (the UI) holds as the asset's current data version."""
    event = env["instance"].get_latest_materialization_event(dg.AssetKey(name))
    return event.asset_materialization.tags["dagster/data_version"]


def _cache_put(folder: Path, key: str, response: str) -> None:
    from nyx.synth.generators.cache import ResponseCache

    cache = ResponseCache(folder)
    cache.put(key, response)
    cache.close()


def _write_data_assets(paths: DataPaths, tag: str) -> None:
    """What the data assets after ``raw_documents`` write before ``data_snapshot``: NyxQA, hard negatives, the
    generator's (paid-for, versioned) response cache, rejects."""
    from nyx.data.rejects import RejectLog

    (paths.nyxqa / "train").mkdir(parents=True, exist_ok=True)
    (paths.nyxqa / "train" / "queries.jsonl").write_text(json.dumps({"id": "q1", "text": f"question {tag}"}) + "\n")
    paths.hard_negatives.mkdir(parents=True, exist_ok=True)
    (paths.hard_negatives / "train.jsonl").write_text(json.dumps({"query": "q1", "negatives": [f"d-{tag}"]}) + "\n")
    _cache_put(paths.generator_cache, f"qa-{tag}", f"generated {tag}")
    rejects = RejectLog(stage="nyxqa")
    rejects.add(f"filtered {tag}", record_id=f"q-{tag}")
    rejects.write(paths.rejects / "nyxqa.jsonl")


def _write_feedback(paths: DataPaths, tag: str) -> None:
    """What ``feedback_preferences`` writes: the triples (Stage 2's training data), its reader cache, its rejects."""
    from nyx.data.rejects import RejectLog
    from nyx.feedback.triples import FeedbackTriple, write_triples

    triple = FeedbackTriple(
        query_id="q1",
        positive_id=f"d-pos-{tag}",
        negative_ids=[f"d-neg-{tag}"],
        positive_rank=1,
        n_correct_windows=1,
        stage1_rank_of_gold=1,
    )
    write_triples([triple], paths.feedback / "triples.jsonl")
    (paths.feedback / "train_triples.jsonl").write_text(json.dumps({"query": "q1", "positive": tag}) + "\n")
    _cache_put(paths.feedback_cache, f"window-{tag}", "answer")
    _cache_put(paths.reader_cache, f"reader-{tag}", "raw response")
    rejects = RejectLog(stage="feedback_preferences")
    rejects.add(f"no correct window {tag}", record_id=f"q-{tag}")
    rejects.write(paths.rejects / "feedback_preferences.jsonl")


def _write_after_snapshots(paths: DataPaths, tag: str) -> None:
    """What Stage 2's embeddings and index, and the evaluation, write into data/ after ``feedback_snapshot``."""
    from nyx.data.rejects import RejectLog

    for name in ("stage2_embeddings/shard-00000.jsonl", "stage2_index.jsonl"):
        rejects = RejectLog(stage=name.split("/")[0].removesuffix(".jsonl"))
        rejects.add(f"cannot encode {tag}", record_id=f"d-{tag}")
        rejects.write(paths.rejects / name)
    _cache_put(paths.rag_cache, f"rag-{tag}", "answer")
    _cache_put(paths.reader_cache, f"reader-late-{tag}", "raw response")


def _snapshot_contents(repo: Path, md5: str) -> set[str]:
    """The relative paths a ``.dir`` version holds (from the DVC cache)."""
    h = md5.removesuffix(".dir")
    listing = repo / ".dvc" / "cache" / "files" / "md5" / h[:2] / f"{h[2:]}.dir"
    return {entry["relpath"] for entry in json.loads(listing.read_text())}


def test_dvc_status_is_clean_after_the_snapshots_and_everything_written_after_them(env):
    repo, paths = env["repo"], env["paths"]
    _materialize(env, "raw_documents")
    _write_data_assets(paths, "v1")
    first = _materialize(env, "data_snapshot")["data_snapshot"]
    _write_feedback(paths, "v1")  # feedback_preferences, after Stage 1
    second = _materialize(env, "feedback_snapshot")["feedback_snapshot"]
    _write_after_snapshots(paths, "v1")  # Stage 2's index, the evaluation

    clean, out = _status_clean(repo)
    assert clean, f"`dvc status data.dvc` after the whole run: {out}"

    # the Stage-2 training data is in the version data.dvc names (the dvc.data_md5 tag of the Stage-2 run) ...
    dvc = env["resources"]["dvc"].dvc()
    assert dvc.tracked_md5("data") == second != first
    held = _snapshot_contents(repo, second)
    assert {"feedback/triples.jsonl", "feedback/train_triples.jsonl"} <= held
    assert "feedback/triples.jsonl" not in _snapshot_contents(repo, first)
    # ... with the generator's paid-for cache and the data assets' outputs; rejects and reader caches are not
    assert {"cache/generator/responses.sqlite", "nyxqa/train/queries.jsonl", "hard_negatives/train.jsonl"} <= held
    assert any(p.startswith("documents/") for p in held)
    assert not [p for p in held if p.startswith(("rejects/", "cache/feedback/", "cache/rag/", "cache/reader/"))]
    # data.dvc still names the version Stage 1 was tagged with (data_snapshot's), beside the newest
    assert dvc.snapshots("data") == {"data_snapshot": first, "feedback_snapshot": second}
    assert first in (repo / "data.dvc").read_text()
    # the remote holds the newest version
    assert dvc.cloud_status("data") == {}


def test_an_older_data_version_restores_without_force_and_the_data_versions_go_back(env):
    from nyx.data.sample import generate_sample

    repo, paths = env["repo"], env["paths"]

    def whole_run(tag: str) -> dict[str, str]:
        versions = _materialize(env, "raw_documents")
        _write_data_assets(paths, tag)
        versions |= _materialize(env, "data_snapshot")
        _write_feedback(paths, tag)
        versions |= _materialize(env, "feedback_snapshot")
        _write_after_snapshots(paths, tag)
        _git(repo, "add", "data.dvc", ".gitignore", ".dvc", ".dvcignore")
        _git(repo, "commit", "-q", "-m", f"data {tag}")
        return versions

    v1 = whole_run("v1")
    rev1 = _git(repo, "rev-parse", "HEAD")
    triples_v1 = (paths.feedback / "triples.jsonl").read_text()
    generate_sample(paths.raw, n_docs=12, seed=2, n_shards=2)  # new raw data: other shards, one more of them
    v2 = whole_run("v2")
    assert all(v1[k] != v2[k] for k in v1), (v1, v2)
    assert (paths.documents / "shard-00001.jsonl").exists()
    rag_cache = (paths.rag_cache / "responses.sqlite").read_bytes()

    # the recipe in docs/operations.md, as a user types it: no --force
    _git(repo, "checkout", rev1, "--", "data.dvc")
    proc = _dvc_cli(repo, "checkout", "data.dvc")
    assert proc.returncode == 0, f"dvc checkout data.dvc: {proc.stderr or proc.stdout}"
    clean, out = _status_clean(repo)
    assert clean, out

    # the first version's files are back, what only the second had is gone
    assert (paths.feedback / "triples.jsonl").read_text() == triples_v1
    assert "v1" in (paths.feedback / "train_triples.jsonl").read_text()
    assert "v1" in (paths.nyxqa / "train" / "queries.jsonl").read_text()
    assert not (paths.documents / "shard-00001.jsonl").exists()
    assert sorted(p.name for p in paths.raw.glob("*.parquet")) == ["shard-00000.parquet"]
    # what is not versioned was left alone (the reader caches keep the answers paid for)
    assert (paths.rag_cache / "responses.sqlite").read_bytes() == rag_cache
    assert "v2" in (paths.rejects / "feedback_preferences.jsonl").read_text()

    # the assets' data versions go back with it: re-materialised, each is its first-version value again
    before = {k: _latest_data_version(env, k) for k in v1}
    assert before == v2
    again = _materialize(env, "raw_documents", "feedback_snapshot")
    assert again == {"raw_documents": v1["raw_documents"], "feedback_snapshot": v1["feedback_snapshot"]}
    assert {k: _latest_data_version(env, k) for k in again} == again
    # re-snapshotting the restored data changed nothing: data.dvc is the first version's, both md5s included
    dvc = env["resources"]["dvc"].dvc()
    assert dvc.tracked_md5("data") == v1["feedback_snapshot"]
    assert dvc.snapshots("data") == {"data_snapshot": v1["data_snapshot"], "feedback_snapshot": v1["feedback_snapshot"]}
    clean, out = _status_clean(repo)
    assert clean, out

    # and back to the newest version the same way
    _git(repo, "checkout", "HEAD", "--", "data.dvc")
    proc = _dvc_cli(repo, "checkout", "data.dvc")
    assert proc.returncode == 0, proc.stderr
    assert "v2" in (paths.feedback / "train_triples.jsonl").read_text()
    assert (paths.documents / "shard-00001.jsonl").exists()
    assert _status_clean(repo)[0]


def test_ignored_patterns_are_appended_once_and_only_inside_the_repository(tmp_path):
    repo = Dvc(tmp_path)
    (tmp_path / ".dvcignore").write_text("# users' own patterns\n*.tmp")
    assert repo.ensure_ignored(["data/rejects", "data/cache/rag"]) == ["/data/rejects/", "/data/cache/rag/"]
    assert repo.ensure_ignored(["data/rejects", "data/cache/rag"]) == []
    lines = (tmp_path / ".dvcignore").read_text().splitlines()
    assert lines[:2] == ["# users' own patterns", "*.tmp"] and lines[-2:] == ["/data/rejects/", "/data/cache/rag/"]
    for bad in ("../elsewhere", "/abs/path", ""):
        with pytest.raises(ValueError):
            repo.ensure_ignored([bad])


def test_stage2_trains_after_the_feedback_snapshot_in_the_graph_and_the_weekly_job(definitions):
    """The order that makes the feedback triples part of the version Stage 2 is tagged with."""
    defs = definitions
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert "feedback_preferences" in parents("feedback_snapshot")
    assert "feedback_snapshot" in parents("stage2_checkpoint")
    assert graph.get(dg.AssetKey("feedback_snapshot")).group_name == "feedback"  # the flow: feedback, then stage2
    weekly = defs.resolve_job_def("weekly_retrain")
    selected = {k.to_user_string() for k in weekly.asset_layer.executable_asset_keys}
    assert {"data_snapshot", "feedback_preferences", "feedback_snapshot", "stage2_checkpoint"} <= selected


def test_readers_cache_outside_the_data_version_and_the_generator_inside_it(tmp_path, monkeypatch):
    """A reader runs after ``data_snapshot`` (feedback, evaluation): an API reader, also the generator's model used as
    the reader, caches its responses in the unversioned reader cache, never in the generator's versioned one."""
    from assets.lib.profile import generator_config, make_reader

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")  # no request is made
    settings = NyxSettings(data_dir=str(tmp_path / "data"), profile="sample")
    paths = settings.paths
    api = {"model": "m", "base_url": "http://127.0.0.1:9/v1"}
    for reader in ({"kind": "generator"}, {"kind": "openai", "openai": api}):
        profile = settings.load_profile({"generator": {"kind": "openai", "openai": api}, "reader": reader})
        cache = make_reader(profile, paths).generator.cache
        assert cache.folder == paths.reader_cache and paths.reader_cache in paths.unversioned, reader
        assert Path(generator_config(profile, paths).openai.cache_dir) == paths.generator_cache
        assert paths.generator_cache not in paths.unversioned


def test_dvc_snapshot_change_and_restore_round_trip(tmp_path, monkeypatch):
    from assets.versioning import data_snapshot
    from nyx.versioning.dvc import dvc_md5

    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    data = repo / "data"
    (data / "documents").mkdir(parents=True)
    (data / "documents" / "shard-00000.jsonl").write_text('{"id": "a", "content": [{"type": "text", "text": "v1"}]}\n')
    (data / "raw").mkdir()
    (data / "raw" / "manifest.txt").write_text("shard-00000.parquet\n")
    _git(repo, "init", "-q")
    (tmp_path / "link").symlink_to(repo)  # the data folder reached through a symlink is still inside the repo
    resources = {
        "settings": NyxSettings(data_dir=str(tmp_path / "link" / "data")),
        "dvc": DvcResource(repo_dir=str(repo), remote_url=str(tmp_path / "remote")),
    }

    def snapshot(message: str) -> tuple[str, str]:
        result = dg.materialize([data_snapshot], instance=dg.DagsterInstance.ephemeral(), resources=resources)
        mat = result.asset_materializations_for_node("data_snapshot")[0]
        md5 = mat.metadata["dvc_md5"].value
        assert mat.metadata["status_clean"].value is True
        _git(repo, "add", "data.dvc", ".gitignore", ".dvc")
        _git(repo, "commit", "-q", "-m", message)
        return md5, _git(repo, "rev-parse", "HEAD")

    md5_v1, rev_v1 = snapshot("data v1")
    assert md5_v1 == dvc_md5(data) and md5_v1.endswith(".dir")
    assert list((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the remote"

    (data / "documents" / "shard-00000.jsonl").write_text('{"id": "a", "content": [{"type": "text", "text": "v2"}]}\n')
    (data / "documents" / "shard-00001.jsonl").write_text('{"id": "b", "content": [{"type": "text", "text": "new"}]}\n')
    md5_v2, _ = snapshot("data v2")
    assert md5_v2 != md5_v1
    assert dvc_md5(data) == md5_v2 == resources["dvc"].dvc().tracked_md5("data")

    # restore v1: git checkout REV -- data.dvc && dvc checkout data.dvc
    _git(repo, "checkout", rev_v1, "--", "data.dvc")
    dvc = resources["dvc"].dvc()
    dvc.checkout("data")
    assert dvc_md5(data) == md5_v1
    assert "v1" in (data / "documents" / "shard-00000.jsonl").read_text()
    assert not (data / "documents" / "shard-00001.jsonl").exists()
    assert dvc.status("data") == {}

    # and from the remote alone: empty the local cache, pull v1 back
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(data)
    dvc.pull("data")
    assert dvc_md5(data) == md5_v1
