"""Data assets under dg.materialize with temporary stores: the NyxQA chain materialises with passing checks,
and a corrupted input fails the right blocking check and stops everything downstream."""

import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

import assets.nyxqa
import assets.raw
from assets.nyxqa import corpus_chunks, hard_negatives, nyxqa, synthetic_qa
from assets.raw import raw_documents
from orchestration.resources import DvcResource, MlflowResource, NyxSettings

CHECKS = dg.load_asset_checks_from_modules([assets.raw, assets.nyxqa])
DATA_ASSETS = [raw_documents, corpus_chunks, synthetic_qa, nyxqa, hard_negatives, *CHECKS]
FAST = {"overrides": {"miner": {"retriever": "bm25"}, "nyxqa": {"dev_per_group": 3, "test_per_group": 3}}}


def _resources(tmp_path):
    return {"settings": NyxSettings(profile="sample", data_dir=str(tmp_path / "data")),
            "dvc": DvcResource(repo_dir=str(tmp_path)),
            "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                     artifact_root=str(tmp_path / "artifacts"))}


def _instance_with_shards(tmp_path, keys):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", keys)
    return instance


def _run_config(*names):
    return {"ops": {n: {"config": FAST} for n in names}}


@pytest.fixture(scope="module")
def sample_raw(tmp_path_factory):
    from nyx.data.sample import generate_sample

    root = tmp_path_factory.mktemp("sample")
    generate_sample(root / "raw", n_docs=24, seed=5, n_shards=2)
    return root / "raw"


@pytest.mark.slow
def test_nyxqa_chain_materialises_with_passing_checks(tmp_path, sample_raw):
    shutil.copytree(sample_raw, tmp_path / "data" / "raw")
    instance = _instance_with_shards(tmp_path, ["shard-00000", "shard-00001"])
    res = _resources(tmp_path)
    dg.materialize([raw_documents], instance=instance, resources=res)
    for key in ["shard-00000", "shard-00001"]:
        r = dg.materialize(DATA_ASSETS, selection=[corpus_chunks, synthetic_qa], partition_key=key,
                           instance=instance, resources=res,
                           run_config=_run_config("corpus_chunks", "synthetic_qa"))
        assert r.success
    r = dg.materialize(DATA_ASSETS, selection=[nyxqa, hard_negatives], instance=instance, resources=res,
                       run_config=_run_config("nyxqa", "hard_negatives"))
    assert r.success
    checks = {e.check_name: e.passed for e in r.get_asset_check_evaluations()}
    assert checks.get("nyxqa_valid") is True and checks.get("hard_negatives_valid") is True, checks
    data = tmp_path / "data"
    for split in ("train", "dev", "test"):
        assert (data / "nyxqa" / split / "qrels.tsv").exists()
    assert (data / "hard_negatives" / "train.jsonl").read_text().strip()


@pytest.mark.slow
def test_duplicate_document_ids_across_shards_fail_blocking_check_and_stop_downstream(tmp_path, sample_raw):
    raw = tmp_path / "data" / "raw"
    shutil.copytree(sample_raw, raw)
    # a third shard that repeats shard 0's documents (an overlapping crawl): each shard is fine on its own
    table = pq.read_table(raw / "shard-00000.parquet")
    pq.write_table(table, raw / "shard-00002.parquet")
    instance = _instance_with_shards(tmp_path, ["shard-00000", "shard-00001", "shard-00002"])
    result = dg.materialize(DATA_ASSETS, selection=[raw_documents, corpus_chunks], instance=instance, resources=_resources(tmp_path),
                            partition_key="shard-00000", raise_on_error=False,
                            run_config=_run_config("corpus_chunks"))
    assert not result.success
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["raw_documents_valid"].passed is False
    failed = evals["raw_documents_valid"].metadata["failed"].value
    assert any(f["expectation"] == "expect_column_values_to_be_unique" and f["column"] == "id" for f in failed)
    # the blocking check stopped corpus_chunks: nothing materialised, no chunk written
    mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "raw_documents" in mats and "corpus_chunks" not in mats
    assert not (tmp_path / "data" / "chunks").exists()


def _write_chunk_shards(chunks_dir, sizes: dict[str, int]) -> dict[str, list[str]]:
    """Hand-made chunk files (text chunks the cloze generator can question; every fourth with an image)."""
    from PIL import Image

    from nyx.data.records import Part, Record, write_jsonl

    img = chunks_dir.parent / "img.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (30, 90, 200)).save(img)
    ids = {}
    for shard, n in sizes.items():
        chunks = []
        for i in range(n):
            text = f"The harbour of {shard.title()} Town had {1000 + 7 * i} fishing boats in the year {1900 + i}."
            content = [Part.of_text(text)] + ([Part.of_image(str(img))] if i % 4 == 0 else [])
            chunks.append(Record(f"{shard}-doc{i}#c0", content, extra={"doc_id": f"{shard}-doc{i}", "ordinal": 0}))
        write_jsonl(chunks, chunks_dir / f"{shard}.jsonl")
        ids[shard] = [c.id for c in chunks]
    return ids


def test_synthetic_qa_budget_is_a_total_over_shard_partitions(tmp_path):
    """Three shard partitions of different sizes, each materialised in its own run (as eager automation does):
    together they sample exactly ``qa.sample_size`` chunks, not ``sample_size`` each (the old per-shard budget
    would take 30 + 30 + 25 here), and every QA pair's positive is a chunk of the plan."""
    from nyx.data.records import iter_jsonl
    from nyx.synth.qa import plan_sample

    sizes = {"shard-a": 40, "shard-b": 100, "shard-c": 25}
    data = tmp_path / "data"
    ids = _write_chunk_shards(data / "chunks", sizes)
    instance = _instance_with_shards(tmp_path, list(sizes))
    cfg = {"ops": {"synthetic_qa": {"config": {"overrides": {"qa": {"sample_size": 30}}}}}}
    sampled = {}
    for shard in sizes:
        r = dg.materialize(DATA_ASSETS, selection=[synthetic_qa], partition_key=shard, instance=instance,
                           resources=_resources(tmp_path), run_config=cfg)
        meta = r.asset_materializations_for_node("synthetic_qa")[0].metadata
        assert meta["total_chunks"].value == 165 and meta["shards_counted"].value == sorted(sizes)
        sampled[shard] = meta["sampled_chunks"].value
    assert sum(sampled.values()) == 30, sampled
    assert all(0 < sampled[s] < sizes[s] for s in sizes), sampled
    everything = {c.id: c for f in sorted((data / "chunks").glob("*.jsonl")) for c in iter_jsonl(f)}
    plan = plan_sample(everything.values(), 30, seed=0, stratify=True)
    for shard in sizes:
        positives = {q.extra["positive_id"] for q in iter_jsonl(data / "synthetic_qa" / f"{shard}.jsonl")}
        assert positives and positives <= {c for c in ids[shard] if plan.selects(everything[c])}
