"""Promotion gate, alias moves and rollback on a temporary MLflow registry."""

import pytest
from typer.testing import CliRunner

from nyx import registry as reg

NAME = "nyx-retriever"


@pytest.fixture()
def client(tmp_path):
    c = reg.client(f"sqlite:///{tmp_path}/mlflow.db")
    c.create_registered_model(NAME)
    return c


def _version(c, tmp_path, metrics):
    query = f"name='{NAME}'"
    src = tmp_path / f"m{len(c.search_model_versions(query))}"
    src.mkdir()
    v = c.create_model_version(NAME, source=src.as_uri()).version
    reg.record_metrics(c, NAME, str(v), metrics, split="dev")
    return str(v)


def test_a_challenger_that_already_is_the_champion_is_unchanged_not_a_failure(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.30})
    reg.promote(client, NAME, v1)
    d = reg.gate(client, NAME, v1, {"ndcg@10": 0.0})
    assert d.passed and d.unchanged and f"champion v{v1} unchanged" in d.reasons[0]
    assert d.to_json()["unchanged"] is True
    other = _version(client, tmp_path, {"ndcg@10": 0.50})
    assert not reg.gate(client, NAME, other, {"ndcg@10": 0.0}).unchanged


def test_gate_decides_on_dev_metrics_only_and_refuses_the_test_split(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.30})
    reg.promote(client, NAME, v1)
    # better on test, worse on dev: test numbers must not move the champion
    v2 = _version(client, tmp_path, {"ndcg@10": 0.20})
    reg.record_metrics(client, NAME, v2, {"ndcg@10": 0.90}, split="test")
    d = reg.gate(client, NAME, v2, {"ndcg@10": 0.0})
    assert not d.passed and d.split == "dev" and d.compared["ndcg@10"]["challenger"] == 0.20
    assert reg.all_version_metrics(client, NAME, v2) == {"dev": {"ndcg@10": 0.2}, "test": {"ndcg@10": 0.9}}
    only_test = _version(client, tmp_path, {})
    reg.record_metrics(client, NAME, only_test, {"ndcg@10": 0.95}, split="test")
    d = reg.gate(client, NAME, only_test, {"ndcg@10": 0.0})
    assert not d.passed and "no recorded dev ndcg@10" in d.reasons[0]
    with pytest.raises(ValueError, match="test metrics never select a model"):
        reg.gate(client, NAME, v2, {"ndcg@10": 0.0}, split="test")


def test_registry_cli_reads_the_model_name_from_the_profile(client, tmp_path, monkeypatch):
    from nyx.cli import app

    other = "my-retriever"
    client.create_registered_model(other)
    src = tmp_path / "other"
    src.mkdir()
    v = client.create_model_version(other, source=src.as_uri()).version
    monkeypatch.setenv("NYX_PROFILE_OVERRIDES", '{"promotion": {"registered_model": "my-retriever"}}')
    uri = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    r = CliRunner().invoke(app, ["registry", "promote", str(v), *uri])
    assert r.exit_code == 0, r.output
    assert reg.alias_version(client, other, reg.CHAMPION) == str(v)
    assert reg.alias_version(client, NAME, reg.CHAMPION) is None


def test_first_challenger_with_metrics_becomes_champion(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.30, "recall@10": 0.5})
    d = reg.gate(client, NAME, v1, {"ndcg@10": 0.0})
    assert d.passed and d.champion is None
    reg.promote(client, NAME, v1)
    assert reg.alias_version(client, NAME, reg.CHAMPION) == v1


def test_gate_passes_only_when_every_metric_beats_champion_by_margin(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.30, "recall@10": 0.50})
    reg.promote(client, NAME, v1)
    better = _version(client, tmp_path, {"ndcg@10": 0.35, "recall@10": 0.56})
    assert reg.gate(client, NAME, better, {"ndcg@10": 0.01, "recall@10": 0.01}).passed
    # beats on one metric, not by the margin on the other
    mixed = _version(client, tmp_path, {"ndcg@10": 0.40, "recall@10": 0.505})
    d = reg.gate(client, NAME, mixed, {"ndcg@10": 0.01, "recall@10": 0.01})
    assert not d.passed
    assert any("recall@10" in r for r in d.reasons)
    assert d.compared["recall@10"] == {"challenger": 0.505, "champion": 0.5, "margin": 0.01}


def test_failed_gate_leaves_champion_untouched_and_missing_metric_fails(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.30})
    reg.promote(client, NAME, v1)
    worse = _version(client, tmp_path, {"ndcg@10": 0.20})
    assert not reg.gate(client, NAME, worse, {"ndcg@10": 0.0}).passed
    assert reg.alias_version(client, NAME, reg.CHAMPION) == v1
    no_metric = _version(client, tmp_path, {})
    d = reg.gate(client, NAME, no_metric, {"ndcg@10": 0.0})
    assert not d.passed and "no recorded dev ndcg@10" in d.reasons[0]


def test_rollback_restores_previous_champion_and_is_reversible(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.3})
    v2 = _version(client, tmp_path, {"ndcg@10": 0.4})
    reg.promote(client, NAME, v1)
    assert reg.promote(client, NAME, v2) == v1
    assert reg.rollback(client, NAME) == (v2, v1)
    assert reg.alias_version(client, NAME, reg.CHAMPION) == v1
    assert reg.rollback(client, NAME) == (v1, v2)  # rolling back the rollback


def test_rollback_without_previous_champion_is_a_clear_error(client, tmp_path):
    v1 = _version(client, tmp_path, {"ndcg@10": 0.3})
    reg.promote(client, NAME, v1)
    with pytest.raises(ValueError, match="nothing to roll back"):
        reg.rollback(client, NAME)


def test_registry_cli_status_promote_rollback(client, tmp_path):
    from nyx.cli import app

    v1 = _version(client, tmp_path, {"ndcg@10": 0.3})
    v2 = _version(client, tmp_path, {"ndcg@10": 0.4})
    uri = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    runner = CliRunner()
    assert runner.invoke(app, ["registry", "promote", v1, *uri]).exit_code == 0
    assert runner.invoke(app, ["registry", "promote", v2, *uri]).exit_code == 0
    r = runner.invoke(app, ["registry", "rollback", *uri])
    assert r.exit_code == 0, r.output
    assert reg.alias_version(client, NAME, reg.CHAMPION) == v1
    st = runner.invoke(app, ["registry", "status", *uri])
    assert st.exit_code == 0 and '"champion": "1"' in st.output
    bad = runner.invoke(app, ["registry", "rollback", "--tracking-uri", f"sqlite:///{tmp_path}/other.db"])
    assert bad.exit_code == 1 and "error:" in bad.output
