"""Great Expectations 1.x inside Dagster asset checks: validate a DataFrame, report figures as metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd


def gx_check(
    df: pd.DataFrame,
    expectations: Sequence[Any],
    name: str,
    *,
    extra_metadata: dict[str, Any] | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """Run ``expectations`` (GX expectation objects) on ``df`` in an ephemeral context (no files, no analytics)."""
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    batch_def = (
        ctx.data_sources.add_pandas(f"{name}_src")
        .add_dataframe_asset(f"{name}_df")
        .add_batch_definition_whole_dataframe(f"{name}_batch")
    )
    suite = gx.ExpectationSuite(name=f"{name}_suite", expectations=list(expectations))
    result = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            res = r.result or {}
            failed.append(
                {
                    "expectation": cfg.type,
                    "column": (cfg.kwargs or {}).get("column"),
                    "unexpected_count": res.get("unexpected_count"),
                    "examples": [str(x) for x in (res.get("partial_unexpected_list") or [])[:5]],
                }
            )
    stats = result.statistics
    meta: dict[str, Any] = {
        "rows": len(df),
        "expectations": int(stats.get("evaluated_expectations", 0)),
        "successful": int(stats.get("successful_expectations", 0)),
        "failed": dg.MetadataValue.json(failed) if failed else 0,
    }
    meta.update(extra_metadata or {})
    return dg.AssetCheckResult(passed=bool(result.success), metadata=meta, severity=severity)
