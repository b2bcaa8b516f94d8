"""Each trained model's corpus embeddings and index: ``stage{1,2}_embeddings`` (per shard) -> ``stage{1,2}_index``.

The corpus is encoded once per model and kept in the embedding store (``work/embeddings``,
:mod:`nyx.index.store`): the per-shard assets fill it (a new shard encodes only its own chunks; a backfill over
shards fans out, one run per shard, with the ``gpu`` pool limiting concurrent encoders), and the index assets build
the FAISS index of the NyxQA corpus from it, so that feedback, the evaluation report and ``nyx serve`` read an index
instead of encoding again. Dev evaluation inside the training assets shares the same store. A retrained model has
new weights, hence a new store key: it encodes everything; an unchanged model on unchanged shards encodes nothing.
"""

import json

import dagster as dg

from assets.lib.profile import ProfileConfig, embedding_store, profile_for
from assets.training import finished_stage
from orchestration.partitions import SHARDS
from orchestration.resources import MlflowResource, NyxSettings

EMBEDDINGS_CODE_VERSION = "embeddings-v1"
INDEX_CODE_VERSION = "index-v1"


def stage_retriever(settings: NyxSettings, profile, stage: str):
    """``(state, retriever)`` of a finished stage: its final model, as dev evaluation loads it (same store key)."""
    from nyx.retrieval import NyxRetriever
    from nyx.train.stage import model_spec

    state = finished_stage(settings, stage)
    return state, NyxRetriever(
        model=model_spec(state), mlflow_model_version=state.model_version, config=profile.index.dense_config()
    )


def _embeddings_asset(stage: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{stage}_embeddings",
        group_name=stage,
        kinds={"pytorch", "numpy"},
        partitions_def=SHARDS,
        deps=[f"{stage}_checkpoint", "corpus_chunks"],
        pool="gpu",
        code_version=EMBEDDINGS_CODE_VERSION,
        automation_condition=dg.AutomationCondition.eager(),
        description=f"The {stage} model's embeddings of one shard's chunks, in the embedding store (encoded only "
        "where the store lacks them for this model).",
    )
    def _asset(context: dg.AssetExecutionContext, settings: NyxSettings, config: ProfileConfig) -> dg.MaterializeResult:
        from nyx.data.records import read_jsonl
        from nyx.data.rejects import RejectLog

        profile = profile_for(settings, config)
        paths = settings.paths
        state, retriever = stage_retriever(settings, profile, stage)
        store = embedding_store(settings, profile)
        meta: dict = {}
        for shard in context.partition_keys:
            src = paths.chunks / f"{shard}.jsonl"
            if not src.is_file():
                raise dg.Failure(f"shard {shard!r}: {src} is missing; materialise corpus_chunks first")
            rejects = RejectLog(stage=f"{stage}_embeddings")
            records = read_jsonl(src)
            stats = retriever.embed_into(records, store, source=shard, rejects=rejects, progress=context.log.info)
            rejects.write(paths.rejects / f"{stage}_embeddings" / f"{shard}.jsonl")
            context.log.info(f"{stage} embeddings of {shard}: {len(records)} chunks, {stats.to_dict()}")
            meta = {
                "chunks": len(records),
                **stats.to_dict(),
                "model_version": state.model_version or "",
                "store": dg.MetadataValue.path(str(store.model(retriever.embedding_identity()).folder)),
            }
        return dg.MaterializeResult(metadata=meta)

    return _asset


def _index_asset(stage: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{stage}_index",
        group_name=stage,
        kinds={"faiss"},
        deps=[f"{stage}_embeddings", "nyxqa"],
        code_version=INDEX_CODE_VERSION,
        automation_condition=dg.AutomationCondition.eager(),
        description=f"The {stage} model's index of the NyxQA corpus, built from the embedding store, saved under "
        f"work/indexes/{stage} and named on the model version (tag nyx.index_dir) for `nyx serve`.",
    )
    def _asset(
        context: dg.AssetExecutionContext, settings: NyxSettings, mlflow: MlflowResource, config: ProfileConfig
    ) -> dg.MaterializeResult:
        from nyx.data.beir import load_beir
        from nyx.data.rejects import RejectLog
        from nyx.index.corpus import build_corpus_index
        from nyx.registry import CORPUS_PATH_TAG, INDEX_DIR_TAG, SELECTION_SPLIT

        profile = profile_for(settings, config)
        paths = settings.paths
        state, retriever = stage_retriever(settings, profile, stage)
        corpus_dir = paths.nyxqa / SELECTION_SPLIT
        rejects = RejectLog(stage=f"{stage}_index")
        corpus = list(load_beir(corpus_dir, rejects).corpus.values())
        out = paths.indexes / stage
        report = build_corpus_index(
            retriever,
            corpus,
            out,
            store=embedding_store(settings, profile),
            source="index",
            rejects=rejects,
            progress=context.log.info,
        )
        rejects.write(paths.rejects / f"{stage}_index.jsonl")
        if report["encoded"]:
            context.log.warning(
                f"{stage}_index encoded {report['encoded']} document(s) the embedding store lacked "
                f"(materialise {stage}_embeddings for every shard to encode them there)"
            )
        client = mlflow.client()
        client.set_model_version_tag(state.registered_model, state.model_version, INDEX_DIR_TAG, str(out.resolve()))
        client.set_model_version_tag(
            state.registered_model, state.model_version, CORPUS_PATH_TAG, str(corpus_dir.resolve())
        )
        context.log.info(
            f"{stage} index: {report['documents']} documents, reused {report['reused']}, encoded "
            f"{report['encoded']}, {report['seconds']} s"
        )
        return dg.MaterializeResult(
            metadata={
                "documents": report["documents"],
                "reused": report["reused"],
                "encoded": report["encoded"],
                "rejected": report["rejected"],
                "model_version": state.model_version or "",
                "corpus_hash": report["corpus_hash"],
                "index_type": report["index_type"],
                "dims": dg.MetadataValue.json(report["dims"]),
                "build_report": dg.MetadataValue.json(json.loads(json.dumps(report["build_report"], default=str))),
                **{f"inputs_{k}": v for k, v in sorted(report["inputs"].items())},
                "index_dir": dg.MetadataValue.path(str(out)),
                "seconds": report["seconds"],
            }
        )

    return _asset


def _index_check(stage: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=f"{stage}_index",
        name=f"{stage}_index_consistent",
        blocking=True,
        description="built by the finished stage's model version from the current NyxQA corpus; every "
        "document indexed or rejected by name; a sample of documents finds itself first",
    )
    def _check(settings: NyxSettings) -> dg.AssetCheckResult:
        import numpy as np

        from nyx.data.beir import load_beir
        from nyx.index import IndexMismatchError
        from nyx.index.corpus import SOURCE_FILE, open_corpus_index
        from nyx.registry import SELECTION_SPLIT
        from nyx.utils.io import read_json

        paths = settings.paths
        state = finished_stage(settings, stage)
        corpus = list(load_beir(paths.nyxqa / SELECTION_SPLIT).corpus.values())
        try:
            retriever = open_corpus_index(paths.indexes / stage, model_version=state.model_version, corpus=corpus)
        except (IndexMismatchError, FileNotFoundError) as e:
            return dg.AssetCheckResult(passed=False, description=str(e))
        index = retriever.embedding_index
        left_out = read_json(paths.indexes / stage / SOURCE_FILE)["left_out"]
        accounted = len(index) + len(left_out) == len(corpus)
        rng = np.random.default_rng(0)
        rows = rng.choice(len(index), size=min(len(index), 64), replace=False) if len(index) else np.zeros(0, int)
        vecs = index.vectors[rows]
        result = index.search(vecs, k=1)
        self_score = np.einsum("ij,ij->i", vecs.astype(np.float64), vecs.astype(np.float64))
        # the top hit scores at least the document's own score (an identical duplicate may tie with it), up to
        # float32 rounding of a dim-term dot product
        tol = 8 * index.dim * np.finfo(np.float32).eps
        found = [bool(len(s) and s[0] >= own - tol) for s, own in zip(result.scores, self_score)]
        share = float(np.mean(found)) if found else 0.0
        return dg.AssetCheckResult(
            passed=bool(accounted and len(index) > 0 and share == 1.0),
            metadata={
                "documents": len(index),
                "left_out": len(left_out),
                "corpus": len(corpus),
                "self_retrieval_sample": len(found),
                "self_retrieval_share": share,
                "model_version": state.model_version or "",
            },
        )

    return _check


stage1_embeddings = _embeddings_asset("stage1")
stage2_embeddings = _embeddings_asset("stage2")
stage1_index = _index_asset("stage1")
stage2_index = _index_asset("stage2")
stage1_index_consistent = _index_check("stage1")
stage2_index_consistent = _index_check("stage2")
