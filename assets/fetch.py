"""``raw_images``: the ``http(s)`` images of the OBELICS shards in ``data/raw``, fetched into the image store."""

import dagster as dg

from assets.lib.profile import ProfileConfig, profile_for
from orchestration.resources import NyxSettings


@dg.asset(
    group_name="data",
    kinds={"python"},
    code_version="fetch-v1",
)
def raw_images(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
    """The remote images of the raw shards, downloaded before `raw_documents` reads them (`nyx.data.fetch`).

    Every image entry of a shard in `data/raw` that is an `http(s)` URL is fetched (settings: the profile's
    `fetch`) into the content-addressed store `data/raw/images/<sha256><ext>`; the shard as delivered is kept in
    `data/raw/remote/` and the shard itself is rewritten to name the local files. A document with an image that
    could not be fetched is dropped and kept with the reason in `data/rejects/raw_images/<shard>.jsonl`; each failed
    URL is in `<shard>.urls.jsonl` beside it. A killed run resumes from the store's URL index without requesting
    any URL again that has a final result. Shards without remote images (the bundled sample) are left alone: then
    this is a no-op (`status: no remote images`). The run fails only when URLs were requested and not one could
    be fetched for a transient reason (timeouts, connection errors: the network, not the URLs, is the problem).
    """
    from nyx.data.fetch import FetchConfig, fetch_raw_images

    paths = settings.paths
    cfg = FetchConfig(**profile_for(settings, config).fetch.model_dump())
    if not paths.raw.is_dir():
        return dg.MaterializeResult(
            metadata={
                "status": "no remote images",
                "shards": 0,
                "note": f"no raw data folder at {paths.raw} (raw_documents says how to make one)",
            }
        )
    rejects_dir = paths.rejects / "raw_images"
    reports = fetch_raw_images(paths.raw, rejects_dir, cfg, progress=context.log.info)
    remote = [r for r in reports if r.status in ("resolved", "unchanged")]
    unreadable = [r for r in reports if r.status == "unreadable"]
    for r in unreadable:
        context.log.warning(
            f"shard {r.shard} ({r.file}) cannot be read, its images are not fetched (raw_documents "
            f"rejects it): {r.error}"
        )
    if not remote:
        return dg.MaterializeResult(
            metadata={"status": "no remote images", "shards": len(reports), "unreadable_shards": len(unreadable)}
        )
    for r in remote:
        if r.failed:
            context.log.warning(
                f"shard {r.shard}: {r.failed}/{r.urls} image URLs failed {r.reasons}, {r.dropped} "
                f"documents dropped (see {r.url_rejects})"
            )
    requested = sum(r.requested for r in remote)
    if requested and sum(r.transient_now for r in remote) == requested:
        raise dg.Failure(
            f"none of the {requested} image URLs requested could be fetched, all for a transient reason "
            f"({_totals(remote)}): is the network reachable? A later run tries them again",
            metadata={"per_shard": dg.MetadataValue.md(_table(remote))},
        )
    reasons = _totals(remote)
    return dg.MaterializeResult(
        metadata={
            "status": "fetched",
            "shards": len(reports),
            "shards_with_remote_images": len(remote),
            "urls": sum(r.urls for r in remote),
            "stored": sum(r.stored for r in remote),
            "failed": sum(r.failed for r in remote),
            "requested": requested,
            "failed_by_reason": dg.MetadataValue.json(reasons),
            "fetched": sum(r.fetched for r in remote),
            "pending_retry": sum(r.pending_retry for r in remote),
            "documents_dropped": sum(r.dropped for r in remote),
            "store": dg.MetadataValue.path(str(paths.raw / "images")),
            "rejects_dir": dg.MetadataValue.path(str(rejects_dir)),
            "per_shard": dg.MetadataValue.md(_table(remote)),
            "reports": dg.MetadataValue.json([{k: v for k, v in vars(r).items() if v is not None} for r in remote]),
        }
    )


def _totals(reports) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reports:
        for k, v in r.reasons.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def _table(reports) -> str:
    rows = [
        "| shard | status | URLs | stored | failed | requested (fetched) | reasons | documents dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {r.shard} | {r.status} | {r.urls} | {r.stored} | {r.failed} | {r.requested} ({r.fetched}) | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(r.reasons.items())) or '-'} | {r.dropped}/{r.documents} |"
        for r in reports
    ]
    return "\n".join(rows)
