"""The whole graph, raw documents to the champion alias, on a tiny sample with temporary Dagster, MLflow and DVC
stores; then what operators rely on: lineage tags, no retraining without change, resume after a kill, serving."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dagster_servers import dagster_server
from tests.graph_runs import graph_env, run_whole_graph
from tests.paths import REPO

pytestmark = pytest.mark.slow

OVERRIDES = {
    "nyxqa": {"dev_per_group": 3, "test_per_group": 4},
    "miner": {"retriever": "bm25"},
    "stage1": {
        "train": {
            "per_device_batch_size": 8,
            "max_steps": 6,
            "save_steps": 3,
            "logging_steps": 1,
            "epochs": 1,
            "max_length": 256,
        }
    },
    "stage2": {
        "train": {
            "per_device_batch_size": 8,
            "max_steps": 6,
            "save_steps": 3,
            "logging_steps": 1,
            "epochs": 1,
            "max_length": 256,
        }
    },
    "feedback": {"top_k": 5},
    # a public benchmark converted by `nyx convert` (HotpotQA's published layout), evaluated beside NyxQA
    "eval": {"baselines": ["bm25", "untrained"], "extra_sets": [{"name": "hotpotqa", "path": "benchmarks/hotpotqa"}]},
}
FIXTURES = REPO / "tests" / "fixtures" / "convert"


def _env(root: Path, overrides=OVERRIDES) -> dict:
    return graph_env(root, "sample", overrides)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every asset once, as `make run` does (same driver), in a temporary git repo."""
    from nyx.data.convert import convert

    root = tmp_path_factory.mktemp("e2e")
    convert("hotpotqa", FIXTURES / "hotpotqa", root / "data" / "benchmarks" / "hotpotqa")
    return run_whole_graph(root, "sample", OVERRIDES, n_docs=24, seed=7)


def _client(root):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_every_asset_materialises_and_every_blocking_check_passes(pipeline):
    mats, checks = set(), {}
    for r in pipeline["results"]:
        assert r.success
        mats |= {e.asset_key.to_user_string() for e in r.get_asset_materialization_events()}
        checks.update({e.check_name: e.passed for e in r.get_asset_check_evaluations()})
    expected = {
        "raw_documents",
        "corpus_chunks",
        "synthetic_qa",
        "nyxqa",
        "hard_negatives",
        "data_snapshot",
        "stage1_checkpoint",
        "feedback_preferences",
        "stage2_checkpoint",
        "eval_report",
        "champion_model",
        "stage1_embeddings",
        "stage1_index",
        "stage2_embeddings",
        "stage2_index",
    }
    assert expected <= mats
    for name in [
        "raw_documents_valid",
        "corpus_chunks_valid",
        "nyxqa_valid",
        "hard_negatives_valid",
        "stage1_loss_decreasing",
        "stage1_model_loads",
        "stage2_model_loads",
        "feedback_preferences_valid",
        "champion_gate",
        "stage1_index_consistent",
        "stage2_index_consistent",
    ]:
        assert checks.get(name) is True, (name, checks)


def test_each_model_encodes_the_corpus_once_and_its_index_is_named_on_its_version(pipeline):
    """Dev evaluation (in both trainings), the per-shard embedding assets, the index assets, feedback and the report
    all need corpus embeddings: the untrained backbone, Stage 1 and Stage 2 each encode every chunk exactly once."""
    from nyx.index.store import EmbeddingStore

    root = pipeline["root"]
    corpus_ids = [json.loads(line)["id"] for line in (root / "data" / "nyxqa" / "dev" / "corpus.jsonl").open()]
    extra_ids = [json.loads(line)["id"] for line in (root / "data" / "benchmarks" / "hotpotqa" / "corpus.jsonl").open()]
    n = len(corpus_ids) + len(extra_ids)  # NyxQA's corpus and the extra evaluation set's
    models = EmbeddingStore(root / "work" / "embeddings").models()
    encoded = {m["key"]: sum(e["count"] for e in m["encodes"]) for m in models}
    assert len(models) == 3, [m["identity"]["model_id"] for m in models]  # untrained, stage1, stage2 (bm25 is sparse)
    # counted where documents are encoded (store or not): three models, each the whole corpus once
    assert sorted(pipeline["documents_encoded"].values()) == [n] * 3, pipeline["documents_encoded"]
    for m in models:
        assert m["duplicates"] == 0, m["encodes"]
        assert m["records"] == n == encoded[m["key"]], (m["identity"]["model_id"], m["encodes"])
    c = _client(root)
    for stage in ("stage1", "stage2"):
        state = json.loads((root / "work" / "checkpoints" / stage / "nyx_state.json").read_text())
        version = c.get_model_version("nyx-retriever", state["model_version"])
        index_dir = Path(version.tags["nyx.index_dir"])
        assert index_dir == (root / "work" / "indexes" / stage).resolve()
        manifest = json.loads((index_dir / "index" / "manifest.json").read_text())
        assert manifest["mlflow_model_version"] == state["model_version"]
        assert sorted(manifest["doc_ids"]) == sorted(corpus_ids)


def test_champion_is_the_stage_better_on_dev_with_lineage_tags_and_test_metrics_only_reported(pipeline):
    root = pipeline["root"]
    c = _client(root)
    champion = c.get_model_version_by_alias("nyx-retriever", "champion")
    record = json.loads((root / "work" / "reports" / "promotion.json").read_text())
    assert record["split"] == "dev" and record["passed"] and record["challenger"] == str(champion.version)
    dev = {stage: info["dev_metrics"]["ndcg@10"] for stage, info in record["stages"].items()}
    assert set(dev) == {"stage1", "stage2"}
    best = max(dev, key=lambda st: (dev[st], st))  # a tie goes to Stage 2
    assert record["challenger_stage"] == best and champion.tags["nyx.stage"] == best
    run = c.get_run(champion.run_id)
    tags = run.data.tags
    assert tags["dagster.asset_key"] == f"{best}_checkpoint"
    assert tags["dagster.run_id"] and tags["nyx.code_version"] == f"{best}-v2"
    dvc_file = (root / "data.dvc").read_text()
    assert tags["dvc.data_md5"] in dvc_file  # the DVC snapshot the training used
    assert c.get_metric_history(run.info.run_id, "loss")
    assert any(k.startswith("dev_ndcg_at_10_dim") for k in run.data.metrics)
    # dev metrics on the version decide; test metrics are recorded beside them for reporting only
    assert float(champion.tags["eval.dev.ndcg_at_10"]) == pytest.approx(dev[best], abs=1e-6)
    assert "eval.test.ndcg_at_10" in champion.tags


def test_report_compares_every_retriever_at_every_dimension(pipeline):
    from nyx.eval.report import load_report

    reports = pipeline["root"] / "work" / "reports" / "eval"
    report = load_report(reports / "report.json")
    names = set(report.retrieval["retriever"])
    assert {"bm25", "untrained", "stage1", "stage2"} <= names
    assert set(report.retrieval[report.retrieval.retriever == "stage1"]["dim"].astype(int)) == {128, 64, 32, 16}
    assert {"oracle", "no_retrieval"} <= set(report.rag["run"])
    assert (reports / "matryoshka.png").stat().st_size > 1000 and (reports / "retrievers.png").exists()
    assert "stage2" in (reports / "report.md").read_text()


def _materialize_stage1_cli(root, overrides, extra=None, select="stage1_checkpoint"):
    env = {**os.environ, **_env(root, overrides)}
    cmd = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "orchestration.definitions",
        "--select",
        select,
    ]
    if extra:
        cmd += ["--config-json", json.dumps(extra)]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def test_finished_training_is_not_retrained_without_change(pipeline):
    root = pipeline["root"]
    state_before = json.loads((root / "work" / "checkpoints" / "stage1" / "nyx_state.json").read_text())
    proc = _materialize_stage1_cli(root, OVERRIDES)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "not retraining" in out
    state_after = json.loads((root / "work" / "checkpoints" / "stage1" / "nyx_state.json").read_text())
    assert state_after["model_version"] == state_before["model_version"]


def test_promotion_again_with_nothing_new_succeeds_and_leaves_the_champion_unchanged(pipeline):
    root = pipeline["root"]
    before = _client(root).get_model_version_by_alias("nyx-retriever", "champion").version
    proc = _materialize_stage1_cli(root, OVERRIDES, select="champion_model")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert f"champion v{before} unchanged" in out
    record = json.loads((root / "work" / "reports" / "promotion.json").read_text())
    assert record["unchanged"] and record["passed"]
    assert _client(root).get_model_version_by_alias("nyx-retriever", "champion").version == before


def test_killed_training_resumes_from_last_checkpoint_in_same_mlflow_run(pipeline):
    root = pipeline["root"]
    longer = json.loads(json.dumps(OVERRIDES))
    longer["stage1"]["train"].update({"max_steps": 40, "save_steps": 2, "epochs": 20})
    out_dir = root / "work" / "checkpoints" / "stage1"
    proc = _materialize_stage1_cli(root, longer)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # wait for the second checkpoint of the new run, then kill everything
            state = (
                json.loads((out_dir / "nyx_state.json").read_text()) if (out_dir / "nyx_state.json").exists() else {}
            )
            cks = sorted((out_dir / "checkpoints").glob("step-*")) if (out_dir / "checkpoints").exists() else []
            if state.get("status") == "running" and len(cks) >= 2:
                break
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint appeared")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_run = json.loads((out_dir / "nyx_state.json").read_text())["mlflow_run_id"]
    assert json.loads((out_dir / "nyx_state.json").read_text())["status"] == "running"

    proc = _materialize_stage1_cli(root, longer)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    state = json.loads((out_dir / "nyx_state.json").read_text())
    assert state["status"] == "finished" and state["mlflow_run_id"] == killed_run
    assert state["summary"]["resumed_from_step"] >= 2 and state["summary"]["global_step"] == 40
    c = _client(root)
    assert "nyx.resumed_by_dagster_run" in c.get_run(killed_run).data.tags
    history = [m.step for m in c.get_metric_history(killed_run, "loss")]
    steps = set(history)
    assert min(steps) <= 2 and max(steps) == 40
    assert len(history) == len(steps), "a step logged before the kill was logged again after the resume"
    tags = c.get_run(killed_run).data.tags
    if "nyx.replayed_steps" in tags:  # steps between the last checkpoint and the kill were trained again
        assert float(tags["nyx.replayed_max_abs_loss_diff"]) == 0.0  # same CPU, restored RNG: the same values


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_serves_champion_embeddings_over_rest(pipeline):
    import httpx

    _require_browser()
    root = pipeline["root"]
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow execs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            "models:/nyx-retriever@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(0.5)
        payload = {
            "dataframe_records": [
                {"id": "q1", "kind": "query", "content": [{"type": "text", "text": "What colour is the barn?"}]},
                {"id": "d1", "kind": "document", "content": [{"type": "text", "text": "The barn is painted red."}]},
            ]
        }
        r = httpx.post(f"{url}/invocations", json=payload, timeout=120)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["id"] for p in preds] == ["q1", "d1"]
        assert all(len(p["embedding"]) == 128 for p in preds)
        norms = [sum(x * x for x in p["embedding"]) ** 0.5 for p in preds]
        assert all(abs(n - 1) < 1e-3 for n in norms)
        # a Matryoshka prefix through the same endpoint: the logged signature lets the `dim` param through
        r = httpx.post(f"{url}/invocations", json={**payload, "params": {"dim": 32}}, timeout=120)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert all(len(p["embedding"]) == 32 for p in preds)
        assert all(abs(sum(x * x for x in p["embedding"]) ** 0.5 - 1) < 1e-3 for p in preds)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_dvc_status_is_clean_after_the_whole_run_and_stage2_data_is_in_the_version(pipeline):
    """Issue 15: every file written for training is in the last snapshot (``feedback_snapshot`` after the feedback
    triples); what is written into data/ after it (reader caches, rejects) is ``.dvcignore``d. So `dvc status` is
    clean right after the run, and the version Stage 2's MLflow run is tagged with holds the triples it trained on."""
    from nyx.versioning.dvc import Dvc

    root = pipeline["root"]
    proc = subprocess.run(
        Dvc(root)._exe() + ["status", "data.dvc"],
        cwd=root,
        env={**os.environ, **_env(root)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout, f"`dvc status data.dvc` after the whole run:\n{proc.stdout}"
    md5 = Dvc(root).tracked_md5("data")
    state = json.loads((root / "work" / "checkpoints" / "stage2" / "nyx_state.json").read_text())
    assert _client(root).get_run(state["mlflow_run_id"]).data.tags["dvc.data_md5"] == md5
    h = md5.removesuffix(".dir")
    listing = json.loads((root / ".dvc" / "cache" / "files" / "md5" / h[:2] / f"{h[2:]}.dir").read_text())
    assert "feedback/train_triples.jsonl" in {e["relpath"] for e in listing}


def test_the_pipelines_champion_is_served_as_a_search_api_over_its_corpus_index(pipeline):
    """`nyx serve models:/nyx-retriever@champion`: the champion's version names its corpus index (set by its
    stage's index asset); /search answers a text query and a text+image query from it, with documents."""
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from nyx.serving.server import create_app

    root = pipeline["root"]
    champion = _client(root).get_model_version_by_alias("nyx-retriever", "champion")
    queries = [json.loads(line) for line in (root / "data" / "nyxqa" / "test" / "queries.jsonl").open()]
    question = next(q for q in queries if any(p.get("type") == "text" for p in q["content"]))
    text = next(p["text"] for p in question["content"] if p.get("type") == "text")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 140, 60)).save(buf, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    app = create_app("models:/nyx-retriever@champion", tracking_uri=f"sqlite:///{root}/mlflow.db", api_key=None)
    corpus_ids = {json.loads(line)["id"] for line in (root / "data" / "nyxqa" / "test" / "corpus.jsonl").open()}
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert str(health["model_version"]) == str(champion.version), health
        for content in (
            [{"type": "text", "text": text}],
            [{"type": "text", "text": text}, {"type": "image", "image": image}],
        ):
            r = client.post("/search", json={"content": content, "k": 3, "return_documents": True})
            assert r.status_code == 200, r.text
            hits = r.json()["hits"]
            assert len(hits) == 3 and {h["id"] for h in hits} <= corpus_ids
            assert all(h["document"]["id"] == h["id"] for h in hits)


def test_every_materialisation_has_json_metadata_and_plots_that_render(pipeline):
    """Every materialisation of the whole run (and of the CLI runs above) has metadata the Dagster UI can parse (no NaN
    or infinity anywhere, tables included); eval_report's plots and report, and every training materialisation's loss
    curve, are PNGs inlined in Markdown; training records the launcher it really ran with."""
    import dagster as dg

    from nyx.settings import load_profile
    from tests.assets.test_metadata_json import MAX_INLINE, assert_json_metadata, inline_pngs, md_text

    instance = pipeline["instance"]
    seen: dict[str, list] = {}
    for key in instance.get_asset_keys():
        for rec in instance.fetch_materializations(key, limit=1000).records:
            mat = rec.asset_materialization
            assert_json_metadata(f"{key.to_user_string()} (run {rec.run_id[:8]})", mat.metadata)
            seen.setdefault(key.to_user_string(), []).append(mat.metadata)
    assert {
        "raw_documents",
        "corpus_chunks",
        "nyxqa",
        "stage1_checkpoint",
        "stage2_checkpoint",
        "eval_report",
        "champion_model",
    } <= set(seen)

    report = instance.get_latest_materialization_event(dg.AssetKey("eval_report")).asset_materialization.metadata
    for key in ("matryoshka_plot", "comparison_plot"):
        assert "data:image/png;base64," in md_text(report[key]), key
        [(data, _)] = inline_pngs(md_text(report[key]))
        assert len(data) < MAX_INLINE, (key, len(data))
    assert len(inline_pngs(md_text(report["report"]))) == 2
    rows = {r.data["retriever"]: r.data for r in report["retrievers"].records}
    assert rows["bm25"]["dim"] is None and rows["stage1"]["dim"] == 128

    kind = load_profile("sample").launch.kind
    for asset in ("stage1_checkpoint", "stage2_checkpoint"):
        for meta in seen[asset]:  # trained, not retrained (the skip above) and resumed
            assert inline_pngs(md_text(meta["loss_curve"])), asset
            assert meta["launcher"].value == kind, (asset, meta["launcher"])
            zero, backend = meta["zero_stage"].value, meta["distributed_type"].value
            assert zero.startswith("ZeRO-") if backend == "DEEPSPEED" else zero == "none", (asset, zero, backend)


def test_eval_report_evaluates_a_converted_public_benchmark_beside_nyxqa(pipeline):
    """The profile's extra set (HotpotQA converted by `nyx convert`) is evaluated with every retriever NyxQA gets,
    trained stages included, reported in the asset's metadata and logged to MLflow under the set's name."""
    mats = [
        e
        for r in pipeline["results"]
        for e in r.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "eval_report"
    ]
    extra = mats[-1].event_specific_data.materialization.metadata["extra_sets"].value
    assert set(extra) == {"hotpotqa"}
    assert {"bm25", "untrained", "stage1", "stage2"} <= set(extra["hotpotqa"])
    assert extra["hotpotqa"]["bm25"]["recall@10"] > 0  # BM25 finds the gold paragraphs of its questions
    assert (pipeline["root"] / "work" / "reports" / "eval" / "sets" / "hotpotqa" / "report.md").is_file()
    c = _client(pipeline["root"])
    run = c.search_runs(
        [c.get_experiment_by_name("nyx").experiment_id], filter_string="tags.`dagster.asset_key` = 'eval_report'"
    )[0]
    assert "hotpotqa.stage1.ndcg_at_10" in run.data.metrics


def test_evaluation_run_is_tagged_with_its_data_version_and_profile(pipeline):
    root = pipeline["root"]
    c = _client(root)
    exp = c.get_experiment_by_name("nyx")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.`dagster.asset_key` = 'eval_report'")
    assert runs
    for run in runs:
        tags = run.data.tags
        assert tags["nyx.profile"] == "sample"
        assert tags["dvc.data_md5"] != "unversioned" and tags["dvc.data_md5"] in (root / "data.dvc").read_text()
        artifacts = {a.path for a in c.list_artifacts(run.info.run_id, "report")}
        assert {"report/matryoshka.png", "report/retrievers.png", "report/report.md"} <= artifacts


def test_runs_are_named_jobs_and_training_and_evaluation_runs_link_to_mlflow_both_ways(pipeline):
    """`make run`'s runs are runs of named jobs (the UI's timeline and job pages list them); each training and
    evaluation Dagster run carries its MLflow run, and that MLflow run points back at the Dagster run."""
    instance = pipeline["instance"]
    runs = [instance.get_run_by_id(r.run_id) for r in pipeline["results"]]  # the driver's (later tests add their own)
    assert runs and {r.job_name for r in runs} == {"full_graph", "full_graph_by_shard"}
    assert all(r.tags.get("nyx/launched_by") == "make run" for r in runs)
    c = _client(pipeline["root"])
    exp = c.get_experiment_by_name("nyx")
    linked = 0
    for asset in ("stage1_checkpoint", "stage2_checkpoint", "eval_report"):
        mlflow_runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`dagster.asset_key` = '{asset}'")
        assert mlflow_runs, asset
        for m in mlflow_runs:
            # dagster.run_id: the run that started it; dagster.run_url: the latest run that worked on it (a killed
            # training resumed by a later run keeps its MLflow run)
            assert instance.get_run_by_id(m.data.tags["dagster.run_id"]) is not None
            latest = m.data.tags["dagster.run_url"].rsplit("/runs/", 1)[1]
            d = instance.get_run_by_id(latest)
            assert d is not None and d.tags[f"mlflow/{asset}"] == m.info.run_id, (asset, d and d.tags)
            assert d.tags[f"mlflow/{asset}_url"].endswith(f"/runs/{m.info.run_id}")
            linked += 1
    assert linked >= 3


# -- the Dagster UI in a real browser (last in this module: the backfill re-materialises corpus_chunks) -----------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BACKFILLS = """query { partitionBackfillsOrError { ... on PartitionBackfills {
  results { id status numPartitions partitionNames runs(limit: 10) { runId status } } } } }"""
ASSET_KEYS = "query { assetNodes { assetKey { path } } }"


def _require_browser() -> None:
    """Skip, naming what is missing, where the system has no Chromium and driver (Debian: chromium,
    chromium-driver; .ci/run installs them) or selenium is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(
            f"no browser: {', '.join(missing)} not installed (apt-get install chromium chromium-driver; "
            ".ci/run installs them)"
        )
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed")


def _browser():
    """Headless Chromium from the system, driven through WebDriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def dagster_ui(pipeline, tmp_path):
    """``dagster dev`` (webserver + daemon, which runs backfills) over the pipeline's instance and stores."""
    _require_browser()
    root = pipeline["root"]
    env = {
        **os.environ,
        **_env(root),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
    }

    def code_location_loaded(client) -> bool:
        r = client.post("/graphql", json={"query": ASSET_KEYS})
        return r.status_code == 200 and bool((r.json().get("data") or {}).get("assetNodes"))

    with dagster_server(["dagster", "dev"], env, tmp_path / "dagster-dev.log", ready=code_location_loaded) as server:
        yield server


@pytest.mark.timeout(600)
def test_dagster_ui_in_a_browser_lineage_rendered_plot_and_a_backfill_launched_from_it(pipeline, dagster_ui):
    """What an operator does after `make run`, in a real browser: the lineage page lists every asset (groups
    expanded from its sidebar), `eval_report`'s Matryoshka plot opens as an image that renders, and a backfill of
    every `corpus_chunks` partition launched from the asset's partitions page succeeds."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, client = dagster_ui
    keys = {
        "/".join(n["assetKey"]["path"])
        for n in client.post("/graphql", json={"query": ASSET_KEYS}).json()["data"]["assetNodes"]
    }
    browser = _browser()
    wait = WebDriverWait(browser, 60)

    def button(text: str):
        return wait.until(ec.element_to_be_clickable((By.XPATH, f"//button[normalize-space()='{text}']")))

    try:
        browser.get(base + "/")
        browser.execute_script("window.localStorage.setItem('communityNux', '1')")  # no newsletter dialog

        # 1. lineage: expand every group in the sidebar (its caret); every asset of the code location is listed
        browser.get(base + "/asset-groups")
        groups = ["data", "versioning", "stage1", "feedback", "stage2", "evaluation", "registry"]
        for group in groups:
            caret = wait.until(
                ec.element_to_be_clickable(
                    (
                        By.XPATH,
                        (
                            f"(//div[@title='{group}'])[1]/ancestor::*[.//*[@aria-label='arrow_drop_down']][1]"
                            "//*[@aria-label='arrow_drop_down']"
                        ),
                    )
                )
            )
            caret.click()
        try:
            wait.until(lambda b: all(k in b.find_element(By.TAG_NAME, "body").text for k in keys))
        except TimeoutException:
            pass  # the assertion below names what is missing
        listed = {k for k in keys if k in browser.find_element(By.TAG_NAME, "body").text}
        assert listed == keys, sorted(keys - listed)

        # 2. eval_report: the Matryoshka plot opens as an inlined PNG that the browser decoded
        browser.get(base + "/assets/eval_report")
        link = wait.until(
            ec.element_to_be_clickable(
                (
                    By.XPATH,
                    "//tr[.//*[normalize-space(text())='matryoshka_plot']]//a[normalize-space(text())='[Show Markdown]']",  # noqa: E501
                )
            )
        )
        browser.execute_script("arguments[0].scrollIntoView()", link)
        link.click()
        image = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "img[src^='data:image/png;base64,']")))
        wait.until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        assert browser.execute_script("return arguments[0].naturalWidth", image) > 100  # decoded, not a broken icon

        # 3. a backfill of every corpus_chunks partition, launched from the UI, succeeds
        def backfills() -> list[dict]:
            return client.post("/graphql", json={"query": BACKFILLS}).json()["data"]["partitionBackfillsOrError"][
                "results"
            ]

        before = {b["id"] for b in backfills()}
        browser.get(base + "/assets/corpus_chunks?view=partitions")
        button("Materialize…").click()
        button("All").click()
        wait.until(
            ec.text_to_be_present_in_element(
                (
                    By.XPATH,
                    "//*[contains(text(), 'Launch runs to')]/ancestor::*[contains(., 'Partition selection')][1]",
                ),
                "2 partitions",
            )
        )
        button("Launch backfill").click()
        deadline = time.monotonic() + 300
        while True:
            new = [b for b in backfills() if b["id"] not in before]
            if new and new[0]["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                break
            assert time.monotonic() < deadline, f"the backfill launched from the UI did not finish in 300 s: {new}"
            time.sleep(2)
    finally:
        browser.quit()
    assert len(new) == 1, new
    backfill = new[0]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert sorted(backfill["partitionNames"]) == ["shard-00000", "shard-00001"]
    assert backfill["runs"] and all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill["runs"]
