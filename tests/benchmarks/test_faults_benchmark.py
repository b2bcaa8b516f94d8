"""``benchmarks/faults.py`` (``make faults``, minutes): its machinery, cheaply. The table it prints, its command
line, and one fault (a truncated Parquet shard) injected end to end into a scratch copy of the data pipeline run
in this process (``--only truncated-shard --pipeline data --in-process``), in well under a minute."""

import json

import pytest

from benchmarks import faults


def test_table_rendering_escapes_pipes_and_says_yes_or_no():
    rows = [
        {"fault": "a | b", "saw": "error: x|y", "detail": "exit 1", "recovered": True, "lost": "none", "seconds": 12.4},
        {"fault": "c", "saw": "line one\nline two", "recovered": False, "lost": "good shards", "seconds": 0.6},
    ]
    assert faults.render_table(rows).splitlines() == [
        "| fault | what the operator saw | recovered | data lost | time to recover |",
        "|---|---|---|---|---|",
        "| a / b | error: x/y (exit 1) | yes | none | 12 s |",
        "| c | line one line two | no | good shards | 1 s |",
    ]


def test_command_line_lists_the_faults_and_refuses_one_the_pipeline_cannot_run(capsys):
    assert faults.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for key in faults.FAULTS:
        assert key in listed
    with pytest.raises(SystemExit) as e:  # killed-run needs training: not in the data pipeline
        faults.main(["--only", "killed-run", "--pipeline", "data"])
    assert e.value.code == 2 and "--pipeline data cannot run killed-run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        faults.main(["--only", "no-such-fault"])
    with pytest.raises(SystemExit):
        faults.main(["--only", "truncated-shard", "--in-process"])  # in-process is for the data pipeline only


@pytest.mark.slow
def test_truncated_shard_fault_injected_into_a_scratch_data_pipeline_recovers(tmp_path, capsys):
    out, logs = tmp_path / "faults.json", tmp_path / "logs"
    rc = faults.main(
        ["--only", "truncated-shard", "--pipeline", "data", "--in-process", "--out", str(out), "--logs", str(logs)]
    )
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    (row,) = report["faults"]
    assert rc == 0, (row, printed)
    assert row["fault"] == "one truncated Parquet shard in data/raw" and row["recovered"] is True
    # what the operator saw names the shard, its file and the reader's error
    assert "shard shard-00001 (shard-00001.parquet) rejected, not ingested" in row["saw"]
    assert "Parquet magic bytes not found" in row["saw"]
    assert "shard-00000=MATERIALIZED, shard-00001=FAILED" in row["detail"]  # only its partition failed
    assert "3 stale file(s) of its good version withdrawn" in row["detail"]
    assert row["lost"].startswith("none")
    assert "| one truncated Parquet shard in data/raw | shard shard-00001" in printed and "| yes |" in printed
    # the baseline, the run with the bad shard, the run after the repair: each run's output kept
    assert sorted(p.name for p in logs.iterdir()) == ["run-01.log", "run-02.log", "run-03.log"]
    assert "was rejected at ingestion" in (logs / "run-02.log").read_text()
