"""Data versions with DVC: ``data_snapshot`` versions ``data/`` after the data assets (what Stage 1 trains on), and
``feedback_snapshot`` versions it again after ``feedback_preferences`` (adding the feedback triples Stage 2 trains on).

Both run ``dvc add data`` + ``dvc push`` over the same ``data.dvc``: the last snapshot is the data version of the
workspace, and ``data.dvc`` names under ``meta.nyx_snapshots`` the md5 each snapshot asset took, so the version a
Stage-1 run was tagged with (``data_snapshot``'s) stays findable from the committed file. What is written into
``data/`` later, or on every run, and is read by no training (rejects logs, reader caches:
:attr:`nyx.paths.DataPaths.unversioned`) is listed in the repository's ``.dvcignore``: ``dvc status data.dvc`` is
clean after a whole run, and ``git checkout REV -- data.dvc && dvc checkout data.dvc`` restores without ``--force``.
"""

import dagster as dg

from orchestration.resources import DvcResource, NyxSettings

DATA_ASSETS = ["raw_documents", "corpus_chunks", "synthetic_qa", "nyxqa", "hard_negatives", "training_sources"]


def snapshot(
    context: dg.AssetExecutionContext, settings: NyxSettings, dvc: DvcResource, *, keep: tuple[str, ...] = ()
) -> dg.MaterializeResult:
    """``dvc add`` + ``dvc push`` of the data folder, recorded as this asset's snapshot in ``data.dvc``; the md5 is
    the asset's data version."""
    label = context.asset_key.to_user_string()
    repo = dvc.dvc()
    repo.ensure_init()
    # resolve both: NYX_DATA_DIR may be relative or reach the repository through a symlink
    target, root = settings.paths.root.resolve(), repo.repo_dir.resolve()
    rel = target.relative_to(root) if target.is_relative_to(root) else None
    if rel is None:
        raise dg.Failure(f"data folder {target} is outside the DVC repository {root}")
    unversioned = [(rel / p.relative_to(settings.paths.root)) for p in settings.paths.unversioned]
    # also completes a push that was killed, and removes its partial files
    snap = repo.snapshot(str(rel), label=label, keep=keep, ignore=unversioned)
    md5 = snap["md5"]
    for path in snap["removed_temps"]:
        context.log.warning(f"removed a partial file left by a killed dvc command: {path}")
    if snap["ignore_added"]:
        context.log.info(f"added to {root / '.dvcignore'} (not part of the data version): {snap['ignore_added']}")
    status = repo.status(str(rel))
    if status:
        context.log.warning(f"`dvc status {rel}.dvc` right after `dvc add`: {status}")
    context.log.info(f"DVC snapshot {md5} of {rel} pushed to {dvc.remote_url}; the remote holds all of it")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(md5),
        metadata={
            "dvc_md5": md5,
            "dvc_file": f"{rel}.dvc",
            "remote": dvc.remote_url,
            "status_clean": not status,
            "remote_clean": snap["remote_clean"],
            "removed_partial_files": len(snap["removed_temps"]),
            "snapshots": dg.MetadataValue.json(snap["snapshots"]),
            "not_versioned": dg.MetadataValue.json([f"{p.as_posix()}/" for p in unversioned]),
            "restore": dg.MetadataValue.md(f"`git checkout REV -- {rel}.dvc && dvc checkout {rel}.dvc`"),
        },
    )


@dg.asset(
    group_name="versioning",
    kinds={"dvc"},
    deps=list(DATA_ASSETS),
    pool="dvc",
    code_version="snapshot-v2",
)
def data_snapshot(context: dg.AssetExecutionContext, settings: NyxSettings, dvc: DvcResource) -> dg.MaterializeResult:
    """`dvc add data` and `dvc push` to the configured remote, after the data assets: the data Stage 1 trains on.

    The md5 written to `data.dvc` is this asset's data version and the `dvc.data_md5` tag of the Stage-1 run;
    `feedback_snapshot` versions the folder again after the feedback triples are written. Rejects and reader caches
    are not versioned (`.dvcignore`). To restore an older data version:
    `git checkout REV -- data.dvc && dvc checkout data.dvc`.
    """
    return snapshot(context, settings, dvc)


@dg.asset(
    group_name="feedback",
    kinds={"dvc"},
    deps=["feedback_preferences"],
    pool="dvc",
    code_version="snapshot-v2",
)
def feedback_snapshot(
    context: dg.AssetExecutionContext, settings: NyxSettings, dvc: DvcResource
) -> dg.MaterializeResult:
    """`dvc add data` and `dvc push` again after `feedback_preferences` (its checks passed): the version with
    the feedback triples (`data/feedback`) Stage 2 trains on, and the `dvc.data_md5` tag of the Stage-2 run.

    `data.dvc` keeps `data_snapshot`'s md5 beside this one (`meta.nyx_snapshots`). To restore:
    `git checkout REV -- data.dvc && dvc checkout data.dvc`.
    """
    return snapshot(context, settings, dvc, keep=("data_snapshot",))
