"""``nyx-retriever`` as an MLflow pyfunc model: ``predict`` embeds queries or documents in the JSONL part format.

Input: a DataFrame (or a list of dicts), one row per query or document, with the columns

* ``content`` (required): the part list ``[{"type": "text", "text": ...}, {"type": "image", "image": ...}]``,
  or its JSON string (what a CSV request can carry). Images are ``data:`` URLs or paths readable by the server;
* ``kind`` (optional): ``query`` or ``document`` (the default);
* ``id`` (optional, a string): echoed in the output; the row number (``"0"``, ``"1"``, ...) where a row has none,
  also when other rows of the request have one (a number id is echoed as its integer text: ``7``, not ``7.0``);
* ``choices`` (optional): a query's answer options, a list of strings or one ready string.

Params: ``dim`` (optional): the Matryoshka prefix size, one of the model's trained dims (its profile's
``mrl_dims``); ``None`` or ``0`` means the full hidden size. It applies to the whole request: there is no
per-row dimension, and a ``dim`` column is not part of the signature (MLflow drops it with a warning).

Output: a DataFrame with ``id`` and ``embedding`` (a list of floats, L2-normalised, ``dim`` long).

The logged signature (:func:`retriever_signature`) declares these columns and the ``dim`` param; MLflow passes a
param to ``predict`` only when the signature declares it. ``content`` and ``choices`` are declared ``Any``
because each takes two shapes (a list, or a string); :meth:`NyxEmbeddingModel.predict` validates them. The logged
input example (:func:`retriever_input_example`: a text query and a document with text and an image) is what the
MLflow UI shows beside the schema, and MLflow checks at logging time that the model serves it.

Serve with ``mlflow models serve -m models:/nyx-retriever@champion`` and POST
``{"dataframe_records": [{"kind": "query", "content": [{"type": "text", "text": "..."}]}], "params": {"dim": 256}}``
to ``/invocations``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

ARTIFACT_KEY = "model_dir"
#: a 2x2 PNG (blue with two white pixels) as a ``data:`` URL: the image of the input example and of the docs' request
EXAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAF0lEQVR42mP4//+/XNQJBrmoE////"
    "wcAOhAIexRxLgAAAAAASUVORK5CYII="
)


class InvalidDimError(MlflowException, ValueError):
    """A ``dim`` param the model cannot serve: a ``ValueError`` in process, an HTTP 400 with this message over REST."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def retriever_signature() -> ModelSignature:
    """The pyfunc signature: the input columns, the ``dim`` param (default ``None``: full size) and the output."""
    inputs = Schema(
        [
            ColSpec(AnyType(), "content"),
            ColSpec(DataType.string, "kind", required=False),
            ColSpec(DataType.string, "id", required=False),
            ColSpec(AnyType(), "choices", required=False),
        ]
    )
    outputs = Schema([ColSpec(DataType.string, "id"), ColSpec(Array(DataType.float), "embedding")])
    params = ParamSchema([ParamSpec("dim", DataType.long, None)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def retriever_input_example():
    """The input example logged with the model: a text query and a document with text and a tiny image, in the
    JSONL part format (both with ids: a missing one would be saved as NaN, which is not JSON)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "id": "query-1",
                "kind": "query",
                "content": [{"type": "text", "text": "What colour is the sign at the harbour entrance?"}],
            },
            {
                "id": "doc-1",
                "kind": "document",
                "content": [
                    {"type": "text", "text": "The harbour sign is painted blue."},
                    {"type": "image", "image": EXAMPLE_IMAGE},
                ],
            },
        ]
    )


class NyxEmbeddingModel(PythonModel):
    def load_context(self, context) -> None:
        from nyx.model.encoder import NyxEncoder
        from nyx.utils.integrity import MANIFEST, verify_manifest

        root = Path(context.artifacts[ARTIFACT_KEY])
        if (root / MANIFEST).is_file():  # the weights served are the weights trained: IntegrityError names the file
            verify_manifest(root)
        meta = json.loads((root / "nyx_model.json").read_text()) if (root / "nyx_model.json").exists() else {}
        base = root / "base" if (root / "base").is_dir() else root
        adapter = root / "adapter" if (root / "adapter").is_dir() else None
        self.encoder = NyxEncoder.from_pretrained(
            str(base), adapter_path=str(adapter) if adapter else None, show_progress=False
        )
        self.meta = meta

    def allowed_dims(self) -> list[int]:
        """The Matryoshka dims ``params={"dim": ...}`` accepts: the profile's ``mrl_dims`` the encoder can output."""
        size = self.encoder.dim
        return [int(d) for d in self.encoder.profile.mrl_dims if int(d) <= size] or [size]

    def resolve_dim(self, params: dict[str, Any] | None) -> int | None:
        """The requested prefix size, ``None`` for the full size; :class:`InvalidDimError` naming the allowed dims."""
        import numpy as np

        dim = (params or {}).get("dim")
        if dim is None:
            return None
        allowed, full = self.allowed_dims(), self.encoder.dim
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
            raise InvalidDimError(
                f"param 'dim' must be an integer, got {dim!r} ({type(dim).__name__}); "
                f"allowed: {allowed} (0 or none: the full size {full})"
            )
        dim = int(dim)
        if dim == 0 or dim == full:
            return None
        if dim not in allowed:
            why = f"exceeds the embedding size {full}" if dim > full else "is not one of the model's Matryoshka dims"
            raise InvalidDimError(f"param 'dim' {dim} {why}; allowed: {allowed} (0 or none: the full size {full})")
        return dim

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import numpy as np
        import pandas as pd

        from nyx.data.records import record_from_json
        from nyx.model.pooling import mrl_truncate

        dim = self.resolve_dim(params)  # before encoding: a bad request fails at once
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(list(model_input))
        if "content" not in df.columns:
            raise ValueError("input needs a 'content' column with a list of parts [{'type': 'text', 'text': ...}, ...]")
        kinds = (
            [k if _present(k) else "document" for k in df["kind"]] if "kind" in df.columns else ["document"] * len(df)
        )
        bad = sorted({str(k) for k in kinds if k not in ("query", "document")})
        if bad:
            raise ValueError(f"'kind' must be 'query' or 'document', got {bad}")
        records = []
        for i, row in enumerate(df.to_dict(orient="records")):
            rid = _row_id(row.get("id"), i)
            obj = {"id": rid, "content": _parts(row["content"], rid)}
            choices = row.get("choices")
            if _present(choices):
                obj["choices"] = choices.tolist() if isinstance(choices, np.ndarray) else choices
            records.append(record_from_json(obj))
        out = np.zeros((len(records), self.encoder.dim), dtype=np.float32)
        for kind in ("query", "document"):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            if idx:
                sub = [records[i] for i in idx]
                emb = self.encoder.encode_queries(sub) if kind == "query" else self.encoder.encode_documents(sub)
                out[idx] = emb
        if dim is not None:
            out = mrl_truncate(out, dim)
        return pd.DataFrame({"id": [r.id for r in records], "embedding": [row.tolist() for row in out]})


def _present(value: Any) -> bool:
    """False for a missing cell: ``None``, or the NaN (any float type) / ``pd.NA`` / ``NaT`` pandas puts where a
    record lacks a column."""
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA:
        return False
    if isinstance(value, (str, bytes, list, tuple, dict, np.ndarray)):
        return True
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):
        return True


def _row_id(value: Any, position: int) -> str:
    """A row's id as text: its position when the cell is missing; a number as its integer text when it is whole (a
    column of number ids with gaps arrives as floats: ``7.0`` means ``7``)."""
    import numpy as np

    if not _present(value):
        return str(position)
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(float(value)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _parts(content: Any, rid: str) -> Any:
    """A row's ``content`` as a part list: decoded from its JSON string, or a numpy array (parquet) as a list."""
    import numpy as np

    if isinstance(content, str):
        try:
            return json.loads(content)
        except json.JSONDecodeError as e:
            raise ValueError(f"row {rid!r}: 'content' is a string but not the JSON of a part list ({e.msg})") from None
    if isinstance(content, np.ndarray):
        return content.tolist()
    if not _present(content):
        raise ValueError(f"row {rid!r}: 'content' is missing (a list of parts [{{'type': 'text', 'text': ...}}])")
    return content


def log_retriever_model(
    model_dir: str | Path,
    name: str = "model",
    registered_model_name: str | None = None,
    tags: dict[str, str] | None = None,
):
    """Log a Nyx model folder (``base/`` + optional ``adapter/``, or a full HF folder) as a pyfunc model, with
    :func:`retriever_signature` (without it MLflow would drop ``params={"dim": ...}`` at predict time, and the
    registry UI would show no inputs) and :func:`retriever_input_example` (which MLflow serves once, as a check)."""
    import nyx

    code_root = Path(nyx.__file__).resolve().parent
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=NyxEmbeddingModel(),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        code_paths=[str(code_root)],
        registered_model_name=registered_model_name,
        signature=retriever_signature(),
        input_example=retriever_input_example(),
        pip_requirements=_requirements(),
        tags=tags,
    )
    return info


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = [
        "torch",
        "transformers",
        "tokenizers",
        "peft",
        "pillow",
        "numpy",
        "pandas",
        "mlflow",
        "safetensors",
        "faiss-cpu",
        "pydantic",
        "tqdm",
    ]
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs]
