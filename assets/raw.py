"""``raw_documents``: the OBELICS shards in ``data/raw``, validated, with DVC's md5 as their data version."""

import dagster as dg

from assets.lib.quality import gx_check
from orchestration.resources import DvcResource, NyxSettings


@dg.asset(
    group_name="data",
    kinds={"python", "parquet", "dvc"},
    code_version="raw-v1",
    deps=["raw_images"],  # the shards' image URLs fetched first (assets/fetch.py)
)
def raw_documents(context: dg.AssetExecutionContext, settings: NyxSettings, dvc: DvcResource) -> dg.MaterializeResult:
    """The raw web documents (OBELICS shards: interleaved `texts`/`images`) of `data/raw`, their remote image URLs
    already fetched into the image store by `raw_images`.

    Every shard is read and every image fully decoded; documents with an undecodable image are dropped and kept,
    with the reason, under `data/rejects/raw_documents`. Valid documents go to `data/documents/<shard>.jsonl`.
    A shard that cannot be read at all (a truncated or corrupt Parquet file) is rejected by name, with the reader's
    error (a warning, `rejected_shards` in the metadata, `data/rejects/raw_documents/<shard>.jsonl`), and gets
    no documents file: the other shards are ingested, and that shard's downstream partitions fail saying why. The
    run fails only when no shard could be read. The data version is the md5 DVC gives `data/raw`.

    A shard that was good once and is rejected now has what was made from its earlier version withdrawn: its
    `data/documents`, `data/chunks` and `data/synthetic_qa` files are removed (a warning per file, the list
    in `withdrawn_files`, in its `rejected_shards` entry and in its reject record), so `nyxqa` and everything
    else that reads those folders no longer sees that shard's records.
    """
    from nyx.data.images import ImageConfig
    from nyx.data.ingest import ingest_raw

    paths = settings.paths
    profile = settings.load_profile()
    if not paths.raw.is_dir():
        raise dg.Failure(
            f"no raw data folder at {paths.raw}: run `python -m nyx.data.sample --out {paths.raw}` "
            "for the bundled sample, or put OBELICS shards there"
        )
    stats = ingest_raw(
        paths.raw,
        paths.documents,
        paths.rejects / "raw_documents",
        ImageConfig(max_pixels=profile.images.max_pixels, min_pixels=profile.images.min_pixels),
        derived_dirs=[paths.chunks, paths.synthetic_qa],
    )
    if not stats:
        raise dg.Failure(f"no OBELICS shards (*.parquet, *.jsonl) in {paths.raw}")
    bad_shards = [
        {"shard": s.shard, "file": s.file, "error": s.error, "withdrawn": s.withdrawn}
        for s in stats
        if s.error is not None
    ]
    for b in bad_shards:
        context.log.warning(f"shard {b['shard']} ({b['file']}) rejected, not ingested: {b['error']}")
        for f in b["withdrawn"]:
            context.log.warning(
                f"shard {b['shard']}: withdrew {f}, made from an earlier version of the shard "
                "that was good (nothing downstream reads it any more)"
            )
    withdrawn = [f for b in bad_shards for f in b["withdrawn"]]
    if len(bad_shards) == len(stats):
        raise dg.Failure(
            f"every shard in {paths.raw} was rejected: " + "; ".join(f"{b['file']}: {b['error']}" for b in bad_shards),
            metadata={
                "rejected_shards": dg.MetadataValue.json(bad_shards),
                "withdrawn_files": dg.MetadataValue.json(withdrawn),
            },
        )
    md5 = dvc.md5(paths.raw)
    rejected = sum(s.rejected for s in stats)
    context.log.info(
        f"{len(stats)} shards ({len(bad_shards)} rejected), {sum(s.documents for s in stats)} documents, "
        f"{rejected} rejected"
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(md5),
        metadata={
            "dvc_md5": md5,
            "shards": len(stats),
            "rejected_shard_count": len(bad_shards),
            "rejected_shards": dg.MetadataValue.json(bad_shards),
            "withdrawn_files": dg.MetadataValue.json(withdrawn),
            "documents": sum(s.documents for s in stats),
            "images": sum(s.images for s in stats),
            "text_only_documents": sum(s.text_only for s in stats),
            "multi_image_documents": sum(s.multi_image for s in stats),
            "rejected": rejected,
            "rejects_dir": dg.MetadataValue.path(str(paths.rejects / "raw_documents")),
            "per_shard": dg.MetadataValue.md(_table(stats)),
        },
    )


def _table(stats) -> str:
    rows = ["| shard | documents | images | rejected | skipped (unchanged) |", "|---|---|---|---|---|"]
    rows += [
        f"| {s.shard} | {s.documents} | {s.images} | "
        f"{s.rejected if s.error is None else 'whole shard: ' + s.error.replace('|', '/')} | "
        f"{s.skipped_unchanged} |"
        for s in stats
    ]
    return "\n".join(rows)


@dg.asset_check(
    asset=raw_documents, blocking=True, description="ids unique, every document non-empty, every image resolvable"
)
def raw_documents_valid(settings: NyxSettings) -> dg.AssetCheckResult:
    import great_expectations.expectations as gxe
    import pandas as pd

    from nyx.data.records import image_resolves, iter_jsonl

    rows = []
    for f in sorted(settings.paths.documents.glob("*.jsonl")):
        for r in iter_jsonl(f):
            rows.append(
                {
                    "id": r.id,
                    "n_parts": len(r.content),
                    "n_images": r.n_images,
                    "images_resolve": all(image_resolves(ref) for ref in r.images),
                }
            )
    df = pd.DataFrame(rows, columns=["id", "n_parts", "n_images", "images_resolve"])
    return gx_check(
        df,
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeBetween(column="n_parts", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="images_resolve", value_set=[True]),
        ],
        "raw_documents",
        extra_metadata={"documents": len(df), "images": int(df["n_images"].sum()) if len(df) else 0},
    )
