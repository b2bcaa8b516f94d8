"""The ``nyx`` command line: index a corpus, search it, evaluate it.

Exit codes (stable, for scripts):

* ``0`` — success (some input records may have been rejected: they are counted and written to a
  ``rejects.jsonl`` file next to the output, and the rest of the batch went on);
* ``1`` — the command line was well-formed but the input was not usable: a missing file or folder, an index
  that does not fit the request (e.g. a dimension above the index's), no usable record at all, a model that
  cannot be loaded;
* ``2`` — usage error: unknown option, missing argument, a value that does not parse.

Other areas add their command groups here with ``app.add_typer(their_app, name="...")`` (see the bottom of
this module); shared helpers for them are :func:`fail` and :func:`user_errors`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nyx.data.records import Part, Record, iter_jsonl
from nyx.data.rejects import RecordError, RejectLog

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="nyx",
    help="Nyx: mixed-modal retrieval for universal RAG. Index a corpus, search it, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class RetrieverName(str, Enum):
    nyx = "nyx"
    bm25 = "bm25"
    minilm = "minilm"


class IndexType(str, Enum):
    flat = "flat"
    hnsw = "hnsw"
    ivf = "ivf"
    ivfpq = "ivfpq"


class StoreDtypeName(str, Enum):
    float32 = "float32"
    float16 = "float16"


class QuantizeName(str, Enum):
    none = "none"
    int8 = "int8"
    binary = "binary"


# ------------------------------------------------------------------------------------------------ helpers


def echo_err(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    """Print ``error: message`` to stderr and return the exit to raise (``raise fail(...)``)."""
    echo_err(f"error: {message}")
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input problems into ``error: ...`` and exit code 1 (set NYX_DEBUG=1 for the traceback)."""
    from nyx.index import IndexMismatchError

    try:
        yield
    except (FileNotFoundError, NotADirectoryError, IndexMismatchError, RecordError, ValueError, OSError) as e:
        if os.environ.get("NYX_DEBUG"):
            raise
        raise fail(str(e) or type(e).__name__) from None


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def rejects_path_for(output: Path) -> Path:
    """Where the rejected records of a command that writes ``output`` go: beside (or inside) it."""
    if output.suffix == "" or output.is_dir():
        return output / "rejects.jsonl"
    return output.with_name(f"{output.stem}.rejects.jsonl")


def report_rejects(rejects: RejectLog, path: Path) -> Path | None:
    """Write rejected records (if any) and say so on stderr."""
    if not rejects.count:
        return None
    rejects.write(path)
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(rejects.reasons().items()))
    echo_err(f"warning: {rejects.count} record(s) rejected ({reasons}); details in {path}")
    return path


def parse_dims(value: str | None) -> list[int] | None:
    """``"2048,1024,512"`` -> ``[2048, 1024, 512]`` (a usage error if it does not parse)."""
    if value is None or not value.strip():
        return None
    try:
        dims = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise typer.BadParameter(f"dimensions must be positive integers, got {value!r}")
    return list(dict.fromkeys(dims))


def corpus_file(path: Path) -> Path:
    """A JSONL file, or a BEIR folder's ``corpus.jsonl``."""
    from nyx.data.beir import CORPUS_FILE

    if path.is_dir():
        path = path / CORPUS_FILE
    if not path.is_file():
        raise fail(f"corpus not found: {path}")
    return path


def open_retriever(index_dir: Path):
    from nyx.retrieval import RETRIEVER_MANIFEST, load_retriever

    if not (index_dir / RETRIEVER_MANIFEST).is_file():
        raise fail(f"{index_dir} is not a Nyx index folder (no {RETRIEVER_MANIFEST}); create one with `nyx index`")
    with user_errors():
        return load_retriever(index_dir)


def check_search_dims(retriever, dims: list[int]) -> None:
    if dims and not retriever.dims:
        raise fail(f"the {retriever.name} retriever has no embedding dimensions; drop --dim/--dims")
    for d in dims:
        if d > max(retriever.dims):
            raise fail(
                f"dimension {d} exceeds the index dimension {max(retriever.dims)} "
                f"(available Matryoshka dims: {retriever.dims})"
            )


# ------------------------------------------------------------------------------------------------ commands

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


@app.command("ingest")
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

    from nyx.data.sources import IngestStats, discover, ingest_sources, write_corpus_folder, write_obelics_shard
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


@app.command("convert")
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


@app.command("index")
def index_cmd(
    corpus: Annotated[
        Path, typer.Argument(help="Corpus JSONL (Nyx part format or BEIR text), or a BEIR folder.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the index into.", show_default=False)],
    retriever: Annotated[RetrieverName, typer.Option(help="Which retriever to build.")] = RetrieverName.nyx,
    model: Annotated[
        str | None, typer.Option(help="Nyx only: 'tiny', 'paper', a local model folder or a hub id [default: tiny].")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="Nyx only: a LoRA adapter folder.")] = None,
    dim: Annotated[
        int | None, typer.Option(min=1, help="Dense only: store this Matryoshka prefix instead of the full embedding.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per encoder forward pass (dense).")] = 16,
    index_type: Annotated[
        IndexType,
        typer.Option(
            help="FAISS index: exact flat, or hnsw/ivf/ivfpq for large corpora (recall@10 against flat is measured "
            "on build and kept in the manifest)."
        ),
    ] = IndexType.flat,
    approximate_from: Annotated[
        int | None, typer.Option(min=1, help="Use --index-type only from this many documents; flat below.")
    ] = None,
    store_dtype: Annotated[
        StoreDtypeName,
        typer.Option(help="Dense: keep vectors as float32, or float16 (half the memory; scores change by ~1e-3)."),
    ] = StoreDtypeName.float32,
    quantize: Annotated[
        QuantizeName,
        typer.Option(
            help="Dense, flat index: search int8 codes (1/4 of the float32 index) or sign bits (1/32, Hamming search "
            "then float rescoring); recall@10 against exact search is measured on build."
        ),
    ] = QuantizeName.none,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr (dense).")] = True,
) -> None:
    """Index CORPUS into a retriever folder (OUT) that `nyx search` and `nyx evaluate` read.

    Unusable records (malformed JSON, unknown part types, undecodable images, duplicate ids) are skipped, counted
    and written to OUT/rejects.jsonl.
    """
    from nyx.index import IndexConfig
    from nyx.retrieval import RETRIEVER_MANIFEST, BM25Retriever, DenseConfig, MiniLMRetriever, NyxRetriever

    if retriever is not RetrieverName.nyx and (model is not None or adapter is not None):
        raise typer.BadParameter("--model/--adapter apply to the nyx retriever only", param_hint="--model")
    if retriever is RetrieverName.bm25 and dim is not None:
        raise typer.BadParameter("the bm25 retriever has no embedding dimension", param_hint="--dim")
    path = corpus_file(corpus)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / RETRIEVER_MANIFEST).is_file())):
        raise fail(f"refusing to overwrite {out}: it exists and is not a Nyx index folder")
    if adapter is not None and not adapter.is_dir():
        raise fail(f"adapter folder not found: {adapter}")

    if approximate_from is not None and index_type is IndexType.flat:
        raise typer.BadParameter(
            "--approximate-from needs an approximate --index-type (hnsw, ivf, ivfpq)", param_hint="--approximate-from"
        )
    if quantize is not QuantizeName.none and (retriever is RetrieverName.bm25 or index_type is not IndexType.flat):
        raise typer.BadParameter(
            "--quantize applies to a dense retriever's flat index (--index-type flat)", param_hint="--quantize"
        )
    dense = DenseConfig(
        batch_size=batch_size,
        index_dim=dim,
        index=IndexConfig(
            index_type=index_type.value,
            approximate_from=approximate_from,
            store_dtype=store_dtype.value,
            quantize=quantize.value,
        ),
    )
    if retriever is RetrieverName.bm25:
        r = BM25Retriever()
    elif retriever is RetrieverName.minilm:
        r = MiniLMRetriever(config=dense)
    else:
        r = NyxRetriever(model=model or "tiny", adapter_path=adapter, config=dense)

    rejects = RejectLog(stage="index")
    t0 = time.perf_counter()
    with user_errors():
        n = (
            r.index(iter_jsonl(path, rejects), rejects=rejects)
            if retriever is RetrieverName.bm25
            else r.index(iter_jsonl(path, rejects), rejects=rejects, progress=progress)
        )
        if n == 0:
            report_rejects(rejects, out.with_name(f"{out.name}.rejects.jsonl"))
            raise fail(f"no usable documents in {path}")
        r.save(out)
    rejects_file = report_rejects(rejects, out / "rejects.jsonl")
    seconds = time.perf_counter() - t0
    inputs = dict(r.last_encode.inputs) if getattr(r, "last_encode", None) is not None else {}
    fitted = ""
    if inputs.get("records_with_shrunk_images") or inputs.get("records_with_dropped_images"):
        fitted = (
            f"; {inputs.get('records_with_shrunk_images', 0)} record(s) had images shrunk to fit the model's "
            f"context, {inputs.get('records_with_dropped_images', 0)} had images dropped"
        )
    echo_err(f"indexed {n} documents with {r.name} into {out} in {seconds:.1f} s{fitted}")
    print_json(
        {
            "out": str(out),
            **r.describe(),
            "rejected": rejects.count,
            "inputs": inputs,
            "rejects_file": str(rejects_file) if rejects_file else None,
            "seconds": round(seconds, 3),
        }
    )


@app.command("search")
def search_cmd(
    index_dir: Annotated[Path, typer.Argument(help="A folder written by `nyx index`.", show_default=False)],
    text: Annotated[str | None, typer.Option("--text", "-t", help="Query text.")] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", "-i", help="Query image (repeat for several; placed after the text, in order)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Number of results.")] = 10,
    dim: Annotated[int | None, typer.Option(min=1, help="Matryoshka dimension to search at (dense).")] = None,
) -> None:
    """Search an index with one mixed-modal query; prints the ranked documents as JSON."""
    images = list(image or [])
    if (text is None or not text.strip()) and not images:
        raise typer.BadParameter("give --text and/or at least one --image", param_hint="--text")
    for p in images:
        if not p.is_file():
            raise fail(f"query image not found: {p}")
    r = open_retriever(index_dir)
    if dim is not None:
        check_search_dims(r, [dim])
    parts = ([Part.of_text(text)] if text and text.strip() else []) + [Part.of_image(p.resolve()) for p in images]
    query = Record(id="query", content=parts)
    with user_errors():
        r.load_models()
        t0 = time.perf_counter()
        run = r.search([query], k=k, dim=dim)
    ms = (time.perf_counter() - t0) * 1000
    ranked = sorted(run.get("query", {}).items(), key=lambda kv: -kv[1])
    print_json(
        {
            "query": {"text": text, "images": [str(p) for p in images]},
            "retriever": r.name,
            "dim": dim if dim is not None else (max(r.dims) if r.dims else None),
            "latency_ms": round(ms, 3),
            "results": [{"rank": i, "id": d, "score": s} for i, (d, s) in enumerate(ranked, start=1)],
        }
    )


@app.command("evaluate")
def evaluate_cmd(
    index_dir: Annotated[Path, typer.Argument(help="A folder written by `nyx index`.", show_default=False)],
    queries: Annotated[Path, typer.Option(help="Queries JSONL.", show_default=False)],
    qrels: Annotated[Path, typer.Option(help="BEIR qrels TSV (query-id, corpus-id, score).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Metrics JSON to write.", show_default=False)],
    dims: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated Matryoshka dims, e.g. 2048,1024,512,256 [default: the index's dim and its "
            "Matryoshka dims]."
        ),
    ] = None,
    run_out: Annotated[
        Path | None,
        typer.Option(
            help="Write the TREC run here (with several dims, the first dim's run; the others get a "
            ".d<dim> suffix before the extension)."
        ),
    ] = None,
    depth: Annotated[int, typer.Option(min=1, help="Documents retrieved per query.")] = 100,
) -> None:
    """Score an index on judged queries: Recall@1/5/10/20, nDCG@10, MRR@10 per Matryoshka dimension.

    Only queries with judgements in QRELS are searched; judged queries missing from QUERIES score 0. Rejected
    queries and qrels lines are written beside OUT (<out>.rejects.jsonl).
    """
    from rich.console import Console
    from rich.table import Table

    from nyx.data.beir import read_qrels, write_trec_run
    from nyx.eval.retrieval import evaluate_at_dims, metric_names
    from nyx.utils.io import write_json

    dim_list = parse_dims(dims)
    for p, what in ((queries, "queries file"), (qrels, "qrels file")):
        if not p.is_file():
            raise fail(f"{what} not found: {p}")
    r = open_retriever(index_dir)
    check_search_dims(r, dim_list or [])
    rejects = RejectLog(stage="evaluate")
    with user_errors():
        judgements = read_qrels(qrels, rejects)
        all_queries = list(iter_jsonl(queries, rejects))
    judged = [q for q in all_queries if q.id in judgements]
    if not judged:
        report_rejects(rejects, rejects_path_for(out))
        raise fail(f"none of the {len(all_queries)} queries in {queries} has judgements in {qrels}")
    with user_errors():
        evals = evaluate_at_dims(r, judged, judgements, dims=dim_list, k=depth, rejects=rejects)
    rejects_file = report_rejects(rejects, rejects_path_for(out))

    run_files: dict[str, str] = {}
    if run_out is not None:
        for i, e in enumerate(evals):
            target = run_out if i == 0 else run_out.with_name(f"{run_out.stem}.d{e.dim}{run_out.suffix}")
            write_trec_run(e.run, target, tag=f"nyx-{r.name}" + (f"-{e.dim}" if e.dim else ""))
            run_files[str(e.dim)] = str(target)

    result = {
        "index": str(index_dir),
        "retriever": r.describe(),
        "queries": str(queries),
        "qrels": str(qrels),
        "n_queries_read": len(all_queries),
        "n_queries_judged": len(judged),
        "n_queries_without_judgements": len(all_queries) - len(judged),
        "rejected": rejects.count,
        "rejects_file": str(rejects_file) if rejects_file else None,
        "runs": run_files,
        "rows": [e.row() for e in evals],
        "per_query": {str(e.dim): e.metrics.per_query for e in evals},
    }
    write_json(result, out)

    table = Table(title=f"{r.name} on {len(judged)} judged queries")
    names = metric_names()
    for col in ["dim", *names, "search ms/q"]:
        table.add_column(col, justify="right")
    for row in result["rows"]:
        table.add_row(str(row["dim"] or "-"), *(f"{row[n]:.4f}" for n in names), f"{row['search_ms_per_query']:.3f}")
    Console(file=sys.stdout, width=120).print(table)
    echo_err(f"wrote {out}")


@app.command("report")
def report_cmd(
    indexes: Annotated[
        list[str],
        typer.Argument(
            help="Index folders written by `nyx index`, each optionally named: NAME=DIR (default name: the folder's).",
            show_default=False,
        ),
    ],
    queries: Annotated[
        Path, typer.Option(help="Queries JSONL (NyxQA queries carry choices and answers).", show_default=False)
    ],
    qrels: Annotated[Path, typer.Option(help="BEIR qrels TSV.", show_default=False)],
    corpus: Annotated[
        Path, typer.Option(help="Corpus JSONL the indexes were built from (the reader reads it).", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.md, report.json and the plots.", show_default=False)
    ],
    reader: Annotated[
        str, typer.Option(help="'minilm' (offline stand-in reader) or 'none' (retrieval only).")
    ] = "minilm",
    top_n: Annotated[int, typer.Option(min=1, help="Documents the reader sees.")] = 1,
) -> None:
    """Render the evaluation report (the `eval_report` asset's) for any indexes and judged queries: retrieval at
    every Matryoshka dimension, RAG answer metrics with oracle/no-retrieval bounds, a modality breakdown, plots."""
    from nyx.data.beir import read_qrels
    from nyx.eval.report import evaluate_retrievers, write_report

    for p, what in ((queries, "queries file"), (qrels, "qrels file"), (corpus, "corpus file")):
        if not p.is_file():
            raise fail(f"{what} not found: {p}")
    if reader not in ("minilm", "none"):
        raise fail(f"unknown reader {reader!r}: use 'minilm' or 'none'", code=EXIT_USAGE)
    retrievers = {}
    for spec in indexes:
        name, _, folder = spec.rpartition("=")
        folder_path = Path(folder)
        retrievers[name or folder_path.name] = open_retriever(folder_path)
    rejects = RejectLog(stage="report")
    with user_errors():
        docs = {r.id: r for r in iter_jsonl(corpus, rejects)}
        qs = list(iter_jsonl(queries, rejects))
        judged = read_qrels(qrels, rejects)
    if not qs or not docs:
        raise fail("no usable queries or documents (see the rejects file)")
    rd = None
    if reader == "minilm":
        from nyx.feedback.readers import MiniLMOptionReader

        rd = MiniLMOptionReader()
    with user_errors():
        report = evaluate_retrievers(
            retrievers,
            qs,
            judged,
            docs,
            reader=rd,
            top_n=top_n,
            meta={"queries_file": str(queries), "corpus_file": str(corpus)},
        )
        files = write_report(report, out)
    if rejects.count:
        rejects.write(out / "rejects.jsonl")
        echo_err(f"{rejects.count} rejected records written to {out / 'rejects.jsonl'}")
    print_json({k: str(v) for k, v in files.items()})


@app.command("serve")
def serve_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="A folder written by `nyx index`, or a registry URI: models:/NAME@ALIAS (followed when it moves) or "
            "models:/NAME/VERSION.",
            show_default=False,
        ),
    ],
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    host: Annotated[
        str,
        typer.Option(help="Address to bind; anything but 127.0.0.1 exposes the API to the network (set NYX_API_KEY)."),
    ] = "127.0.0.1",
    batch_window_ms: Annotated[
        float, typer.Option(min=0, help="Collect concurrent queries this long into one encoder call (0: no batching).")
    ] = 5.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most queries per encoder call.")] = 32,
    poll_seconds: Annotated[
        float,
        typer.Option(
            min=0, help="Registry alias sources: check the alias this often and swap in a new version (0: never)."
        ),
    ] = 30.0,
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Corpus JSONL or BEIR folder the index was built from, for return_documents (registry sources: "
            "used when the version has no nyx.corpus_path tag)."
        ),
    ] = None,
    max_request_bytes: Annotated[int, typer.Option(min=1, help="Largest request body.")] = 16 * 1024 * 1024,
    max_image_bytes: Annotated[int, typer.Option(min=1, help="Largest decoded query image.")] = 10 * 1024 * 1024,
    max_image_pixels: Annotated[int, typer.Option(min=1, help="Most pixels in a query image.")] = 16_000_000,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 1000,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI", help="MLflow registry for models:/ sources (default: sqlite under mlflow/)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a search API over HTTP (POST /search, POST /embed, GET /health, docs at /docs) for a model and its
    index. With the environment variable NYX_API_KEY set, every endpoint but /health needs
    'Authorization: Bearer <key>'. See docs/serving.md."""
    import logging

    import uvicorn

    from nyx.paths import REPO_ROOT
    from nyx.serving.server import API_KEY_ENV, REGISTRY_PREFIX, ServeError, ServeSettings, create_app

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("nyx").setLevel(level)  # model loads, alias moves and swaps; other libraries stay quiet
    if corpus is not None and not corpus.exists():
        raise fail(f"corpus not found: {corpus}")
    if source.startswith(REGISTRY_PREFIX) and tracking_uri is None:
        tracking_uri = f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}"
    settings = ServeSettings(
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        poll_seconds=poll_seconds,
        max_request_bytes=max_request_bytes,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
        max_k=max_k,
    )
    try:
        server_app = create_app(source, corpus=corpus, settings=settings, tracking_uri=tracking_uri)
    except (ServeError, OSError, ValueError) as e:
        if os.environ.get("NYX_DEBUG"):
            raise
        raise fail(str(e) or type(e).__name__) from None
    if not os.environ.get(API_KEY_ENV) and host not in ("127.0.0.1", "localhost", "::1"):
        echo_err(f"warning: serving on {host} without {API_KEY_ENV}: anyone who can reach port {port} can query")
    uvicorn.run(server_app, host=host, port=port, log_level=log_level.lower(), access_log=level == "DEBUG")


# ------------------------------------------------------------------------------------------------ command groups
# Other areas register their command groups here, e.g.:
#     from nyx.synth.cli import app as synth_app
#     app.add_typer(synth_app, name="synth", help="Build NyxQA from raw documents.")
from nyx.cli_registry import app as registry_app  # noqa: E402

app.add_typer(registry_app, name="registry")


def main() -> None:  # pragma: no cover - `python -m nyx.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
