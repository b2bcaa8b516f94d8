"""What an index was built from: model, dimensions, index type, documents and corpus fingerprint.

The manifest is saved as ``manifest.json`` beside the vectors. It is the single source of truth for
compatibility checks: a query embedding, a new shard or a loaded index whose model or dimension differs
from the manifest is refused with :class:`IndexMismatchError` instead of silently returning wrong
neighbours.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nyx.data.records import Record, is_data_url
from nyx.utils.io import file_sha256

IndexType = Literal["flat", "hnsw", "ivf", "ivfpq"]
StoreDtype = Literal["float32", "float16"]
MANIFEST_NAME = "manifest.json"
Quantize = Literal["none", "int8", "binary"]
SearchBackend = Literal["auto", "faiss", "numpy"]
#: 2: ``build_stats`` and the IndexConfig fields ``approximate_from``, ``ivfpq``/``pq_*``, ``train_sample``,
#: ``recall_queries``, ``seed``, ``store_dtype`` (all defaulted: format-1 manifests load unchanged).
#: 3: the IndexConfig fields ``quantize``, ``rescore_factor``, ``int8_rescore`` and ``search_backend``, and
#: ``quantize`` in the build stats (all defaulted: format-1 and -2 manifests load unchanged as float32 indexes, whose
#: flat searches now take the ``auto`` backend: the same results up to float32 rounding).
MANIFEST_FORMAT = 3


class IndexMismatchError(ValueError):
    """Embeddings, queries or manifests that do not belong to the same model and dimension."""


def nyx_version() -> str:
    """The installed Nyx version (``created_with`` in manifests)."""
    try:
        return importlib.metadata.version("nyx")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class IndexConfig(BaseModel):
    """How to build the FAISS index. All types use inner product over L2-normalised vectors (= cosine).

    * ``flat`` (default): exact search.
    * ``hnsw``: a graph (``faiss.IndexHNSWFlat``); no training, keeps full float32 vectors plus ~``8·hnsw_m``
      bytes of links per document.
    * ``ivf``: inverted lists of full vectors (``faiss.IndexIVFFlat``), clusters trained on a sample.
    * ``ivfpq``: inverted lists of product-quantised codes (``faiss.IndexIVFPQ``): ``pq_m`` bytes per document
      (``pq_nbits = 8``), clusters and codebooks trained on a sample. FAISS needs ``39 · 2**pq_nbits`` training
      points (9,984) for the codebooks: a smaller corpus falls back to ``flat``, with a warning and
      ``fallback`` in the build stats.

    **Size switch.** With ``approximate_from = N`` an approximate ``index_type`` is used only from ``N``
    documents on; a smaller corpus gets ``flat``. A profile says "flat below 100k documents, else HNSW" with
    ``IndexConfig(index_type="hnsw", approximate_from=100_000)``; :meth:`resolve_type` gives the type for a size.

    **Recall on build.** Every approximate index is checked when built: ``recall_queries`` stored vectors,
    sampled with ``seed``, are searched in it and exactly, and recall@10 is recorded in the manifest's
    ``build_stats`` (see ``EmbeddingIndex.build_report``).

    **Float16 storage.** ``store_dtype="float16"`` keeps ``vectors.npy`` (on disk and in memory) at half the
    size; FAISS still searches float32 copies. Float16 has an 11-bit significand (~3 decimal digits; unit
    roundoff u = 2**-11 ≈ 4.9e-4): each stored coordinate moves by at most u relative, so a cosine score moves
    by at most u·Σ|q_i·x_i| <= u at the full dimension (Cauchy–Schwarz) and ~2u ≈ 1e-3 at a re-normalised
    Matryoshka prefix, against float32 storage. Rankings change only where two documents' scores are closer
    than that.

    **Quantised Matryoshka search** (``quantize``, with ``index_type="flat"`` only: it replaces the float32 copy that
    flat search scans, at every indexed Matryoshka dimension; HNSW and IVF keep float vectors and IVF-PQ already
    quantises, so other combinations are refused):

    * ``int8``: ``faiss.IndexScalarQuantizer`` with ``QT_8bit``, one byte per dimension with per-dimension ranges
      (min/max) trained on a seeded sample of ``train_sample`` documents; inner product on the decoded codes, no
      rescoring: ~1/4 of the float32 flat index.
    * ``binary``: the sign of each coordinate, one bit per dimension (``faiss.IndexBinaryFlat``, Hamming distance),
      ~1/32 of float32 flat. The ``rescore_factor·k`` nearest codes are then **rescored** with float inner products
      against the stored vectors (``vectors.npy``, which :class:`~nyx.index.faiss_index.EmbeddingIndex` holds in
      memory for every index type, in ``store_dtype``), so the returned scores are the exact float scores.
      ``int8_rescore=True`` does the same with int8 candidates.

    Recall@10 against exact float search is measured on build, as for approximate types.

    **Search backend** (flat float32 only): ``auto`` runs a batch of ``nq`` queries at dimension ``d`` as one BLAS
    matrix product plus ``np.argpartition`` top-k when ``nq·d`` is below FAISS's own BLAS switch
    (``faiss.cvar.distance_compute_blas_threshold``, 128,000 in FAISS 1.15), where FAISS scans the whole database
    once per query, and with FAISS (blocked BLAS matrix product and heaps) from it on; ``faiss`` / ``numpy`` force
    one. Both are exact and agree up to float32 rounding (docs/scaling.md, *Quantised Matryoshka search*).
    """

    model_config = ConfigDict(extra="forbid")

    index_type: IndexType = Field("flat", description="flat (exact), or hnsw / ivf / ivfpq (approximate)")
    approximate_from: int | None = Field(
        None,
        ge=1,
        description="with an approximate index_type: flat below this many documents, index_type "
        "from it on (None: index_type at any size)",
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW: neighbours per node")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW: candidate list size while building")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW: candidate list size while searching")
    ivf_nlist: int | None = Field(
        None,
        ge=1,
        description="IVF / IVF-PQ: number of clusters; None: 4·sqrt(n), at most 65536. Always capped "
        "at (training points)/39, what FAISS needs per centroid",
    )
    ivf_nprobe: int = Field(32, ge=1, description="IVF / IVF-PQ: clusters visited per query")
    pq_m: int | None = Field(
        None,
        ge=1,
        description="IVF-PQ: sub-quantisers (bytes per document at 8 bits); None: dim/8. Lowered to "
        "the largest divisor of each indexed dimension",
    )
    pq_nbits: int = Field(8, ge=4, le=12, description="IVF-PQ: bits per sub-quantiser code")
    train_sample: int = Field(
        100_000,
        ge=1,
        description="IVF / IVF-PQ: documents sampled (seeded) to train clusters and codebooks; "
        "raised to what FAISS needs when the corpus has enough",
    )
    recall_queries: int = Field(
        200,
        ge=0,
        description="stored vectors sampled as queries to measure recall@10 against flat search when an "
        "approximate index is built (0: do not measure)",
    )
    seed: int = Field(0, description="seed of the training and recall samples")
    store_dtype: StoreDtype = Field("float32", description="dtype of the stored vectors (vectors.npy)")
    search_batch_size: int = Field(1024, ge=1, description="queries per FAISS call")
    quantize: Quantize = Field(
        "none",
        description="flat only: none (float32), int8 (scalar quantiser, 1 byte/dim) or binary (1 bit/dim, "
        "Hamming search then float rescoring of rescore_factor*k candidates)",
    )
    rescore_factor: int = Field(
        10,
        ge=1,
        description="binary (and int8 with int8_rescore): candidates per requested result rescored with the "
        "stored float vectors",
    )
    int8_rescore: bool = Field(
        False,
        description="int8: rescore rescore_factor*k int8 candidates with the stored float vectors too "
        "(exact scores; reads vectors.npy, which is held in memory anyway)",
    )
    search_backend: SearchBackend = Field(
        "auto",
        description="flat float32 search: auto (numpy matrix product + argpartition for batches FAISS would "
        "scan query by query, FAISS otherwise), faiss or numpy",
    )

    @model_validator(mode="after")
    def _check_switch(self) -> IndexConfig:
        if self.approximate_from is not None and self.index_type == "flat":
            raise ValueError("approximate_from needs an approximate index_type (hnsw, ivf or ivfpq) to switch to")
        if self.quantize != "none" and self.index_type != "flat":
            raise ValueError(
                f"quantize={self.quantize!r} applies to index_type 'flat' only (a quantised exact scan), not "
                f"{self.index_type!r}: hnsw and ivf search float vectors and ivfpq already quantises (pq_m bytes "
                "per document); use index_type='flat' with quantize, or quantize='none'"
            )
        return self

    @property
    def approximate(self) -> bool:
        """Whether ``index_type`` is approximate (it may still resolve to flat for a small corpus)."""
        return self.index_type != "flat"

    def resolve_type(self, n: int) -> IndexType:
        """The index type for a corpus of ``n`` documents: ``flat`` below ``approximate_from``, else
        ``index_type``. (IVF-PQ may still fall back to flat at build time when ``n`` is too small to train.)"""
        if self.approximate_from is not None and n < self.approximate_from:
            return "flat"
        return self.index_type

    def pq_min_train(self) -> int:
        """Training points FAISS needs for the PQ codebooks: 39 per code (``2**pq_nbits`` codes)."""
        return 39 * 2**self.pq_nbits


class IndexManifest(BaseModel):
    """Everything needed to check that a query or a shard belongs to this index."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format: int = MANIFEST_FORMAT
    model_id: str = Field(description="encoder identity (hub id, folder name, or mlflow model URI)")
    model_revision: str | None = Field(None, description="hub revision / commit, or a weights hash")
    mlflow_model_version: str | None = None
    dim: int = Field(ge=1, description="dimension of the stored vectors")
    full_dim: int = Field(ge=1, description="the encoder's full embedding dimension")
    mrl_dims: list[int] = Field(default_factory=list, description="Matryoshka prefixes the encoder was trained for")
    config: IndexConfig = Field(default_factory=IndexConfig)
    doc_ids: list[str] = Field(default_factory=list)
    corpus_hash: str | None = None
    inputs: dict[str, int] = Field(
        default_factory=dict,
        description="what the encoder did to the indexed records' inputs: records whose images were shrunk or "
        "dropped to fit its context, texts cut (NyxEncoder.input_stats)",
    )
    build_stats: dict[int, dict[str, Any]] = Field(
        default_factory=dict,
        description="per indexed dimension: what was built and how well it does (EmbeddingIndex.build_report)",
    )
    created_with: str = Field(default_factory=nyx_version)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @model_validator(mode="after")
    def _check_dims(self) -> IndexManifest:
        if self.dim > self.full_dim:
            raise ValueError(f"index dim {self.dim} exceeds the model's full dim {self.full_dim}")
        self.mrl_dims = sorted({d for d in self.mrl_dims if d <= self.dim} | {self.dim}, reverse=True)
        return self

    @property
    def index_type(self) -> IndexType:
        """The configured type (see :meth:`IndexConfig.resolve_type` for the type used at a given size)."""
        return self.config.index_type

    @property
    def store_dtype(self) -> StoreDtype:
        return self.config.store_dtype

    def check_compatible(self, other: IndexManifest) -> None:
        """Raise :class:`IndexMismatchError` unless ``other`` holds vectors of the same model and dimension."""
        self.check_model(other.model_id, other.model_revision, other.dim)

    def check_model(self, model_id: str | None, revision: str | None = None, dim: int | None = None) -> None:
        """Raise :class:`IndexMismatchError` if the given model identity or dimension differs from this index."""
        if model_id is not None and model_id != self.model_id:
            raise IndexMismatchError(
                f"embeddings come from model {model_id!r} but the index was built with {self.model_id!r}; "
                "re-index the corpus with one model"
            )
        if revision is not None and self.model_revision is not None and revision != self.model_revision:
            raise IndexMismatchError(
                f"model {model_id!r} revision {revision!r} differs from the index's revision "
                f"{self.model_revision!r}; re-index the corpus"
            )
        if dim is not None and dim != self.dim:
            raise IndexMismatchError(f"embeddings have dimension {dim} but the index stores dimension {self.dim}")


class CorpusHasher:
    """A running SHA-256 fingerprint of a corpus: ids, text and image bytes, in order.

    Images are hashed by content (not path), so the same corpus copied elsewhere has the same hash.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, records: Iterable[Record]) -> CorpusHasher:
        for r in records:
            self._h.update(b"\x1erecord\x1f" + r.id.encode())
            for p in r.content:
                if p.type == "text":
                    self._h.update(b"\x1ftext\x1f" + (p.text or "").encode())
                else:
                    ref = p.image or ""
                    try:
                        digest = ref if is_data_url(ref) else file_sha256(ref)
                    except OSError:  # unreadable: the path still identifies it
                        digest = "missing:" + ref
                    self._h.update(b"\x1fimage\x1f" + digest.encode())
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def corpus_hash(records: Iterable[Record]) -> str:
    """The SHA-256 fingerprint of ``records`` (see :class:`CorpusHasher`)."""
    return CorpusHasher().update(records).hexdigest()
