"""Shard-partitioned assets (``corpus_chunks``, ``synthetic_qa``): their automation, each shard's input, and the report
of a run over several shards in which some fail (the good partitions materialised, the bad ones failed by name)."""

import dagster as dg

#: the shard-partitioned assets materialise a shard as soon as its upstream shard is new
SHARD_AUTOMATION = dg.AutomationCondition.eager()


class ShardUnavailable(Exception):
    """A shard's input is not there (rejected at ingestion, or not made yet): the message says why."""


def shard_source(context: dg.AssetExecutionContext, paths, shard: str, src, upstream: str):
    """``src``, the shard's input file, or :class:`ShardUnavailable` saying why it is not there. A shard rejected
    at ingestion also has anything left of an earlier version of it withdrawn (``raw_documents`` normally has done
    so already), so that nothing downstream reads it."""
    from nyx.data.ingest import shard_rejection, withdraw_shard_outputs

    if (rejection := shard_rejection(paths.documents, shard)) is not None:
        for f in withdraw_shard_outputs(shard, [paths.chunks, paths.synthetic_qa]):
            context.log.warning(f"shard {shard}: withdrew {f}, made from an earlier version of the shard")
        raise ShardUnavailable(rejection)  # a truncated/corrupt raw file: this partition fails, not the others
    if not src.exists():
        raise ShardUnavailable(f"shard {shard!r}: {src} is missing; materialise {upstream} first")
    return src


def shard_failure(context: dg.AssetExecutionContext, shard: str, e: Exception) -> str:
    """Log why ``shard`` failed (with the traceback for an unexpected error) and return the reason."""
    import traceback

    if isinstance(e, (ShardUnavailable, dg.Failure)):
        reason = str(e.description if isinstance(e, dg.Failure) else e)
        context.log.error(f"shard {shard} failed: {reason}")
    else:
        reason = f"shard {shard!r}: {type(e).__name__}: {e}"
        context.log.error(f"shard {shard} failed: {reason}\n{traceback.format_exc()}")
    return reason


def report_partitions(
    context: dg.AssetExecutionContext,
    per_shard: dict[str, dict],
    failed: dict[str, str],
    shared: dict,
    totals: tuple[str, ...],
) -> dg.MaterializeResult:
    """Each partition of the run gets its own shard's metadata (``per_shard``) plus ``shared``; the totals over
    the run's shards go to the step log. All shards good: one ``MaterializeResult`` with partition-scoped metadata
    (the steps after this one run). Any shard in ``failed``: the good ones are logged as materialisations of their
    own partitions, then a ``Failure`` names each failed shard and why, so that only those partitions fail."""
    if len(context.partition_keys) > 1:
        context.log.info(
            f"{len(per_shard)} of {len(context.partition_keys)} shards done; totals: "
            + ", ".join(f"{k}={sum(m.get(k, 0) for m in per_shard.values())}" for k in totals)
        )
    if not failed:
        for shard, meta in per_shard.items():
            context.add_asset_metadata(meta, partition_key=shard)
        return dg.MaterializeResult(metadata=shared)
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key)
    for shard, meta in per_shard.items():
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=shard,
                metadata={**shared, **meta},
                tags={"dagster/code_version": code_version} if code_version else None,
            )
        )
    raise dg.Failure(
        description=(
            f"{len(failed)} of {len(context.partition_keys)} shards failed: "
            + "; ".join(failed.values())
            + (f" (materialised: {', '.join(per_shard)})" if per_shard else "")
        ),
        metadata={
            "failed_shards": dg.MetadataValue.json(failed),
            "materialized_shards": dg.MetadataValue.json(list(per_shard)),
        },
    )
