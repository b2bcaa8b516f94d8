"""Step 4 of a stage (:mod:`nyx.train.stage`), after training: dev-split retrieval metrics of the trained model and
of the model it started from in the stage's MLflow run, the model registered with its dev metrics on the version,
and the finished state saved."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nyx.registry import SELECTION_SPLIT  # the split every model choice is made on; test metrics are only reported
from nyx.train.stage.plan import StagePlan
from nyx.train.stage.state import StageState
from nyx.utils.integrity import verify_manifest

if TYPE_CHECKING:
    from nyx.index.store import EmbeddingStore

log = logging.getLogger(__name__)

TRAIN_RESULT_FILE = "train_result.json"
#: Model-version tag holding the digest of the weights' manifest (nyx.utils.integrity)
WEIGHTS_TAG = "nyx.weights_sha256"


def evaluate_dev(
    model: str,
    dev_folder: Path,
    label: str = "trained model",
    info: Callable[[str], None] = log.info,
    encoder_overrides: dict[str, Any] | None = None,
    store: EmbeddingStore | None = None,
) -> list[dict[str, Any]]:
    """Retrieval metrics of ``model`` (a folder, an adapter folder, a profile name) on the dev split at every
    Matryoshka dimension. With a ``store``, corpus embeddings the model already has are reused and new ones kept
    (:mod:`nyx.index.store`): the same model never encodes the same corpus twice."""
    from nyx.data.beir import load_beir
    from nyx.eval.retrieval import matryoshka_sweep
    from nyx.retrieval import NyxRetriever

    ds = load_beir(dev_folder)
    retriever = NyxRetriever(model=str(model), encoder_overrides=encoder_overrides)
    retriever.index(list(ds.corpus.values()), store=store, source=f"dev-{label.replace(' ', '_')}", progress=info)
    if store is not None:
        encoded: Any = retriever.last_encode  # the EncodeStats of the index() above
        info(f"{SELECTION_SPLIT} corpus, {label}: {encoded.to_dict()}")
    rows = matryoshka_sweep(retriever, list(ds.queries.values()), ds.qrels)
    info(
        f"{SELECTION_SPLIT} retrieval, {label}: "
        + "; ".join(f"dim {r['dim']}: R@10={r.get('recall@10', 0):.3f} nDCG@10={r.get('ndcg@10', 0):.3f}" for r in rows)
    )
    return rows


def _metric_name(prefix: str, key: str, dim: Any) -> str:
    from nyx.tracking import metric_key

    return f"{prefix}_{metric_key(key)}_dim{dim}"


def finish_stage(
    plan: StagePlan,
    state: StageState,
    *,
    dev_folder: Path,
    client,
    tags: dict[str, str] | None = None,
    info: Callable[[str], None] = log.info,
    store: EmbeddingStore | None = None,
) -> StageState:
    """After training: dev metrics (trained and start model) in the MLflow run, the model registered with its dev
    metrics on the version, and the finished state saved. ``client`` is an ``MlflowClient`` whose tracking URI is
    also the active one (``mlflow.set_tracking_uri``)."""
    import mlflow

    from nyx.registry import record_metrics
    from nyx.serving.pyfunc import log_retriever_model
    from nyx.utils.io import read_json

    summary = read_json(plan.out_dir / TRAIN_RESULT_FILE)
    final_dir = Path(summary["final_dir"])
    weights = verify_manifest(final_dir)  # IntegrityError names the file: nothing is evaluated or registered
    # the trained model carries its pixel budget in its folder; the start model gets the one it trained with
    budget = {
        k: v
        for k, v in (("max_pixels", plan.spec.config.max_pixels), ("min_pixels", plan.spec.config.min_pixels))
        if v is not None
    }
    dev = evaluate_dev(str(final_dir), dev_folder, "trained model", info, store=store)
    dev_start = evaluate_dev(state.start_model, dev_folder, "start model", info, encoder_overrides=budget, store=store)
    name = state.registered_model
    with mlflow.start_run(run_id=state.mlflow_run_id):
        for prefix, rows in ((SELECTION_SPLIT, dev), (f"{SELECTION_SPLIT}_start", dev_start)):
            for row in rows:
                mlflow.log_metrics(
                    {
                        _metric_name(prefix, k, row["dim"]): float(v)
                        for k, v in row.items()
                        if k not in ("dim", "n_queries") and isinstance(v, (int, float))
                    }
                )
        model_info = log_retriever_model(
            final_dir,
            name="model",
            registered_model_name=name,
            tags={"nyx.stage": plan.stage, "nyx.base_model": state.base_model},
        )
    version = str(model_info.registered_model_version)
    for k, v in {
        "nyx.stage": plan.stage,
        "nyx.base_model": state.base_model,
        "nyx.mlflow_run_id": state.mlflow_run_id,
        "nyx.fingerprint": plan.fingerprint,
        WEIGHTS_TAG: weights,
        **(tags or {}),
    }.items():
        client.set_model_version_tag(name, version, k, v)
    if dev:
        record_metrics(client, name, version, _full_dim_metrics(dev[0]), split=SELECTION_SPLIT)
    state = state.model_copy(
        update={
            "status": "finished",
            "final_dir": str(final_dir),
            "is_adapter": (final_dir / "adapter_config.json").is_file(),
            "model_version": version,
            "summary": summary,
            "dev": dev,
            "dev_start": dev_start,
        }
    )
    state.save(plan.out_dir)
    return state


def _full_dim_metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k not in ("dim", "n_queries") and isinstance(v, (int, float))}
