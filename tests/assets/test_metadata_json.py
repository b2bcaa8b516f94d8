"""Metadata the Dagster UI can show: every value valid JSON (no NaN or infinity, which the UI cannot parse: "Could not
parse record"), numbers rounded for reading, plots inlined as PNG ``data:`` URLs that render (a file path does not),
training assets with a loss curve and the launcher they really ran with, descriptions without RST double backticks.

``metadata_json`` and ``inline_pngs`` are also used by tests/e2e/test_end_to_end.py on every materialisation of a
run."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest

DATA_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
MAX_INLINE = 300_000


def metadata_json(value):
    """A metadata value as the plain data the UI parses (tables: their records and column types)."""
    if isinstance(value, dg.TableMetadataValue):
        return {
            "records": [dict(r.data) for r in value.records],
            "schema": [[c.name, c.type] for c in value.schema.columns],
        }
    if isinstance(value, dg.TableSchemaMetadataValue):
        return [[c.name, c.type] for c in value.schema.columns]
    if isinstance(value, dg.MetadataValue):
        inner = value.value
        return repr(inner) if isinstance(inner, dg.MetadataValue) else inner
    return value


def assert_json_metadata(where: str, metadata) -> None:
    """Every entry of ``metadata`` serialises as strict JSON (``allow_nan=False``)."""
    for key, value in metadata.items():
        data = metadata_json(value)
        try:
            json.dumps(data, allow_nan=False, default=repr)
        except ValueError as e:
            pytest.fail(f"{where}: metadata {key!r} is not valid JSON ({e}): {str(data)[:300]}")


def inline_pngs(md: str):
    """The PNG images inlined in Markdown as ``data:`` URLs, each opened (and verified) with PIL."""
    from PIL import Image

    out = []
    for b64 in DATA_PNG.findall(md):
        data = base64.b64decode(b64, validate=True)
        Image.open(io.BytesIO(data)).verify()
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.format == "PNG" and img.width > 50 and img.height > 50, (img.format, img.size)
        out.append((data, img))
    return out


def md_text(value) -> str:
    assert isinstance(value, dg.MarkdownMetadataValue), f"expected Markdown metadata, got {type(value).__name__}"
    return value.md_str


# -- the helpers -----------------------------------------------------------------------------------------------------


def test_readable_makes_json_and_rounds_to_four_significant_digits():
    from assets.lib.metadata import readable

    nested = {
        "a": math.nan,
        "b": [math.inf, -math.inf, 0.123456789],
        "c": {"d": np.float32(2.0 / 3.0)},
        "e": np.array([1.0, np.nan]),
        "f": pd.NA,
        "g": (7, True, "x", None),
        3: 12345.678,
    }
    out = readable(nested)
    json.dumps(out, allow_nan=False)
    assert out == {
        "a": None,
        "b": [None, None, 0.1235],
        "c": {"d": 0.6667},
        "e": [1.0, None],
        "f": None,
        "g": [7, True, "x", None],
        "3": 12350.0,
    }
    assert readable(math.nan, missing="n/a") == "n/a"


def test_readable_metadata_cleans_floats_json_and_tables():
    from assets.lib.metadata import readable_metadata, table_metadata

    meta = readable_metadata(
        {
            "nan": math.nan,
            "inf": dg.MetadataValue.float(math.inf),
            "loss": 0.693147180559945,
            "np": np.float64(1 / 3),
            "steps": 40,
            "json": dg.MetadataValue.json({"x": [math.nan, 0.5555555]}),
            "raw": {"y": math.inf},
            "table": dg.MetadataValue.table(records=[dg.TableRecord({"v": 0.11111111})]),
            "rows": table_metadata(
                [
                    {"name": "bm25", "dim": math.nan, "ndcg": 0.3333333},
                    {"name": "s1", "dim": 128, "ndcg": np.float32(0.5)},
                ]
            ),
            "md": dg.MetadataValue.md("| a |"),
        }
    )
    assert_json_metadata("readable_metadata", meta)
    assert meta["nan"] == "n/a" and meta["inf"] == "n/a" and meta["loss"] == 0.6931 and meta["np"] == 0.3333
    assert meta["steps"] == 40 and meta["json"].data == {"x": [None, 0.5556]} and meta["raw"].data == {"y": None}
    assert meta["table"].records[0].data == {"v": 0.1111}
    rows = meta["rows"]
    assert [r.data for r in rows.records] == [
        {"name": "bm25", "dim": None, "ndcg": 0.3333},
        {"name": "s1", "dim": 128, "ndcg": 0.5},
    ]
    assert [(c.name, c.type) for c in rows.schema.columns] == [("name", "string"), ("dim", "int"), ("ndcg", "float")]


def test_png_data_url_of_a_figure_and_of_a_large_png_stays_under_the_limit(tmp_path):
    from PIL import Image

    from nyx.eval.plots import loss_figure, png_data_url

    fig_url = png_data_url(loss_figure([(s, 2.0 / (s + 1), 0.0) for s in range(50)] + [(50, math.nan, 0.0)]))
    [(data, img)] = inline_pngs(f"![loss]({fig_url})")
    assert len(data) < MAX_INLINE
    noise = np.random.default_rng(0).integers(0, 255, size=(900, 1200, 3), dtype=np.uint8)  # ~3 MB as PNG
    big = tmp_path / "noise.png"
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > 1_000_000
    url = png_data_url(big, max_bytes=100_000)
    [(data, img)] = inline_pngs(f"![noise]({url})")
    assert len(data) <= 100_000 and img.width < 1200 and img.width / img.height == pytest.approx(4 / 3, rel=0.02)
    with pytest.raises(ValueError, match="not a PNG"):
        png_data_url(b"GIF89a...")


# -- eval_report ------------------------------------------------------------------------------------------------------


def test_eval_report_metadata_is_json_with_plots_that_render(tmp_path):
    """What eval_report returns for a report with BM25 (no dimension: NaN in the table) beside dense retrievers."""
    from assets.evaluation import report_metadata
    from nyx.eval.report import write_report
    from tests.nyx.eval.test_report import fake_report

    report = fake_report()
    report.retrieval.loc[0, "latency_ms_per_query"] = math.inf  # a broken timing must not break the metadata
    files = write_report(report, tmp_path / "eval")
    meta = report_metadata(report, files)
    assert_json_metadata("eval_report", meta)
    for key in ("matryoshka_plot", "comparison_plot"):
        [(data, _)] = inline_pngs(md_text(meta[key]))
        assert len(data) < MAX_INLINE, (key, len(data))
    report_md = md_text(meta["report"])
    assert len(inline_pngs(report_md)) == 2
    assert "](matryoshka.png)" not in report_md and "](retrievers.png)" not in report_md  # broken in the UI
    assert "## Matryoshka sweep" in report_md
    records = {r.data["retriever"]: r.data for r in meta["retrievers"].records}
    assert records["bm25"]["dim"] is None and records["nyx-stage1"]["dim"] == 2048
    assert records["nyx-stage2"]["ndcg@10"] == 0.75 and records["nyx-stage1"]["latency_ms_per_query"] is None
    assert meta["summary"].data["bm25"]["dim"] is None
    # the files stay as they were (MLflow artifacts): report.md refers to the PNGs beside it
    assert "](matryoshka.png)" in files["markdown"].read_text()


# -- training assets --------------------------------------------------------------------------------------------------


def test_training_metadata_has_a_loss_curve_the_launcher_and_zero_stage(mlflow_uri, tmp_resources):
    from assets.training import LAUNCHER_TAG, _metadata
    from nyx.train.stage import StageState

    mlflow_resource = tmp_resources["mlflow"]  # on the store mlflow_uri points the library at
    client = mlflow_resource.client()
    run_id = client.create_run(mlflow_resource.experiment_id()).info.run_id
    for step in range(1, 13):
        client.log_metric(run_id, "loss", math.nan if step == 5 else 3.0 / step, step=step)
        client.log_metric(run_id, "epoch", step / 12, step=step)
    state = StageState(
        stage="stage1",
        status="finished",
        fingerprint="f",
        mlflow_run_id=run_id,
        registered_model="nyx-retriever",
        base_model="tiny",
        start_model="tiny",
        final_dir="/tmp/final",
        model_version="3",
        summary={
            "global_step": 12,
            "world_size": 2,
            "global_batch_size": 16,
            "first_loss": 3.0,
            "last_loss": 0.24999999999,
            "distributed_type": "DEEPSPEED",
            "zero_stage": 2,
        },
        dev=[{"dim": 128, "ndcg@10": 0.123456789, "recall@10": math.nan, "n_queries": 9}],
        dev_start=[{"dim": 128, "ndcg@10": 0.1, "recall@10": 0.2}],
    )

    meta = _metadata(state, mlflow_resource, skipped=False, launcher="torchrun")
    assert_json_metadata("stage1_checkpoint", meta)
    assert (meta["launcher"], meta["zero_stage"], meta["distributed_type"]) == ("torchrun", "ZeRO-2", "DEEPSPEED")
    assert client.get_run(run_id).data.tags[LAUNCHER_TAG] == "torchrun"
    assert meta["last_loss"] == 0.25 and meta["dev_ndcg@10"] == 0.1235 and meta["dev_recall@10"] == "n/a"
    [(data, _)] = inline_pngs(md_text(meta["loss_curve"]))
    assert len(data) < MAX_INLINE
    # not retrained: the launcher is the one the finished run recorded
    again = _metadata(
        state.model_copy(update={"summary": {**state.summary, "zero_stage": None}}), mlflow_resource, skipped=True
    )
    assert again["launcher"] == "torchrun" and again["zero_stage"] == "none" and not again["retrained"]
    assert inline_pngs(md_text(again["loss_curve"]))


# -- definitions ------------------------------------------------------------------------------------------------------


def test_asset_descriptions_are_markdown_without_rst_double_backticks(definitions):
    """Dagster renders descriptions as Markdown: RST ``x`` shows its backticks literally."""
    specs = list(definitions.resolve_all_asset_specs())
    assert specs
    bad = {s.key.to_user_string(): s.description for s in specs if "``" in (s.description or "")}
    assert not bad, f"descriptions with double backticks: {sorted(bad)}"
    graph = definitions.resolve_asset_graph()
    checks = [graph.get_check_spec(k) for k in graph.asset_check_keys]
    assert not [c.name for c in checks if "``" in (c.description or "")]


def test_training_assets_do_not_claim_a_launcher_as_kind(definitions):
    kinds = {s.key.to_user_string(): set(s.kinds) for s in definitions.resolve_all_asset_specs()}
    for asset in ("stage1_checkpoint", "stage2_checkpoint"):
        assert kinds[asset] == {"pytorch", "mlflow"}, (asset, kinds[asset])
