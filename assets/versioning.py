"""``data_snapshot``: version ``data/`` with DVC after the data assets, and push it to the remote."""

import dagster as dg

from orchestration.resources import DvcResource, NyxSettings

DATA_ASSETS = ["raw_documents", "corpus_chunks", "synthetic_qa", "nyxqa", "hard_negatives"]


@dg.asset(
    group_name="versioning",
    kinds={"dvc"},
    deps=[dg.AssetKey(k) for k in DATA_ASSETS],
    pool="dvc",
    code_version="snapshot-v1",
)
def data_snapshot(context: dg.AssetExecutionContext, settings: NyxSettings, dvc: DvcResource) -> dg.MaterializeResult:
    """``dvc add data`` and ``dvc push`` to the configured remote, after the data assets.

    The md5 written to ``data.dvc`` is this asset's data version and is tagged on every MLflow training run; to restore
    an older data version: ``git checkout REV -- data.dvc && dvc checkout data.dvc``.
    """
    repo = dvc.dvc()
    repo.ensure_init()
    # resolve both: NYX_DATA_DIR may be relative or reach the repository through a symlink
    target, root = settings.paths.root.resolve(), repo.repo_dir.resolve()
    rel = target.relative_to(root) if target.is_relative_to(root) else None
    if rel is None:
        raise dg.Failure(f"data folder {target} is outside the DVC repository {root}")
    snap = repo.snapshot(str(rel))  # also completes a push that was killed, and removes its partial files
    md5 = snap["md5"]
    for path in snap["removed_temps"]:
        context.log.warning(f"removed a partial file left by a killed dvc command: {path}")
    status = repo.status(str(rel))
    context.log.info(f"DVC snapshot {md5} of {rel} pushed to {dvc.remote_url}; the remote holds all of it")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(md5),
        metadata={"dvc_md5": md5, "dvc_file": f"{rel}.dvc", "remote": dvc.remote_url,
                  "status_clean": not status, "remote_clean": snap["remote_clean"],
                  "removed_partial_files": len(snap["removed_temps"]),
                  "restore": dg.MetadataValue.md(f"`git checkout REV -- {rel}.dvc && dvc checkout {rel}.dvc`")},
    )
