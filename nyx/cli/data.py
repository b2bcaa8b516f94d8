"""``nyx ingest`` and ``nyx convert``: documents, and public benchmarks in their published files, into corpora and
BEIR folders that the other commands read."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from nyx.cli.common import echo_err, fail, print_json, report_rejects, user_errors
from nyx.data.rejects import RejectLog

_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_INGEST_WRITES = {"corpus.jsonl", "rejects.jsonl", "images"}  # what an `nyx ingest` folder holds


def _ingest_image_config(max_pixels: int | None):
    """The pixel budget: the profile's ``images`` (NYX_PROFILE, NYX_PROFILE_OVERRIDES), ``--max-pixels`` over it."""
    from nyx.data.images import ImageConfig
    from nyx.settings import load_profile

    try:
        overrides = json.loads(os.environ.get("NYX_PROFILE_OVERRIDES") or "{}")
        images = load_profile(os.environ.get("NYX_PROFILE", "sample"), overrides).images
    except (ValueError, TypeError) as e:
        raise fail(f"cannot read the profile's image settings: {e}") from None
    budget = max_pixels if max_pixels is not None else images.max_pixels
    try:
        return ImageConfig(max_pixels=budget, min_pixels=min(images.min_pixels, budget))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--max-pixels") from None


def ingest_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="PDFs, images (with optional sidecar captions x.txt), JSONL records, BEIR folders, OBELICS shards "
            "(.parquet/.jsonl), or folders of any of these.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder to write corpus.jsonl (and images/, rejects.jsonl) into.")
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(min=784, help="Pixel budget of a rendered PDF page (default: the profile's images.max_pixels)."),
    ] = None,
    as_shard: Annotated[
        str | None,
        typer.Option(
            help="Write the records as an OBELICS JSONL shard NAME.jsonl into the raw folder (with or without --out), "
            "where the shard sensor and raw_documents pick it up."
        ),
    ] = None,
    raw_dir: Annotated[
        Path | None,
        typer.Option(help="The pipeline's raw shard folder for --as-shard (default: data/raw, or $NYX_DATA_DIR/raw)."),
    ] = None,
    replace_shard: Annotated[bool, typer.Option(help="Overwrite an existing shard of that name.")] = False,
) -> None:
    """Turn documents into a corpus (OUT/corpus.jsonl, images under OUT/images) that `nyx index` reads.

    A PDF gives one record per page, id <file stem>__p<NNN>: the page rendered within the pixel budget, then its
    text layer in reading order (pages without one, scans and slides, are image-only records). Encrypted, corrupt,
    truncated and empty PDFs, broken images and records, and ids an earlier input already gave are skipped, counted
    and written to OUT/rejects.jsonl; one bad file never stops the rest. Prints a JSON summary.
    """
    import tempfile

    from nyx.data.ingest_writers import write_corpus_folder, write_obelics_shard
    from nyx.data.sources import IngestStats, discover, ingest_sources
    from nyx.utils.io import atomic_dir

    if out is None and as_shard is None:
        raise typer.BadParameter("give --out DIR and/or --as-shard NAME", param_hint="--out")
    if as_shard is not None and not _SHARD_NAME.match(as_shard):
        raise typer.BadParameter(
            f"shard name {as_shard!r}: letters, digits, '-' and '_' only (it becomes the "
            "partition key, the file name without extensions)",
            param_hint="--as-shard",
        )
    if raw_dir is not None and as_shard is None:
        raise typer.BadParameter("--raw-dir goes with --as-shard", param_hint="--raw-dir")
    cfg = _ingest_image_config(max_pixels)
    if out is not None and out.exists():
        if not out.is_dir():
            raise fail(f"refusing to overwrite {out}: it is not a folder")
        foreign = sorted(e.name for e in out.iterdir() if e.name not in _INGEST_WRITES)
        if foreign:
            raise fail(
                f"refusing to overwrite {out}: it holds files `nyx ingest` does not write "
                f"({', '.join(foreign[:5])}); choose an empty or new folder"
            )
    shard_file = shard_rejects = None
    if as_shard is not None:
        from nyx.data.ingest import shard_name
        from nyx.data.obelics import list_shards
        from nyx.paths import DataPaths

        raw = raw_dir if raw_dir is not None else DataPaths.at().raw
        shard_file = raw / f"{as_shard}.jsonl"
        shard_rejects = raw.parent / "rejects" / "ingest" / f"{as_shard}.jsonl"  # never a .jsonl inside raw/
        taken = [s.name for s in (list_shards(raw) if raw.is_dir() else []) if shard_name(s) == as_shard]
        if taken and not (replace_shard and taken == [shard_file.name]):
            raise fail(
                f"shard {as_shard!r} already exists in {raw} ({', '.join(taken)}); choose another name"
                + ("" if replace_shard else " or pass --replace-shard")
            )
    with user_errors():
        sources, skipped = discover(paths, exclude=[out] if out is not None else [])
    if not sources:
        raise fail(f"nothing to ingest in {', '.join(map(str, paths))}: no PDF, image, JSONL or Parquet file")

    rejects = RejectLog(stage="ingest")
    stats = IngestStats(skipped=skipped)
    t0 = time.perf_counter()

    class _NoRecords(Exception):
        pass

    def build(tmp: Path) -> int:
        records = ingest_sources(sources, tmp / "images", rejects, cfg, stats)
        if not records:
            raise _NoRecords
        if shard_file is not None:
            write_obelics_shard(records, shard_file.parent, as_shard)  # type: ignore[arg-type]
        if out is not None:
            write_corpus_folder(records, out, tmp)
        return len(records)

    try:
        with user_errors():
            if out is not None:
                with atomic_dir(out) as tmp:
                    n = build(tmp)
            else:
                with tempfile.TemporaryDirectory(prefix="nyx-ingest-") as tmp_name:
                    n = build(Path(tmp_name))
    except _NoRecords:
        if shard_rejects is not None:
            rejects.write(shard_rejects)
        report_rejects(rejects, out.with_name(f"{out.name}.rejects.jsonl") if out is not None else shard_rejects)  # type: ignore[arg-type]
        raise fail(f"no usable records in {', '.join(map(str, paths))}") from None
    if shard_rejects is not None:  # the shard's rejects where the pipeline keeps them (rewritten on every run)
        rejects.write(shard_rejects)
    rejects_file = report_rejects(rejects, out / "rejects.jsonl" if out is not None else shard_rejects)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    summary = stats.summary()
    echo_err(
        f"ingested {n} records ({summary['pages']} PDF pages, {summary['image_only_pages']} image-only) "
        f"from {len(sources)} input(s) in {seconds:.1f} s"
    )
    print_json(
        {
            "out": str(out) if out is not None else None,
            "corpus": str(out / "corpus.jsonl") if out is not None else None,
            "shard": str(shard_file) if shard_file is not None else None,
            **summary,
            "rejected": rejects.count,
            "rejects": dict(sorted(rejects.reasons().items())),
            "rejects_file": str(rejects_file) if rejects_file else None,
            "max_pixels": cfg.max_pixels,
            "seconds": round(seconds, 3),
        }
    )


def convert_cmd(
    fmt: Annotated[
        str,
        typer.Argument(
            metavar="FORMAT",
            help="mmqa, scienceqa, hotpotqa, 2wiki, musique, bamboogle or pagedoc.",
            show_default=False,
        ),
    ],
    src: Annotated[
        Path,
        typer.Argument(
            help="The set as its authors publish it: its file, or the folder holding its files (and images or PDFs).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="BEIR folder to write.", show_default=False)],
    split: Annotated[
        str | None,
        typer.Option(
            help="The split to convert where the set has several (default: its evaluation split: dev for MMQA, "
            "HotpotQA, 2Wiki and MuSiQue, test for ScienceQA)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Convert only the first N questions.")] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            min=784, help="pagedoc: pixel budget of a rendered page (default: the profile's images.max_pixels)."
        ),
    ] = None,
) -> None:
    """Turn a public benchmark, in its published files, into a BEIR folder that `nyx evaluate` and `nyx report` read.

    OUT holds corpus.jsonl, queries.jsonl (with the gold answers: every answer and alias, the options and correct
    index of multiple-choice sets, the modality group), qrels.tsv (also as qrels/<split>.tsv), images/ and
    convert.json. Malformed rows are skipped, counted and written to OUT/rejects.jsonl with their id and the reason;
    the rest goes on. Prints a JSON summary. See docs/operations.md, "Evaluating on public benchmarks".
    """
    from nyx.data.convert import CONVERTERS, ConvertError, convert
    from nyx.data.convert.common import OUTPUT_ENTRIES

    if fmt not in CONVERTERS:
        raise typer.BadParameter(f"unknown format {fmt!r}: one of {', '.join(CONVERTERS)}", param_hint="FORMAT")
    if max_pixels is not None and fmt != "pagedoc":
        raise typer.BadParameter("--max-pixels applies to pagedoc only", param_hint="--max-pixels")
    if not src.exists():
        raise fail(f"no such file or folder: {src}")
    if out.exists():
        if not out.is_dir():
            raise fail(f"refusing to overwrite {out}: it is not a folder")
        foreign = sorted(e.name for e in out.iterdir() if e.name not in OUTPUT_ENTRIES)
        if foreign:
            raise fail(
                f"refusing to overwrite {out}: it holds files `nyx convert` does not write "
                f"({', '.join(foreign[:5])}); choose an empty or new folder"
            )
    cfg = _ingest_image_config(max_pixels) if fmt == "pagedoc" else None
    t0 = time.perf_counter()
    with user_errors():
        try:
            result = convert(fmt, src, out, split=split, limit=limit, image_config=cfg)
        except ConvertError as e:
            raise fail(str(e)) from None
    if result.rejected:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(result.reject_reasons.items()))
        echo_err(f"warning: {result.rejected} row(s) rejected ({reasons}); details in {result.rejects_file}")
    for note in result.notes:
        echo_err(f"note: {note}")
    seconds = time.perf_counter() - t0
    echo_err(
        f"converted {result.queries} questions, {result.docs} documents, {result.qrels} judgements "
        f"({fmt}, split {result.split}) into {out} in {seconds:.1f} s"
    )
    print_json({**result.summary(), "seconds": round(seconds, 3)})
