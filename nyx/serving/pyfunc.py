"""``nyx-retriever`` as an MLflow pyfunc model: ``predict`` embeds queries or documents in the JSONL part format.

Input: a DataFrame (or a list of dicts) with a ``content`` column holding the part list (a list or its JSON string),
an optional ``kind`` column (``query`` or ``document``, default ``document``), optional ``id``, ``choices`` and
``dim`` (a Matryoshka prefix). Images are ``data:`` URLs or paths readable by the server. Output: a DataFrame with
``id`` and ``embedding`` (a list of floats, L2-normalised).

Serve with ``mlflow models serve -m models:/nyx-retriever@champion`` and POST
``{"dataframe_records": [{"kind": "query", "content": [{"type": "text", "text": "..."}]}]}`` to ``/invocations``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

ARTIFACT_KEY = "model_dir"


class NyxEmbeddingModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from nyx.model.encoder import NyxEncoder

        root = Path(context.artifacts[ARTIFACT_KEY])
        meta = json.loads((root / "nyx_model.json").read_text()) if (root / "nyx_model.json").exists() else {}
        base = root / "base" if (root / "base").is_dir() else root
        adapter = root / "adapter" if (root / "adapter").is_dir() else None
        self.encoder = NyxEncoder.from_pretrained(str(base), adapter_path=str(adapter) if adapter else None,
                                                  show_progress=False)
        self.meta = meta

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import numpy as np
        import pandas as pd

        from nyx.data.records import record_from_json
        from nyx.model.pooling import mrl_truncate

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(list(model_input))
        if "content" not in df.columns:
            raise ValueError("input needs a 'content' column with a list of parts [{'type': 'text', 'text': ...}, ...]")
        kinds = df["kind"].fillna("document").tolist() if "kind" in df.columns else ["document"] * len(df)
        bad = sorted({k for k in kinds if k not in ("query", "document")})
        if bad:
            raise ValueError(f"'kind' must be 'query' or 'document', got {bad}")
        records = []
        for i, row in enumerate(df.to_dict(orient="records")):
            content = row["content"]
            if isinstance(content, str):
                content = json.loads(content)
            obj = {"id": str(row.get("id") if row.get("id") is not None else i), "content": content}
            if row.get("choices") is not None:
                obj["choices"] = row["choices"]
            records.append(record_from_json(obj))
        out = np.zeros((len(records), self.encoder.dim), dtype=np.float32)
        for kind in ("query", "document"):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            if idx:
                sub = [records[i] for i in idx]
                emb = self.encoder.encode_queries(sub) if kind == "query" else self.encoder.encode_documents(sub)
                out[idx] = emb
        dim = (params or {}).get("dim")
        if dim:
            out = mrl_truncate(out, int(dim))
        return pd.DataFrame({"id": [r.id for r in records], "embedding": [row.tolist() for row in out]})


def log_retriever_model(model_dir: str | Path, name: str = "model", registered_model_name: str | None = None,
                        tags: dict[str, str] | None = None):
    """Log a Nyx model folder (``base/`` + optional ``adapter/``, or a full HF folder) as a pyfunc model."""
    import nyx

    code_root = Path(nyx.__file__).resolve().parent
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=NyxEmbeddingModel(),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        code_paths=[str(code_root)],
        registered_model_name=registered_model_name,
        pip_requirements=_requirements(),
        tags=tags,
    )
    return info


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "transformers", "tokenizers", "peft", "pillow", "numpy", "pandas", "mlflow", "safetensors",
            "faiss-cpu", "pydantic", "tqdm"]
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs]
