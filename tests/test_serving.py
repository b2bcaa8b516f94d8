"""The pyfunc model as MLflow loads and serves it: the ``dim`` param reaches ``predict`` (in process and over the
scoring server's REST app), a bad ``dim`` is a clear error, and the input formats callers use keep working."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from tests.tolerances import EPS32, assert_within, rounding_tol

DIM = 32
SAMPLE = [  # what assets/training.py's _loads_check sends: content as a list of part dicts
    {"id": "q", "kind": "query", "content": [{"type": "text", "text": "Which town has the red bridge?"}]},
    {"id": "d", "kind": "document", "content": [{"type": "text", "text": "The bridge of Alder is red."}]},
]


@pytest.fixture(scope="module")
def logged(tiny_dir, tmp_path_factory):
    """The tiny model logged with ``log_retriever_model`` into a temporary sqlite store and loaded back."""
    import mlflow

    from nyx.serving.pyfunc import log_retriever_model

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)  # restored afterwards (set_tracking_uri also writes it)
        mlflow.set_tracking_uri(uri)
        try:
            # artifacts under tmp too (a sqlite store's default artifact root is ./mlruns in the working directory)
            exp = mlflow.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=exp):
                info = log_retriever_model(tiny_dir, name="model")
            model = mlflow.pyfunc.load_model(info.model_uri)
            yield model
        finally:
            mlflow.set_tracking_uri(None)


def _encoder(model):
    return model.unwrap_python_model().encoder


def _emb(out) -> np.ndarray:
    return np.array([list(e) for e in out["embedding"]], dtype=np.float64)


def _assert_unit(name: str, emb: np.ndarray) -> None:
    norms = np.linalg.norm(emb, axis=1)
    assert_within(name, norms, np.ones_like(norms), rounding_tol(EPS32, emb.shape[1]))


def _prefix(full: np.ndarray, dim: int) -> np.ndarray:
    """The Matryoshka prefix of ``full``, re-normalised in float64: what a ``dim`` request must return."""
    head = full[:, :dim]
    return head / np.linalg.norm(head, axis=1, keepdims=True)


def test_logged_signature_declares_columns_dim_param_and_output(logged):
    sig = logged.metadata.signature
    assert sig is not None, "log_retriever_model logged no signature: MLflow would drop params={'dim': ...}"
    assert sig.inputs.input_names() == ["content", "kind", "id", "choices"]
    assert sig.inputs.required_input_names() == ["content"]
    assert [(p.name, p.dtype.name, p.default) for p in sig.params] == [("dim", "long", None)]
    assert sig.outputs.input_names() == ["id", "embedding"]


def test_predict_dim_param_returns_unit_prefix_vectors(logged):
    enc = _encoder(logged)
    assert DIM in enc.profile.mrl_dims and DIM < enc.hidden_size
    full = logged.predict(pd.DataFrame(SAMPLE))
    assert list(full["id"]) == ["q", "d"]
    full_emb = _emb(full)
    assert full_emb.shape == (2, enc.hidden_size)
    _assert_unit("serving: full-size norms", full_emb)
    assert _emb(logged.predict(pd.DataFrame(SAMPLE), params={"dim": 0})).shape == (2, enc.hidden_size)

    out = logged.predict(pd.DataFrame(SAMPLE), params={"dim": DIM})
    emb = _emb(out)
    assert list(out["id"]) == ["q", "d"]
    assert emb.shape == (2, DIM), f"params={{'dim': {DIM}}} ignored: got {emb.shape[1]}-dim vectors"
    _assert_unit(f"serving: dim={DIM} norms", emb)
    # the float32 prefix of the float32 full vector, re-normalised: one rounding per step over DIM terms
    assert_within(f"serving: dim={DIM} is the full vector's prefix", emb, _prefix(full_emb, DIM),
                  rounding_tol(EPS32, DIM))

    # content as its JSON string (what CSV carries) gives the same embeddings as the list
    as_json = [{**r, "content": json.dumps(r["content"])} for r in SAMPLE]
    same = _emb(logged.predict(pd.DataFrame(as_json), params={"dim": DIM}))
    assert_within("serving: JSON-string content == list content", same, emb, rounding_tol(EPS32, 1))


def test_predict_rejects_a_dim_the_model_was_not_trained_for(logged):
    enc = _encoder(logged)
    allowed = [d for d in enc.profile.mrl_dims if d <= enc.hidden_size]
    not_trained = DIM + 1
    assert not_trained not in allowed
    with pytest.raises(ValueError, match=rf"'dim' {not_trained} is not one of .*allowed: {re.escape(str(allowed))}"):
        logged.predict(pd.DataFrame(SAMPLE), params={"dim": not_trained})
    too_big = 2 * enc.hidden_size
    with pytest.raises(ValueError, match=rf"'dim' {too_big} exceeds the embedding size {enc.hidden_size}"):
        logged.predict(pd.DataFrame(SAMPLE), params={"dim": too_big})


def test_rest_invocations_honour_dim_param(logged, monkeypatch):
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    enc = _encoder(logged)
    monkeypatch.delenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)  # init() sets it; restored after
    client = TestClient(scoring_server.init(logged))
    records = SAMPLE + [  # no id (the row number is used) and a query with choices: NaN cells for the others
        {"kind": "query", "content": [{"type": "text", "text": "What colour is the bridge?"}],
         "choices": ["red", "blue"]}]

    r = client.post("/invocations", json={"dataframe_records": records, "params": {"dim": DIM}})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["id"] for p in preds] == ["q", "d", "2"]
    emb = np.array([p["embedding"] for p in preds], dtype=np.float64)
    assert emb.shape == (3, DIM), f"REST params={{'dim': {DIM}}} ignored: got {emb.shape[1]}-dim vectors"
    _assert_unit(f"serving REST: dim={DIM} norms", emb)

    r = client.post("/invocations", json={"dataframe_records": records})
    assert r.status_code == 200, r.text
    full = np.array([p["embedding"] for p in r.json()["predictions"]], dtype=np.float64)
    assert full.shape == (3, enc.hidden_size)
    # JSON carries each float32 as its shortest repr, which parses back to the same float32 value
    assert_within(f"serving REST: dim={DIM} is the full vector's prefix", emb, _prefix(full, DIM),
                  rounding_tol(EPS32, DIM))

    r = client.post("/invocations", json={"dataframe_records": records, "params": {"dim": DIM + 1}})
    assert r.status_code == 400, r.text
    allowed = [d for d in enc.profile.mrl_dims if d <= enc.hidden_size]
    assert f"'dim' {DIM + 1} is not one of the model's Matryoshka dims; allowed: {allowed}" in r.json()["message"]
