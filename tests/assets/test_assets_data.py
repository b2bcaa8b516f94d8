"""Data assets under dg.materialize with temporary stores: the NyxQA chain materialises with passing checks,
and a corrupted input fails the right blocking check and stops everything downstream."""

import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

import assets.corpus_chunks
import assets.hard_negatives
import assets.nyxqa
import assets.raw
import assets.synthetic_qa
from assets.corpus_chunks import corpus_chunks
from assets.hard_negatives import hard_negatives
from assets.nyxqa import nyxqa
from assets.raw import raw_documents
from assets.synthetic_qa import synthetic_qa

CHECKS = dg.load_asset_checks_from_modules(
    [assets.raw, assets.corpus_chunks, assets.synthetic_qa, assets.nyxqa, assets.hard_negatives]
)
DATA_ASSETS = [raw_documents, corpus_chunks, synthetic_qa, nyxqa, hard_negatives, *CHECKS]
FAST = {"overrides": {"miner": {"retriever": "bm25"}, "nyxqa": {"dev_per_group": 3, "test_per_group": 3}}}


def _instance_with_shards(tmp_path, keys):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", keys)
    return instance


def _run_config(*names):
    return {"ops": {n: {"config": FAST} for n in names}}


@pytest.mark.slow
def test_nyxqa_chain_materialises_with_passing_checks(tmp_path, sample_raw_24, tmp_resources):
    shutil.copytree(sample_raw_24, tmp_path / "data" / "raw")
    instance = _instance_with_shards(tmp_path, ["shard-00000", "shard-00001"])
    res = tmp_resources
    dg.materialize([raw_documents], instance=instance, resources=res)
    for key in ["shard-00000", "shard-00001"]:
        r = dg.materialize(
            DATA_ASSETS,
            selection=[corpus_chunks, synthetic_qa],
            partition_key=key,
            instance=instance,
            resources=res,
            run_config=_run_config("corpus_chunks", "synthetic_qa"),
        )
        assert r.success
    r = dg.materialize(
        DATA_ASSETS,
        selection=[nyxqa, hard_negatives],
        instance=instance,
        resources=res,
        run_config=_run_config("nyxqa", "hard_negatives"),
    )
    assert r.success
    checks = {e.check_name: e.passed for e in r.get_asset_check_evaluations()}
    assert checks.get("nyxqa_valid") is True and checks.get("hard_negatives_valid") is True, checks
    data = tmp_path / "data"
    for split in ("train", "dev", "test"):
        assert (data / "nyxqa" / split / "qrels.tsv").exists()
    assert (data / "hard_negatives" / "train.jsonl").read_text().strip()


@pytest.mark.slow
def test_duplicate_document_ids_across_shards_fail_blocking_check_and_stop_downstream(
    tmp_path, sample_raw_24, tmp_resources
):
    raw = tmp_path / "data" / "raw"
    shutil.copytree(sample_raw_24, raw)
    # a third shard that repeats shard 0's documents (an overlapping crawl): each shard is fine on its own
    table = pq.read_table(raw / "shard-00000.parquet")
    pq.write_table(table, raw / "shard-00002.parquet")
    instance = _instance_with_shards(tmp_path, ["shard-00000", "shard-00001", "shard-00002"])
    result = dg.materialize(
        DATA_ASSETS,
        selection=[raw_documents, corpus_chunks],
        instance=instance,
        resources=tmp_resources,
        partition_key="shard-00000",
        raise_on_error=False,
        run_config=_run_config("corpus_chunks"),
    )
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


def test_synthetic_qa_budget_is_a_total_over_shard_partitions(tmp_path, tmp_resources):
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
        r = dg.materialize(
            DATA_ASSETS,
            selection=[synthetic_qa],
            partition_key=shard,
            instance=instance,
            resources=tmp_resources,
            run_config=cfg,
        )
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


# ----------------------------------------------------------------------------------------------------------
# A bad shard in data/raw: rejected by name, the good shards ingested, only its own partition fails downstream
# ----------------------------------------------------------------------------------------------------------

THREE_SHARDS = ["shard-00000", "shard-00001", "shard-00002"]


def _raw_with_truncated_shard(tmp_path, sample_raw3, bad="shard-00001"):
    """The three-shard sample in ``tmp_path/data/raw`` with ``bad``'s Parquet file cut to its first half (a partial
    download or copy); returns the ids of every shard as read from the intact copy."""
    from nyx.data.obelics import iter_obelics
    from nyx.data.rejects import RejectLog

    raw = tmp_path / "data" / "raw"
    shutil.copytree(sample_raw3, raw)
    ids = {k: [r.id for r in iter_obelics(sample_raw3 / f"{k}.parquet", RejectLog())] for k in THREE_SHARDS}
    data = (raw / f"{bad}.parquet").read_bytes()
    (raw / f"{bad}.parquet").write_bytes(data[: len(data) // 2])
    return ids


def _failure_messages(result) -> str:
    return "\n".join(
        str(e.step_failure_data.error.message) + str(e.step_failure_data.user_failure_data or "")
        for e in result.get_step_failure_events()
    )


def test_truncated_parquet_shard_is_rejected_by_name_and_the_good_shards_ingested(tmp_path, sample_raw3, tmp_resources):
    import json

    from nyx.data.records import iter_jsonl

    ids = _raw_with_truncated_shard(tmp_path, sample_raw3)
    instance = _instance_with_shards(tmp_path, THREE_SHARDS)
    result = dg.materialize(
        DATA_ASSETS, selection=[raw_documents], instance=instance, resources=tmp_resources, raise_on_error=False
    )
    assert result.success, _failure_messages(result)
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {"raw_documents_valid": True}
    data = tmp_path / "data"
    for good in ("shard-00000", "shard-00002"):  # every document of every good shard, including the one after
        assert [r.id for r in iter_jsonl(data / "documents" / f"{good}.jsonl")] == ids[good] != []
    assert not (data / "documents" / "shard-00001.jsonl").exists()
    meta = result.asset_materializations_for_node("raw_documents")[0].metadata
    assert meta["rejected_shard_count"].value == 1 and meta["shards"].value == 3
    (rejected,) = meta["rejected_shards"].value
    assert rejected["shard"] == "shard-00001" and rejected["file"] == "shard-00001.parquet"
    assert "Parquet magic bytes not found in footer" in rejected["error"]  # the reader's own message
    assert meta["documents"].value == len(ids["shard-00000"]) + len(ids["shard-00002"])
    items = [json.loads(x) for x in (data / "rejects" / "raw_documents" / "shard-00001.jsonl").read_text().splitlines()]
    assert [i["location"] for i in items] == ["shard-00001.parquet"]
    assert "Parquet magic bytes not found in footer" in items[0]["reason"]
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("shard-00001.parquet" in m and "rejected" in m and "magic bytes" in m for m in logs)


@pytest.mark.slow
def test_rejected_shard_fails_only_its_own_downstream_partition(tmp_path, sample_raw3, tmp_resources):
    _raw_with_truncated_shard(tmp_path, sample_raw3)
    instance = _instance_with_shards(tmp_path, THREE_SHARDS)
    res = tmp_resources
    assert dg.materialize([raw_documents], instance=instance, resources=res).success
    bad = dg.materialize(
        DATA_ASSETS,
        selection=[corpus_chunks],
        partition_key="shard-00001",
        instance=instance,
        resources=res,
        run_config=_run_config("corpus_chunks"),
        raise_on_error=False,
    )
    assert not bad.success
    message = _failure_messages(bad)
    assert "shard 'shard-00001' was rejected at ingestion: shard-00001.parquet: " in message, message
    assert "Parquet magic bytes not found in footer" in message
    assert not (tmp_path / "data" / "chunks" / "shard-00001.jsonl").exists()
    good = dg.materialize(
        DATA_ASSETS,
        selection=[corpus_chunks],
        partition_key="shard-00002",
        instance=instance,
        resources=res,
        run_config=_run_config("corpus_chunks"),
    )
    assert good.success and (tmp_path / "data" / "chunks" / "shard-00002.jsonl").read_text().strip()


def test_truncated_jsonl_shard_keeps_its_complete_lines_and_rejects_the_cut_record(
    tmp_path, sample_raw3, tmp_resources
):
    """A JSONL shard whose last line is cut mid-record is not rejected as a whole: its complete lines are documents,
    the cut line one rejected record (``<file>:<line>``, malformed JSON, "truncated") like any bad record."""
    import json

    from nyx.data.records import iter_jsonl

    raw = tmp_path / "data" / "raw"
    shutil.copytree(sample_raw3, raw)
    rows = pq.read_table(raw / "shard-00002.parquet").to_pylist()
    (raw / "shard-00002.parquet").unlink()
    text = "\n".join(json.dumps(r) for r in rows)
    (raw / "shard-00002.jsonl").write_text(text[: len(text) - len(json.dumps(rows[-1])) // 2])
    instance = _instance_with_shards(tmp_path, THREE_SHARDS)
    result = dg.materialize([raw_documents], instance=instance, resources=tmp_resources)
    meta = result.asset_materializations_for_node("raw_documents")[0].metadata
    assert meta["rejected_shard_count"].value == 0 and meta["rejected_shards"].value == []
    kept = [r.id for r in iter_jsonl(tmp_path / "data" / "documents" / "shard-00002.jsonl")]
    assert kept == [r["id"] for r in rows[:-1]]
    (item,) = [
        json.loads(x)
        for x in (tmp_path / "data" / "rejects" / "raw_documents" / "shard-00002.jsonl").read_text().splitlines()
    ]
    assert item["location"] == f"shard-00002.jsonl:{len(rows) - 1}"
    assert item["reason"].startswith("malformed JSON") and "truncated" in item["reason"]
