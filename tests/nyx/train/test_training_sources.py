"""External Stage-1 training sources (issue 20): each published format's fixture converts with the expected counts
and rejects, the blocking check catches an evaluation query in a training file (and nothing downstream runs), and an
edited source file changes the Stage-1 fingerprint (the run is not "finished, skipping")."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from assets.training_sources import training_sources, training_sources_valid
from nyx.data.beir import write_beir
from nyx.data.records import Record
from nyx.data.rejects import RejectLog
from nyx.data.sample.training_sources import EXPECTED, SAMPLE_FILES, write_sample_sources
from nyx.paths import DataPaths
from nyx.settings import PROFILES, TrainingSource, load_profile
from nyx.train.dataset import load_triples
from nyx.train.sources import check_source, convert_source, converted_file, evaluation_queries, normalize_text
from orchestration.resources import NyxSettings


def _source(name: str, **extra) -> dict:
    rel, fmt, recipe = SAMPLE_FILES[name]
    return {"name": name, "format": fmt, "recipe": recipe, "path": f"external/{rel}", **extra}


@pytest.fixture
def paths(tmp_path) -> DataPaths:
    paths = DataPaths.at(tmp_path / "data")
    write_sample_sources(paths.root / "external")
    return paths


# -- every format ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLE_FILES))
def test_each_format_fixture_converts_with_expected_counts_and_rejects(paths, name):
    src = TrainingSource.model_validate(_source(name))
    stats = convert_source(src, paths)
    want = EXPECTED[name]
    assert (stats.loaded, stats.usable, stats.rejected) == (
        want["loaded"],
        want["usable"],
        want["loaded"] - want["usable"],
    )
    assert stats.reasons == want["reasons"]
    assert stats.fixed == want.get("fixed", {})
    assert stats.dropped_negatives == want.get("dropped_negatives", {})
    rejected = [json.loads(line) for line in (paths.rejects / "training_sources" / f"{name}.jsonl").open()]
    assert len(rejected) == stats.rejected + sum(stats.dropped_negatives.values())  # kept, each with its reason
    # the trainer reads the converted file as it is: every usable row is an example
    examples = load_triples(converted_file(paths, name), name, RejectLog())
    assert len(examples) == want["usable"]
    check = check_source(src, paths, evaluation_queries(paths))
    assert check.passed, check.describe()


def test_research_rules_and_images_in_the_source_store(paths):
    convert_source(TrainingSource.model_validate(_source("mmeb")), paths)
    triples = [json.loads(line) for line in converted_file(paths, "mmeb").open()]
    queries = [" ".join(p.get("text", "") for p in t["query"]["content"]) for t in triples]
    assert "Which town on Lake Tolley makes salt?" in queries  # the stray image token is gone, the row kept
    assert not any("<|image" in q for q in queries)
    assert not any("lace" in q for q in queries)  # the row with an empty pos_text is dropped
    images = {
        p["image"]
        for t in triples
        for r in (t["query"], t["positive"], *t["negatives"])
        for p in r["content"]
        if p["type"] == "image"
    }
    assert images and all(
        i.startswith("images/") and (converted_file(paths, "mmeb").parent / i).is_file() for i in images
    )


def test_text_qa_recipes_choose_positives_and_negatives_as_published(paths):
    for name in ("hotpotqa", "retrieved"):
        convert_source(TrainingSource.model_validate(_source(name)), paths)
    gold = json.loads(converted_file(paths, "hotpotqa").open().readline())
    row = json.loads((paths.root / "external" / SAMPLE_FILES["hotpotqa"][0]).read_text())[0]
    first_support = row["supporting_facts"][0][0]
    assert gold["positive"]["content"][0]["text"].startswith(first_support + "\n")
    supporting = {t for t, _ in row["supporting_facts"]}
    assert {n["content"][0]["text"].split("\n")[0] for n in gold["negatives"]} == {
        t for t, _ in row["context"]
    } - supporting  # the given distractors, never the other supporting paragraph
    retrieved = json.loads(converted_file(paths, "retrieved").open().readline())
    raw = json.loads((paths.root / "external" / SAMPLE_FILES["retrieved"][0]).open().readline())
    assert retrieved["positive"]["content"][0]["text"] == raw["retrieved_docs"][0]  # top-1
    assert [n["content"][0]["text"] for n in retrieved["negatives"]] == raw["retrieved_docs"][10:]  # ranks 11+


def test_an_unchanged_source_is_not_converted_again_and_an_edited_one_is(paths):
    src = TrainingSource.model_validate(_source("musique"))
    assert convert_source(src, paths).converted
    assert not convert_source(src, paths).converted
    _edit_one_line(paths.root / "external" / SAMPLE_FILES["musique"][0])
    assert convert_source(src, paths).converted


def _edit_one_line(path: Path) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["question"] = row["question"].replace("Which trade", "What trade")
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def test_source_declaration_accepts_the_old_dict_form_and_rejects_nonsense():
    old = TrainingSource.model_validate({"name": "mine", "kind": "triples", "path": "/x.jsonl", "weight": 2.0})
    assert old.format == "triples" and old.weight == 2.0
    assert TrainingSource.model_validate({"name": "h", "format": "hotpotqa", "path": "h.json"}).recipe == "gold"
    with pytest.raises(ValidationError, match="recipe is for the text QA formats"):
        TrainingSource.model_validate({"name": "r", "format": "research", "path": "r.jsonl", "recipe": "gold"})
    with pytest.raises(ValidationError, match="unique"):
        load_profile("sample", {"stage1": {"extra_sources": [_source("mmeb"), _source("mmeb")]}})


def test_profiles_declare_the_mix():
    paper = PROFILES["paper"].stage1
    assert len([s for s in paper.extra_sources if s.name.startswith("mmeb-")]) == 24
    assert all(s.cap == 30_000 for s in paper.extra_sources if s.name.startswith("mmeb-"))
    assert {s.name for s in paper.extra_sources if s.format in ("hotpotqa", "2wikimultihopqa", "musique")} == {
        "hotpotqa",
        "2wikimultihopqa",
        "musique",
    }
    assert all(s.recipe == "retrieved" for s in paper.extra_sources if s.recipe)
    assert paper.nyxqa_cap == 20_000
    assert [s.format for s in PROFILES["rehearsal"].stage1.extra_sources] == ["research", "hotpotqa"]


def test_prepare_sample_writes_the_rehearsal_fixtures_and_stage1_trains_on_them(tmp_path):
    from nyx.train.stage import stage_train_config
    from orchestration.pipeline import prepare_sample

    paths = DataPaths.at(tmp_path / "data")
    paths.raw.mkdir(parents=True)
    (paths.raw / "shard-00000.jsonl").write_text("")  # a corpus is there: only the fixtures are written
    prepare_sample(paths, "rehearsal")
    profile = load_profile("rehearsal")
    for src in profile.stage1.extra_sources:
        convert_source(src, paths)
        assert check_source(src, paths, {}).passed
    spec = stage_train_config(profile, "stage1", paths)
    assert [s.name for s in spec.config.data] == ["nyxqa", "mmeb-sample", "hotpotqa-sample"]
    assert {"source.mmeb-sample", "source.hotpotqa-sample"} <= set(spec.inputs)


# -- the blocking check, in a run -----------------------------------------------------------------------------------


@dg.asset(deps=[training_sources])
def after_training_sources() -> None:
    """Stands for stage1_checkpoint: it must not run when the check fails."""


def _nyxqa_split(paths: DataPaths, split: str, questions: dict[str, str]) -> None:
    corpus = [Record.from_text(f"{split}-c{i}", f"chunk {i}") for i in range(len(questions))]
    queries = [Record.from_text(qid, text) for qid, text in questions.items()]
    write_beir(paths.nyxqa / split, corpus, queries, {q: {f"{split}-c{i}": 1} for i, q in enumerate(questions)})


def _run(paths: DataPaths, overrides: dict) -> dg.ExecuteInProcessResult:
    settings = NyxSettings(profile="sample", data_dir=str(paths.root), overrides=overrides)
    return dg.materialize(
        [training_sources, training_sources_valid, after_training_sources],
        resources={"settings": settings},
        raise_on_error=False,
    )


LEAKED = "Which Town on LAKE Orrin keeps the  old charter?"  # equal to the test question once normalised


@pytest.mark.parametrize("where", ["nyxqa test", "evaluation folder"])
def test_a_training_file_with_an_evaluation_question_fails_the_check_by_name(paths, where):
    _nyxqa_split(paths, "dev", {"dq1": "Which bell hangs in the dev tower?"})
    _nyxqa_split(paths, "test", {"tq1": "Which ferry crosses the test strait?"})
    overrides = {"stage1": {"extra_sources": [_source("hotpotqa")]}}
    if where == "nyxqa test":
        _nyxqa_split(
            paths,
            "test",
            {"tq1": "Which ferry crosses the test strait?", "tq7": "which town on lake orrin keeps the old charter"},
        )
        eval_id = "nyxqa/test:tq7"
    else:
        write_beir(
            paths.root / "benchmarks" / "mmqa",
            [Record.from_text("m-c0", "a chunk")],
            [Record.from_text("mq3", "Which town on Lake Orrin keeps the old charter?")],
            {"mq3": {"m-c0": 1}},
        )
        overrides["stage1"]["eval_folders"] = ["benchmarks/mmqa"]
        eval_id = "benchmarks/mmqa:mq3"
    clean = _run(paths, overrides)  # the fixture as written: passes, and the downstream asset runs
    assert clean.success and clean.asset_materializations_for_node("after_training_sources")

    hotpot = paths.root / "external" / SAMPLE_FILES["hotpotqa"][0]
    rows = json.loads(hotpot.read_text())
    rows[2]["question"] = LEAKED  # one question of the training file is an evaluation question
    hotpot.write_text(json.dumps(rows))
    result = _run(paths, overrides)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert normalize_text(LEAKED) == normalize_text("which town on lake orrin keeps the old charter")
    assert f"hotpotqa:{rows[2]['_id']} = {eval_id}" in evaluation.description
    assert evaluation.description.startswith("hotpotqa:")  # the source is named
    assert not result.asset_materializations_for_node("after_training_sources")  # nothing downstream ran
    meta = result.asset_materializations_for_node("training_sources")[0].metadata
    assert meta["hotpotqa/usable"].value == EXPECTED["hotpotqa"]["usable"]


def test_row_count_outside_the_expected_range_fails_the_check(paths):
    src = TrainingSource.model_validate(_source("musique", expected_rows=(5, 10)))
    convert_source(src, paths)
    check = check_source(src, paths, {})
    assert not check.passed and "row count 4 outside expected 5..10" in check.describe()


def test_a_negative_equal_to_its_positive_or_a_missing_image_fails_the_check(paths):
    src = TrainingSource.model_validate(_source("mmeb"))
    convert_source(src, paths)
    out = converted_file(paths, "mmeb")
    triples = [json.loads(line) for line in out.open()]
    triples[1]["negatives"] = [triples[1]["positive"]]
    image = next(p["image"] for p in triples[0]["query"]["content"] if p["type"] == "image")
    (out.parent / image).unlink()
    out.write_text("".join(json.dumps(t) + "\n" for t in triples))
    check = check_source(src, paths, {})
    assert check.failures["negative equals the positive"] == [f"{triples[1]['id']} negative 0"]
    assert any(triples[0]["id"] in e for e in check.failures["image does not resolve"])


# -- Stage 1 consumes the converted sources --------------------------------------------------------------------------


def test_editing_one_line_of_a_source_changes_the_stage1_fingerprint_and_its_tag(paths):
    from nyx.train.stage import StageState, plan_stage, stage_train_config, start_stage
    from nyx.utils.integrity import write_manifest
    from nyx.versioning.dvc import dvc_md5

    profile = load_profile("sample", {"stage1": {"extra_sources": [_source("musique"), _source("hotpotqa")]}})

    def md5(p: Path) -> str:
        return dvc_md5(p) if p.exists() else "absent"

    def plan():
        for src in profile.stage1.extra_sources:
            convert_source(src, paths)
        spec = stage_train_config(profile, "stage1", paths)
        return spec, plan_stage("stage1", spec, run_exists=lambda rid: True, md5=md5)

    spec, first = plan()
    assert [s.name for s in spec.config.data] == ["nyxqa", "musique", "hotpotqa"]
    assert spec.config.data[1].path == str(converted_file(paths, "musique"))
    tags = {}
    state = start_stage(first, registered_model="m", create_run=lambda t: tags.update(t) or "run-1")
    assert tags["dvc.md5.source.musique"] == md5(converted_file(paths, "musique"))
    final = first.out_dir / "final"
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"weights")
    write_manifest(final)
    state.model_copy(update={"status": "finished", "final_dir": str(final)}).save(first.out_dir)
    assert plan()[1].action == "skip"  # nothing changed: a finished Stage 1 is not retrained

    _edit_one_line(paths.root / "external" / SAMPLE_FILES["musique"][0])
    _, second = plan()
    assert second.fingerprint != first.fingerprint and second.action == "fresh"
    assert second.input_md5s["source.musique"] != first.input_md5s["source.musique"]
    assert second.input_md5s["source.hotpotqa"] == first.input_md5s["source.hotpotqa"]
    assert StageState.load(first.out_dir).fingerprint == first.fingerprint


def test_stage1_needs_the_sources_converted(tmp_path):
    from nyx.train.stage import stage_train_config

    profile = load_profile("sample", {"stage1": {"extra_sources": [_source("musique")]}})
    with pytest.raises(FileNotFoundError, match="materialise training_sources first"):
        stage_train_config(profile, "stage1", DataPaths.at(tmp_path / "data"))
