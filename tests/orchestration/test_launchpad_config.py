"""Launchpad overrides are a typed Dagster config schema: a typo, a wrong type or an unknown choice is refused when
the run is launched, before any step runs (issue 15, item 4), while valid overrides reach the asset's profile."""

import dagster as dg
import pytest

from assets.lib.profile import ProfileConfig, profile_for
from assets.training import TrainingAssetConfig
from orchestration.profile_config import given
from orchestration.resources import NyxSettings


@pytest.fixture(scope="module")
def nightly(definitions) -> dg.JobDefinition:
    return definitions.resolve_job_def("nightly_incremental")


def _chunks_config(overrides: dict) -> dict:
    return {"ops": {"corpus_chunks": {"config": {"overrides": overrides}}}}


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"chunking": {"max_tokns": 120}}, "max_tokns"),  # a setting that does not exist
        ({"chunkin": {"max_tokens": 120}}, "chunkin"),  # a section that does not exist
        ({"chunking": {"max_tokens": "many"}}, "max_tokens"),  # a value of the wrong type
        ({"launch": {"kind": "torchrunn"}}, "torchrunn"),  # a choice outside the Literal
        ({"stage1": {"train": {"learning_rte": 1e-4}}}, "learning_rte"),  # training settings are typed too
        ({"stage2": {"train": {"lora": {"rank": "eight"}}}}, "rank"),
    ],
)
def test_launchpad_refuses_a_bad_override_naming_it(nightly, overrides, named):
    with pytest.raises(dg.DagsterInvalidConfigError) as err:
        dg.validate_run_config(nightly, _chunks_config(overrides))
    assert named in str(err.value)


def test_valid_overrides_pass_the_launchpad_and_reach_the_profile(nightly):
    overrides = {
        "chunking": {"max_tokens": 120},
        "launch": {"kind": "torchrun"},
        "stage1": {"train": {"epochs": 2, "lora": {"rank": 4}}},
        "promotion": {"gate_metrics": {"ndcg@10": 0.1}},
    }
    dg.validate_run_config(nightly, _chunks_config(overrides))
    config = ProfileConfig(overrides=overrides)
    assert given(config.overrides) == overrides
    profile = profile_for(NyxSettings(profile="sample", data_dir="/nonexistent"), config)
    assert profile.chunking.max_tokens == 120
    assert profile.launch.kind == "torchrun"
    assert profile.stage1.train.epochs == 2 and profile.stage1.train.lora.rank == 4
    assert profile.stage1.train.lora.enabled is False  # the sample's, merged with the override
    assert profile.promotion.gate_metrics["ndcg@10"] == 0.1
    untouched = profile_for(NyxSettings(profile="sample", data_dir="/nonexistent"), ProfileConfig())
    assert untouched.model_dump() == NyxSettings(profile="sample", data_dir="/x").load_profile().model_dump()


def test_a_typo_fails_the_run_before_raw_documents_runs(nightly, tmp_path):
    """What the operator met: the typo surfaced only in corpus_chunks, after raw_documents had re-run."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["shard-00000"])
    with pytest.raises(dg.DagsterInvalidConfigError):
        nightly.execute_in_process(
            run_config=_chunks_config({"chunking": {"max_tokns": 120}}), instance=instance, partition_key="shard-00000"
        )
    assert instance.get_runs() == []  # no run was created, so no step (raw_documents included) ran


def test_settings_resource_overrides_are_typed_too(nightly):
    cfg = {"resources": {"settings": {"config": {"overrides": {"chunking": {"max_tokns": 1}}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as err:
        dg.validate_run_config(nightly, cfg)
    assert "max_tokns" in str(err.value)


@dg.asset
def probe(settings: NyxSettings, config: TrainingAssetConfig):
    p = profile_for(settings, config)
    return p.stage1.train.max_steps, p.nyxqa.dev_per_group


def test_environment_overrides_reach_an_asset_run_as_a_job(monkeypatch):
    """NYX_PROFILE_OVERRIDES is read when the step builds its profile, also in a job run (where Dagster rebuilds
    the settings resource from its config: an environment default captured at construction was lost there)."""
    monkeypatch.setenv(
        "NYX_PROFILE_OVERRIDES", '{"stage1": {"train": {"max_steps": 6}}, "nyxqa": {"dev_per_group": 3}}'
    )

    d = dg.Definitions(
        assets=[probe],
        jobs=[dg.define_asset_job("probe_job", selection=[probe])],
        resources={"settings": NyxSettings(profile="sample")},
    )
    result = d.resolve_job_def("probe_job").execute_in_process(
        run_config={"ops": {"probe": {"config": {"overrides": {"nyxqa": {"dev_per_group": 5}}}}}}
    )
    assert result.output_for_node("probe") == (6, 5)  # environment, then the launchpad on top


def test_a_typo_in_the_environment_overrides_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("NYX_PROFILE_OVERRIDES", '{"stage1": {"trian": {"max_steps": 6}}}')
    with pytest.raises(ValueError, match=r"(?s)NYX_PROFILE_OVERRIDES.*stage1\.trian"):
        NyxSettings(profile="sample").load_profile()
