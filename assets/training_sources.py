"""``training_sources``: the external Stage-1 training sets the profile declares (``stage1.extra_sources``), each
converted once from its publisher's format into Nyx triples under ``data/training_sources/<name>/`` (DVC-tracked
data), and the blocking check ``training_sources_valid`` that gates ``stage1_checkpoint``.

The sources are named by the profile, which a ``StaticPartitionsDefinition`` cannot read at definition time, so this
is one asset with one set of outputs and metadata per source (``<name>/loaded``, ``/usable``, ``/rejected``,
``/md5``): a source whose file and settings did not change is not converted again (``converted: false`` in its row),
an edited one is, and its new md5 makes Stage 1 train again (:func:`nyx.train.stage.stage_train_config`).
"""

import hashlib
from typing import Any

import dagster as dg
from pydantic import Field

from assets.lib.metadata import readable_metadata, table_metadata
from assets.lib.profile import ProfileConfig, profile_for
from nyx.train.sources import CODE_VERSION
from orchestration.resources import NyxSettings


class TrainingSourcesConfig(ProfileConfig):
    force_convert: bool = Field(False, description="convert every source again even if its file did not change")


@dg.asset(
    group_name="data",
    kinds={"python", "jsonl"},
    deps=["nyxqa"],  # the leakage check compares every source query with NyxQA dev and test
    code_version=CODE_VERSION,
)
def training_sources(
    context: dg.AssetExecutionContext, settings: NyxSettings, config: TrainingSourcesConfig
) -> dg.MaterializeResult:
    """Every external training set of the profile (MMEB / mmE5 research format, Nyx triples, HotpotQA,
    2WikiMultihopQA, MuSiQue) converted into Nyx triples with its images in the source's image store; per source the
    rows loaded, usable and rejected (by reason, kept under `data/rejects/training_sources/`) and the md5 Stage 1
    fingerprints."""
    from nyx.data.sample.training_sources import ensure_sample_sources
    from nyx.train.sources import convert_source, converted_file
    from nyx.versioning.dvc import dvc_md5

    profile = profile_for(settings, config)
    paths = settings.paths
    # a sample-sized profile (rehearsal) that declares the bundled fixtures gets them here too when nothing wrote
    # them before (prepare_sample does): the paper profile's files are the user's to put in place
    written = ensure_sample_sources(paths, profile)
    if written:
        context.log.info(f"wrote the bundled external-source fixtures under {written[0].parent.parent}")
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for src in profile.stage1.extra_sources:
        try:
            stats = convert_source(src, paths, force=config.force_convert)
        except FileNotFoundError as e:
            raise dg.Failure(str(e)) from None
        md5 = dvc_md5(converted_file(paths, src.name))
        context.log.info(
            f"{src.name} ({src.format}{'/' + src.recipe if src.recipe else ''}): "
            f"{'converted' if stats.converted else 'unchanged, not converted again'}; "
            f"{stats.loaded} loaded, {stats.usable} usable, {stats.rejected} rejected {stats.reasons}"
        )
        rows.append(
            {
                "source": src.name,
                "format": src.format,
                "recipe": src.recipe or "",
                "loaded": stats.loaded,
                "usable": stats.usable,
                "rejected": stats.rejected,
                "weight": src.weight,
                "converted": stats.converted,
                "md5": md5,
                "source_md5": stats.source_md5,
            }
        )
        meta.update(
            {
                f"{src.name}/loaded": stats.loaded,
                f"{src.name}/usable": stats.usable,
                f"{src.name}/rejected": stats.rejected,
                f"{src.name}/md5": md5,
                f"{src.name}/rejected_by_reason": dg.MetadataValue.json(stats.reasons),
                f"{src.name}/fixed": dg.MetadataValue.json(stats.fixed),
                f"{src.name}/dropped_negatives": dg.MetadataValue.json(stats.dropped_negatives),
            }
        )
    meta = {
        "sources": len(rows),
        "converted": sum(r["converted"] for r in rows),
        "usable_total": sum(r["usable"] for r in rows),
        "folder": dg.MetadataValue.path(str(paths.training_sources)),
        **meta,
    }
    if rows:
        meta["per_source"] = table_metadata(rows)
    version = hashlib.sha256("|".join(f"{r['source']}={r['md5']}:{r['weight']}" for r in rows).encode()).hexdigest()
    return dg.MaterializeResult(metadata=readable_metadata(meta), data_version=dg.DataVersion(version[:16]))


@dg.asset_check(
    asset=training_sources,
    blocking=True,
    description="per source: row count within the expected range, a usable query and positive in every "
    "triple, images resolve, no negative equals its positive, and no query of NyxQA dev/test "
    "or of an evaluation folder the profile names (normalised text)",
)
def training_sources_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    from nyx.train.sources import check_source, evaluation_queries

    profile = settings.load_profile()
    paths = settings.paths
    try:
        eval_queries = evaluation_queries(paths, profile.stage1.eval_folders)
    except FileNotFoundError as e:
        return dg.AssetCheckResult(passed=False, description=str(e))
    results = [check_source(src, paths, eval_queries) for src in profile.stage1.extra_sources]
    failed = [r for r in results if not r.passed]
    description = "; ".join(r.describe() for r in failed) if failed else f"{len(results)} source(s), every rule holds"
    return dg.AssetCheckResult(
        passed=not failed,
        description=description[:4000],
        metadata={
            "sources": len(results),
            "failed_sources": [r.name for r in failed],
            "evaluation_queries": len(eval_queries),
            "rows": dg.MetadataValue.json({r.name: r.rows for r in results}),
            "failures": dg.MetadataValue.json({r.name: r.failures for r in failed}),
        },
    )
