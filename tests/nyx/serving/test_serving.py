"""The pyfunc model as MLflow loads and serves it: the ``dim`` param reaches ``predict`` (in process and over the
scoring server's REST app), a bad ``dim`` is a clear error, and the input formats callers use keep working."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from tests.paths import REPO
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
    assert_within(
        f"serving: dim={DIM} is the full vector's prefix", emb, _prefix(full_emb, DIM), rounding_tol(EPS32, DIM)
    )

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
        {
            "kind": "query",
            "content": [{"type": "text", "text": "What colour is the bridge?"}],
            "choices": ["red", "blue"],
        }
    ]

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
    assert_within(
        f"serving REST: dim={DIM} is the full vector's prefix", emb, _prefix(full, DIM), rounding_tol(EPS32, DIM)
    )

    r = client.post("/invocations", json={"dataframe_records": records, "params": {"dim": DIM + 1}})
    assert r.status_code == 400, r.text
    allowed = [d for d in enc.profile.mrl_dims if d <= enc.hidden_size]
    assert f"'dim' {DIM + 1} is not one of the model's Matryoshka dims; allowed: {allowed}" in r.json()["message"]


def _rest_client(logged, monkeypatch):
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    monkeypatch.delenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)  # init() sets it; restored after
    return TestClient(scoring_server.init(logged))


def test_registered_version_shows_its_inputs_and_an_input_example_it_serves(logged, monkeypatch):
    """What the MLflow UI reads for a model version (its MLmodel file: ``signature.inputs`` as a JSON string, the
    saved input example): the columns are there ("Inputs (4)", not 0), and the example is a request the model serves."""
    from pathlib import Path

    import mlflow
    import yaml

    version = mlflow.register_model(f"models:/{logged.metadata.model_id}", "nyx-retriever-ui").version
    folder = mlflow.artifacts.download_artifacts(f"models:/nyx-retriever-ui/{version}")
    mlmodel = yaml.safe_load((Path(folder) / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])  # as the UI parses it
    assert [c["name"] for c in inputs] == ["content", "kind", "id", "choices"]
    assert [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])] == ["id", "embedding"]
    example = mlmodel.get("saved_input_example_info")
    assert example, "no input example logged with the model"
    body = json.loads((Path(folder) / example["serving_input_path"]).read_text())  # strict JSON: no NaN
    r = _rest_client(logged, monkeypatch).post("/invocations", json=body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["id"] for p in preds] == ["query-1", "doc-1"]
    assert {len(p["embedding"]) for p in preds} == {_encoder(logged).hidden_size}


def test_missing_ids_are_row_positions_when_other_rows_have_ids(logged, monkeypatch):
    from nyx.serving.pyfunc import _row_id

    text = [{"type": "text", "text": "The bridge of Alder is red."}]
    # in process: every way pandas marks a missing cell
    for missing in (None, float("nan"), np.float32("nan"), np.float64("nan"), pd.NA, pd.NaT):
        df = pd.DataFrame({"id": pd.Series(["a", missing, "c"], dtype=object), "content": [text] * 3})
        assert list(logged.predict(df)["id"]) == ["a", "1", "c"], repr(missing)
    assert _row_id(np.float32("nan"), 4) == "4" and _row_id(7.0, 0) == "7" and _row_id(np.int64(3), 0) == "3"
    assert _row_id("nan-is-a-name", 0) == "nan-is-a-name" and _row_id(2.5, 0) == "2.5"
    # over REST: ids on some rows only; number ids (a column with gaps arrives as floats)
    client = _rest_client(logged, monkeypatch)
    for records, want in (
        (
            [{"kind": "query", "content": text}, {"id": "doc-1", "content": text}, {"id": None, "content": text}],
            ["0", "doc-1", "2"],
        ),
        ([{"id": "doc-1", "content": text}, {"kind": "query", "content": text}], ["doc-1", "1"]),
        ([{"id": 7, "content": text}, {"content": text}, {"id": 9, "content": text}], ["7", "1", "9"]),
    ):
        r = client.post("/invocations", json={"dataframe_records": records})
        assert r.status_code == 200, r.text
        got = [p["id"] for p in r.json()["predictions"]]
        assert got == want and "nan" not in got, (records, got)


def _doc_serving_example() -> tuple[dict, list[str]]:
    """The JSON body of the `curl .../invocations` example in docs/operations.md ("## Serving") and the ids its
    answer line shows."""

    doc = (REPO / "docs" / "operations.md").read_text()
    section = doc.split("\n## Serving\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"curl -s http://127\.0\.0\.1:5001/invocations .*?-d '(.*?)'\n", section, re.S)
    assert m, "no curl example with a JSON body in the Serving section of docs/operations.md"
    answer = re.search(r"The answer is `(\{.*?\})`", section, re.S)
    assert answer, "no answer line after the example"
    return json.loads(m.group(1)), re.findall(r'"id": "([^"]*)"', answer.group(1))


def test_docs_serving_example_is_accepted_as_written(logged, monkeypatch):
    """The exact request of docs/operations.md: its image is a real PNG (not a truncated placeholder, which the
    server answers with HTTP 400), and the answer has the ids the doc says."""
    import base64
    import io

    from PIL import Image

    body, ids = _doc_serving_example()
    images = [p["image"] for r in body["dataframe_records"] for p in r["content"] if p["type"] == "image"]
    assert images, "the example should show an image part"
    for url in images:
        head, b64 = url.split(",", 1)
        assert head == "data:image/png;base64"
        Image.open(io.BytesIO(base64.b64decode(b64, validate=True))).verify()
    r = _rest_client(logged, monkeypatch).post("/invocations", json=body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["id"] for p in preds] == ids == ["0", "doc-1"]
    _assert_unit("serving: the docs' example", _emb(pd.DataFrame(preds)))
