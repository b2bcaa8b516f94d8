"""Several shards in one run (a backfill under ``BackfillPolicy.single_run``), under ``dg.materialize`` with
temporary stores: each partition's materialisation carries its own shard's counts; a bad shard fails only its own
partition (the good ones show as materialised); a shard that was good once and is rejected later has its stale
derived files withdrawn, so ``synthetic_qa`` and ``nyxqa`` no longer see its records."""

import json
import shutil
from collections import Counter

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

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
from orchestration.partitions import SHARDS
from orchestration.resources import NyxSettings

CHECKS = dg.load_asset_checks_from_modules(
    [assets.raw, assets.corpus_chunks, assets.synthetic_qa, assets.nyxqa, assets.hard_negatives]
)
DATA_ASSETS = [raw_documents, corpus_chunks, synthetic_qa, nyxqa, hard_negatives, *CHECKS]
FAST = {"overrides": {"miner": {"retriever": "bm25"}, "nyxqa": {"dev_per_group": 3, "test_per_group": 3}}}


def _run_config(*names):
    return {"ops": {n: {"config": FAST} for n in names}}


def _instance(keys):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SHARDS.name, keys)
    return instance


def _backfill(instance, resources, selection, first, last, **kw):
    """One run over the shard range ``first..last``: what a backfill launched from the UI does under
    ``BackfillPolicy.single_run``."""
    return dg.materialize(
        DATA_ASSETS,
        selection=selection,
        instance=instance,
        resources=resources,
        run_config=_run_config(*(a.key.path[-1] for a in selection)),
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        raise_on_error=False,
        **kw,
    )


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _latest_meta(instance, asset, shard) -> dict:
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[shard]), limit=1
    ).records
    assert recs, f"{asset.key.to_user_string()}[{shard}] was never materialised"
    return {k: v.value for k, v in recs[0].asset_materialization.metadata.items()}


def _failure_text(result) -> str:
    return "\n".join(
        str(e.step_failure_data.error.message) + str(e.step_failure_data.user_failure_data or "")
        for e in result.get_step_failure_events()
    )


TWO = ["shard-00000", "shard-00001"]
THREE = ["shard-00000", "shard-00001", "shard-00002"]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------------------------------
# issue 15 item 3: per-partition metadata after a single-run backfill
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_single_run_backfill_gives_each_partition_its_own_shards_counts(tmp_path, sample_raw_24, tmp_resources):
    from nyx.data.records import iter_jsonl
    from nyx.synth.qa import plan_sample

    shutil.copytree(sample_raw_24, tmp_path / "data" / "raw")
    instance = _instance(TWO)
    assert dg.materialize([raw_documents], instance=instance, resources=tmp_resources).success
    result = _backfill(instance, tmp_resources, [corpus_chunks, synthetic_qa], *TWO)
    assert result.success, _failure_text(result)
    data = tmp_path / "data"
    for asset in (corpus_chunks, synthetic_qa):  # one materialisation per partition, in the one run
        mats = [m for m in result.get_asset_materialization_events() if m.asset_key == asset.key]
        assert sorted(m.partition for m in mats) == TWO

    profile = NyxSettings(profile="sample", data_dir=str(data)).load_profile()
    everything = [c for s in TWO for c in iter_jsonl(data / "chunks" / f"{s}.jsonl")]
    plan = plan_sample(everything, profile.qa.sample_size, seed=profile.qa.seed, stratify=profile.qa.stratify)
    seen = {}
    for shard in TWO:
        chunks = list(iter_jsonl(data / "chunks" / f"{shard}.jsonl"))
        rejects = _lines(data / "rejects" / "corpus_chunks" / f"{shard}.jsonl")
        documents = sum(1 for _ in iter_jsonl(data / "documents" / f"{shard}.jsonl"))
        meta = _latest_meta(instance, corpus_chunks, shard)
        assert meta["chunks"] == len(chunks) > 0, (shard, meta)
        assert meta["documents"] == documents > 0, (shard, meta)
        assert meta["rejected"] == len(rejects)
        assert meta["reject_reasons"] == dict(Counter(r["reason"].split(":")[0] for r in rejects))
        assert meta["stats"]["documents"] == documents and meta["stats"]["chunks"] == len(chunks), meta["stats"]
        seen[shard] = meta

        qa = list(iter_jsonl(data / "synthetic_qa" / f"{shard}.jsonl"))
        qa_meta = _latest_meta(instance, synthetic_qa, shard)
        assert qa_meta["qa_pairs"] == len(qa) > 0, (shard, qa_meta)
        assert qa_meta["sampled_chunks"] == sum(plan.selects(c) for c in chunks) > 0, (shard, qa_meta)
        assert qa_meta["rejected"] == len(_lines(data / "rejects" / "synthetic_qa" / f"{shard}.jsonl"))
        assert qa_meta["stats"]["sampled"] == qa_meta["sampled_chunks"]
        assert qa_meta["reject_reasons"] == dict(
            Counter(r["reason"].split(":")[0] for r in _lines(data / "rejects" / "synthetic_qa" / f"{shard}.jsonl"))
        )
        # the plan is the corpus's, the same for both: it counts both shards
        assert qa_meta["total_chunks"] == len(everything) and qa_meta["shards_counted"] == TWO
    assert seen["shard-00000"]["documents"] + seen["shard-00001"]["documents"] == 24
    # the run's totals are in its step log, not on a partition
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    total = seen["shard-00000"]["chunks"] + seen["shard-00001"]["chunks"]
    assert any("2 of 2 shards done" in m and f"chunks={total}" in m for m in logs), logs


# ------------------------------------------------------------------------------------------------------------------
# issue 19 row 5: a single-run backfill over shards with one bad shard
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_single_run_backfill_with_a_truncated_shard_fails_only_that_partition(tmp_path, sample_raw3, tmp_resources):
    from nyx.data.records import iter_jsonl

    shutil.copytree(sample_raw3, tmp_path / "data" / "raw")
    _truncate(tmp_path / "data" / "raw" / "shard-00001.parquet")
    instance = _instance(THREE)
    assert dg.materialize([raw_documents], instance=instance, resources=tmp_resources).success
    data = tmp_path / "data"

    result = _backfill(instance, tmp_resources, [corpus_chunks], "shard-00000", "shard-00002")
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    status = instance.get_status_by_partition(corpus_chunks.key, THREE, SHARDS)
    assert status == {
        "shard-00000": dg.AssetPartitionStatus.MATERIALIZED,
        "shard-00001": dg.AssetPartitionStatus.FAILED,
        "shard-00002": dg.AssetPartitionStatus.MATERIALIZED,
    }, status
    assert instance.get_materialized_partitions(corpus_chunks.key) == {"shard-00000", "shard-00002"}
    # the good shards were chunked, and each good partition carries its own counts
    for good in ("shard-00000", "shard-00002"):
        n = sum(1 for _ in iter_jsonl(data / "chunks" / f"{good}.jsonl"))
        assert _latest_meta(instance, corpus_chunks, good)["chunks"] == n > 0
    for m in result.get_asset_materialization_events():  # with the asset's code version, as a normal one has
        assert m.materialization.tags.get("dagster/code_version") == "chunks-v1", m.materialization.tags
    assert not (data / "chunks" / "shard-00001.jsonl").exists()
    # the run's outcome names the bad shard and why: the failure, its metadata and an error line in the log
    (failure,) = result.get_step_failure_events()
    text = _failure_text(result)
    assert "1 of 3 shards failed" in text and "shard 'shard-00001' was rejected at ingestion" in text, text
    assert "Parquet magic bytes not found" in text
    meta = failure.step_failure_data.user_failure_data.metadata
    assert list(meta["failed_shards"].value) == ["shard-00001"]
    assert "Parquet magic bytes not found" in meta["failed_shards"].value["shard-00001"]
    assert meta["materialized_shards"].value == ["shard-00000", "shard-00002"]
    errors = [e.user_message for e in instance.all_logs(result.run_id) if e.level >= 40]
    assert any(m.startswith("shard shard-00001 failed: ") for m in errors), errors

    # synthetic_qa over the same range: the same per-partition outcome, the bad shard's reason given
    qa = _backfill(instance, tmp_resources, [synthetic_qa], "shard-00000", "shard-00002")
    assert not qa.success
    status = instance.get_status_by_partition(synthetic_qa.key, THREE, SHARDS)
    assert status == {
        "shard-00000": dg.AssetPartitionStatus.MATERIALIZED,
        "shard-00001": dg.AssetPartitionStatus.FAILED,
        "shard-00002": dg.AssetPartitionStatus.MATERIALIZED,
    }, status
    assert "shard 'shard-00001' was rejected at ingestion" in _failure_text(qa)
    for good in ("shard-00000", "shard-00002"):
        n = sum(1 for _ in iter_jsonl(data / "synthetic_qa" / f"{good}.jsonl"))
        assert _latest_meta(instance, synthetic_qa, good)["qa_pairs"] == n > 0
    assert not (data / "synthetic_qa" / "shard-00001.jsonl").exists()
    # the bad shard alone: fails saying why, before any sample plan or generator
    alone = _backfill(instance, tmp_resources, [synthetic_qa], "shard-00001", "shard-00001")
    assert not alone.success and "1 of 1 shards failed: shard 'shard-00001' was rejected" in _failure_text(alone)
    assert instance.get_status_by_partition(synthetic_qa.key, ["shard-00001"], SHARDS) == {
        "shard-00001": dg.AssetPartitionStatus.FAILED
    }


# ------------------------------------------------------------------------------------------------------------------
# issue 19: a shard good once and rejected later has its stale derived files withdrawn
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_shard_rejected_after_a_good_version_has_its_stale_outputs_withdrawn(tmp_path, sample_raw_24, tmp_resources):
    from nyx.data.obelics import iter_obelics
    from nyx.data.records import iter_jsonl
    from nyx.data.rejects import RejectLog

    raw = tmp_path / "data" / "raw"
    shutil.copytree(sample_raw_24, raw)
    data = tmp_path / "data"
    bad_docs = {r.id for r in iter_obelics(raw / "shard-00001.parquet", RejectLog())}
    instance = _instance(TWO)
    res = tmp_resources
    assert dg.materialize([raw_documents], instance=instance, resources=res).success
    assert _backfill(instance, tmp_resources, [corpus_chunks, synthetic_qa], *TWO).success
    assert dg.materialize(
        DATA_ASSETS, selection=[nyxqa], instance=instance, resources=res, run_config=_run_config("nyxqa")
    ).success

    def doc_of(record_id: str) -> str:
        return record_id.split("#")[0]

    def nyxqa_docs() -> set[str]:
        qs = list(iter_jsonl(data / "nyxqa" / "queries_all.jsonl"))
        return {doc_of(q.extra["positive_id"]) for q in qs}

    assert nyxqa_docs() & bad_docs  # the shard's records were in NyxQA
    stale = [data / d / "shard-00001.jsonl" for d in ("documents", "chunks", "synthetic_qa")]
    assert all(f.exists() for f in stale)

    _truncate(raw / "shard-00001.parquet")  # the shard is replaced by a cut copy
    result = dg.materialize([raw_documents], instance=instance, resources=res)
    assert result.success
    assert not any(f.exists() for f in stale), [f for f in stale if f.exists()]
    meta = result.asset_materializations_for_node("raw_documents")[0].metadata
    assert sorted(meta["withdrawn_files"].value) == sorted(map(str, stale))
    (rejected,) = meta["rejected_shards"].value
    assert rejected["shard"] == "shard-00001" and sorted(rejected["withdrawn"]) == sorted(map(str, stale))
    (item,) = _lines(data / "rejects" / "raw_documents" / "shard-00001.jsonl")
    assert "Parquet magic bytes not found" in item["reason"] and sorted(item["withdrawn"]) == sorted(map(str, stale))
    warnings = [e.user_message for e in instance.all_logs(result.run_id)]
    for f in stale:
        assert any("shard-00001: withdrew " + str(f) in m for m in warnings), f

    # a rejected shard stays rejected on the next run, and the rejects record still lists what was withdrawn
    again = dg.materialize([raw_documents], instance=instance, resources=res)
    assert again.asset_materializations_for_node("raw_documents")[0].metadata["withdrawn_files"].value == []
    (item,) = _lines(data / "rejects" / "raw_documents" / "shard-00001.jsonl")
    assert sorted(item["withdrawn"]) == sorted(map(str, stale))

    # downstream no longer sees the shard: synthetic_qa's plan counts only shard-00000, nyxqa has none of its records
    qa = _backfill(instance, tmp_resources, [synthetic_qa], "shard-00000", "shard-00000")
    assert qa.success, _failure_text(qa)
    qa_meta = _latest_meta(instance, synthetic_qa, "shard-00000")
    assert qa_meta["shards_counted"] == ["shard-00000"]
    assert dg.materialize(
        DATA_ASSETS, selection=[nyxqa], instance=instance, resources=res, run_config=_run_config("nyxqa")
    ).success
    assert nyxqa_docs() and not nyxqa_docs() & bad_docs
    corpus = {
        doc_of(c.id) for split in ("train", "dev", "test") for c in iter_jsonl(data / "nyxqa" / split / "corpus.jsonl")
    }
    assert corpus and not corpus & bad_docs


@pytest.mark.slow
def test_make_run_driver_goes_on_past_a_bad_shard_and_names_it_at_the_end(
    tmp_path, sample_raw3, monkeypatch, tmp_resources
):
    """``materialize_graph`` (what ``make run`` drives): the bad shard's partitions fail, the good shards and the
    unpartitioned asset downstream (nyxqa) is materialised, and the error names the shard."""
    from orchestration.pipeline import PartitionsFailed, materialize_graph

    shutil.copytree(sample_raw3, tmp_path / "data" / "raw")
    _truncate(tmp_path / "data" / "raw" / "shard-00001.parquet")
    monkeypatch.setenv("NYX_PROFILE_OVERRIDES", json.dumps(FAST["overrides"]))
    from assets.fetch import raw_images

    graph_assets = [raw_images, raw_documents, corpus_chunks, synthetic_qa, nyxqa]
    keep = {a.key for a in graph_assets}
    checks = [c for c in CHECKS if {k.asset_key for k in c.check_keys} <= keep]
    defs = dg.Definitions(assets=graph_assets, asset_checks=checks, resources=tmp_resources)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(PartitionsFailed, match=r"1 shard partition\(s\) failed: shard-00001 \(run ") as err:
        materialize_graph(defs, instance)
    assert list(err.value.failed) == ["shard-00001"]
    done = {
        (e.asset_key.to_user_string(), e.partition)
        for r in err.value.results
        if r.success
        for e in r.get_asset_materialization_events()
    }
    for shard in ("shard-00000", "shard-00002"):
        assert {("corpus_chunks", shard), ("synthetic_qa", shard)} <= done
    assert ("nyxqa", None) in done
    status = instance.get_status_by_partition(corpus_chunks.key, ["shard-00000", "shard-00001", "shard-00002"], SHARDS)
    assert status["shard-00001"] == dg.AssetPartitionStatus.FAILED
    # runs of named jobs (what the UI's timeline, job and partitions pages list), with the assets' checks
    jobs = {r.dagster_run.job_name for r in err.value.results}
    assert jobs == {"full_graph", "full_graph_by_shard"}, jobs
    by_shard = [r for r in err.value.results if r.dagster_run.job_name == "full_graph_by_shard"]
    assert sorted(r.dagster_run.tags.get("dagster/partition") for r in by_shard) == [
        "shard-00000",
        "shard-00001",
        "shard-00002",
    ]
    assert all(run.job_name != "__ASSET_JOB" and not run.job_name.startswith("__") for run in instance.get_runs())
    checked = {
        (e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name)
        for r in err.value.results
        for e in r.get_asset_check_evaluations()
    }
    assert ("corpus_chunks", "corpus_chunks_valid") in checked, checked


# ------------------------------------------------------------------------------------------------------------------
# two shards in one run: one corpus_chunks step for both partitions
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_shard_backfill_materialises_both_partitions_in_one_run(tmp_path, sample_raw, tmp_resources):
    from nyx.data.records import read_jsonl

    shutil.copytree(sample_raw, tmp_path / "data" / "raw")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", TWO)
    assert corpus_chunks.backfill_policy == dg.BackfillPolicy.single_run()
    result = dg.materialize(
        [raw_documents, corpus_chunks, *CHECKS],
        selection=[raw_documents, corpus_chunks],
        instance=instance,
        resources=tmp_resources,
        tags={
            "dagster/asset_partition_range_start": TWO[0],
            "dagster/asset_partition_range_end": TWO[-1],
        },
    )
    assert result.success
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    assert sorted(m.partition for m in mats if m.asset_key == dg.AssetKey("corpus_chunks")) == TWO
    # single-run backfill policy: one corpus_chunks step handled both shards
    steps = [e for e in result.all_events if e.is_step_success and e.step_key == "corpus_chunks"]
    assert len(steps) == 1
    assert instance.get_materialized_partitions(dg.AssetKey("corpus_chunks")) == set(TWO)
    for key in TWO:
        chunks = read_jsonl(tmp_path / "data" / "chunks" / f"{key}.jsonl")
        assert chunks and all(c.id.split("#")[0] for c in chunks)
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "raw_documents_valid": True,
        "corpus_chunks_valid": True,
    }
