"""``nyx index``: index a corpus into a retriever folder (nyx, minilm or bm25; the FAISS index type, the stored
dtype and quantisation)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from nyx.cli.common import corpus_file, echo_err, fail, print_json, report_rejects, user_errors
from nyx.data.records import iter_jsonl
from nyx.data.rejects import RejectLog


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
    from nyx.retrieval import (
        RETRIEVER_MANIFEST,
        BM25Retriever,
        DenseConfig,
        DenseRetriever,
        MiniLMRetriever,
        NyxRetriever,
    )

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
    r: BM25Retriever | DenseRetriever
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
            if isinstance(r, BM25Retriever)  # the bm25 retriever
            else r.index(iter_jsonl(path, rejects), rejects=rejects, progress=progress)
        )
        if n == 0:
            report_rejects(rejects, out.with_name(f"{out.name}.rejects.jsonl"))
            raise fail(f"no usable documents in {path}")
        r.save(out)
    rejects_file = report_rejects(rejects, out / "rejects.jsonl")
    seconds = time.perf_counter() - t0
    last_encode = getattr(r, "last_encode", None)
    inputs = dict(last_encode.inputs) if last_encode is not None else {}
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
