"""The sections of a pipeline profile (:class:`~nyx.settings.profile.PipelineProfile`): one typed model each."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nyx.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from nyx.index.manifest import IndexConfig
from nyx.retrieval.dense import DenseConfig
from nyx.synth.generators.config import OpenAISettings
from nyx.synth.mining import MiningConfig
from nyx.train.config import StageTrainSettings


class ImageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_pixels: int = DEFAULT_MIN_PIXELS


class SampleDataSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_docs: int = 300
    seed: int = 0


class QASettings(BaseModel):
    """Which chunks get synthetic questions: ``sample_size`` chunks *in total* over all corpus shards (the paper:
    10k of 46,741), not per shard; each shard keeps the chunks whose fixed hash key falls under its group's cutoff
    (``nyx.synth.qa.plan_sample``), so the shards together take the budget and adding a shard moves the cutoffs
    only."""

    model_config = ConfigDict(extra="forbid")
    sample_size: int | None = Field(
        None, ge=1, description="chunks sampled for QA in total over all shards (None: all)"
    )
    stratify: bool = True
    seed: int = 0


class MinerSettings(BaseModel):
    """The retriever that mines NyxQA's hard negatives (``nyx.synth.mining.resolve_miner``) and how.

    ``retriever``: ``"minilm"`` / ``"bm25"`` (text only: images are invisible to them), ``"mme5"`` (the paper's
    multimodal miner, a Llama-3.2-Vision embedder), ``"nyx"`` (a Nyx / Qwen2.5-VL model), a saved retriever folder,
    a Llama-3.2-Vision or Qwen2.5-VL model folder, or a registered version ``models:/<name>@<alias>`` (e.g. the
    champion, to re-mine for a later round). ``model``: for ``mme5`` a hub id, local folder or ``"tiny"`` (the
    offline random-weight Llama-3.2-Vision), default ``intfloat/mmE5-mllama-11b-instruct``; for ``nyx`` anything
    ``NyxEncoder`` loads (default ``"tiny"``)."""

    model_config = ConfigDict(extra="forbid")
    retriever: str = Field(
        "minilm",
        description="'minilm', 'bm25', 'mme5', 'nyx', a saved retriever or model folder, or models:/<name>@<alias>",
    )
    model: str | None = Field(None, description="the model of 'mme5' (hub id, folder, 'tiny') or 'nyx'")
    batch_size: int | None = Field(
        None, ge=1, description="records per forward pass of a model miner (None: the retriever's default)"
    )
    mining: MiningConfig = Field(default_factory=MiningConfig)


class LaunchSettings(BaseModel):
    """How many training processes the profile means, and how they are started (the ``launcher`` resource adds
    where: addresses, rendezvous, host files). The global batch is ``per_device_batch_size * world_size``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["python", "torchrun", "deepspeed"] = "python"
    processes_per_node: int = Field(1, ge=1)
    nodes: int = Field(1, ge=1)

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.nodes


class ReaderSettings(BaseModel):
    """The reader that answers from retrieved documents (VLM feedback and RAG evaluation).

    ``minilm``: the offline option reader (a text-only stand-in); ``openai``: a VLM behind an OpenAI-compatible
    endpoint (the paper: Qwen2.5-VL-7B-Instruct); ``generator``: the QA generator's own model and endpoint."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["minilm", "openai", "generator"] = "minilm"
    openai: OpenAISettings = Field(default_factory=lambda: OpenAISettings(model="Qwen/Qwen2.5-VL-7B-Instruct"))


#: The formats a training source can be declared in (see :class:`TrainingSource`)
SourceFormat = Literal["research", "triples", "hotpotqa", "2wikimultihopqa", "musique"]
#: The text QA formats, which take a ``recipe``
TEXT_QA_FORMATS = ("hotpotqa", "2wikimultihopqa", "musique")


class TrainingSource(BaseModel):
    """One external training set of Stage 1, in the format its publisher ships, converted once by the
    ``training_sources`` asset into Nyx triples (``data/training_sources/<name>/triples.jsonl``,
    :mod:`nyx.train.sources`) that Stage 1 trains on and fingerprints.

    ``format``: ``research`` (MMEB / mmE5: ``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text``,
    ``neg_image_path``), ``triples`` (Nyx triples), or a text QA set (``hotpotqa``, ``2wikimultihopqa``, ``musique``)
    read with ``recipe`` ``gold`` (the dataset's own train file: supporting paragraphs are positives, the other given
    paragraphs hard negatives) or ``retrieved`` (questions with pre-retrieved passages, FlashRAG-style
    ``*_with_retrieved_docs.jsonl``: the top-1 passage is the positive, ranks 11 and below the negatives).

    The old untyped form (``{"name", "kind": "research" | "triples", "path", "image_root", "cap", "weight"}``) is
    accepted: ``kind`` is read as ``format``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="unique; names the converted folder, metadata keys and the MLflow tag dvc.md5.source.<name>",
    )
    format: SourceFormat
    path: str = Field(
        description="the source file (JSONL, or a JSON array for the gold text QA files); a relative "
        "path is relative to the data root (NYX_DATA_DIR)"
    )
    recipe: Literal["gold", "retrieved"] | None = Field(
        None, description="text QA formats only (default gold): how positives and negatives are chosen"
    )
    image_root: str | None = Field(
        None,
        description="research/triples: folder image paths are relative to "
        "(default: the file's folder; relative: to the data root)",
    )
    cap: int | None = Field(None, ge=1, description="convert only the first N rows of the file")
    expected_rows: tuple[int, int] | None = Field(
        None, description="(min, max) usable triples after conversion; outside it the blocking check fails"
    )
    weight: float = Field(1.0, gt=0, description="mixing weight in Stage 1 (0.5 keeps half, 2.0 doubles)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_dict(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" in value and "format" not in value:
            value = {("format" if k == "kind" else k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _recipe_for_text_qa(self) -> TrainingSource:
        if self.format in TEXT_QA_FORMATS:
            if self.recipe is None:
                self.recipe = "gold"
        elif self.recipe is not None:
            raise ValueError(
                f"source {self.name!r}: recipe is for the text QA formats {TEXT_QA_FORMATS}, not {self.format!r}"
            )
        if self.expected_rows is not None and not 0 <= self.expected_rows[0] <= self.expected_rows[1]:
            raise ValueError(f"source {self.name!r}: expected_rows must be (min, max) with 0 <= min <= max")
        return self


class StageSettings(BaseModel):
    """Training settings of one stage: ``train`` takes any :class:`nyx.train.config.TrainConfig` field except paths,
    data and the pixel budget (:class:`~nyx.train.config.StageTrainSettings`)."""

    model_config = ConfigDict(extra="forbid")
    train: StageTrainSettings = Field(default_factory=StageTrainSettings)
    extra_sources: list[TrainingSource] = Field(
        default_factory=list,
        description="external training sets (Stage 1), converted by the training_sources asset; see TrainingSource",
    )
    nyxqa_cap: int | None = Field(
        None, ge=1, description="NyxQA train questions in the mix at most (seeded subsample; the paper: 20k)"
    )
    eval_folders: list[str] = Field(
        default_factory=list,
        description="BEIR folders of evaluation sets whose queries no training source may "
        "contain (besides NyxQA dev and test); relative: to the data root",
    )

    @field_validator("extra_sources")
    @classmethod
    def _unique_names(cls, value: list[TrainingSource]) -> list[TrainingSource]:
        names = [s.name for s in value]
        dupes = sorted({n for n in names if names.count(n) > 1} | ({"nyxqa"} & set(names)))
        if dupes:
            raise ValueError(f"training source names must be unique and not 'nyxqa': {dupes}")
        return value


class Stage2Settings(StageSettings):
    mode: Literal["continue", "retrain"] = Field(
        "continue",
        description="continue from Stage 1 on feedback triples, or retrain from the base on the "
        "Stage-1 mix plus feedback (what the released model did)",
    )
    feedback_split: str = "train"


class IndexSettings(BaseModel):
    """Each model's corpus embeddings (stored per model and encoded once: dev evaluation, feedback, the report and
    the corpus index assets share them, :mod:`nyx.index.store`) and the index built from them. ``config`` says
    which FAISS index and how vectors are stored (float32 or float16: one setting for the stored embeddings and
    the index)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1, description="records per encoder forward pass")
    shard_size: int = Field(
        1024, ge=1, description="records per stored segment: a killed encode keeps the finished ones"
    )
    config: IndexConfig = Field(default_factory=IndexConfig)

    def dense_config(self) -> DenseConfig:
        """The settings a dense retriever builds the corpus index with."""
        return DenseConfig(batch_size=self.batch_size, shard_size=self.shard_size, index=self.config)


class ExtraEvalSet(BaseModel):
    """A public benchmark converted by ``nyx convert`` (a BEIR folder), evaluated by ``eval_report`` beside NyxQA
    with the same retrievers, each built on this set's corpus; reported under its ``name``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="unique, not 'nyxqa'; prefixes the set's MLflow metrics and names its report",
    )
    path: str = Field(description="the BEIR folder; a relative path is relative to the data root (NYX_DATA_DIR)")
    split: str = Field(
        "test", description="which qrels/<split>.tsv to read (the folder's qrels.tsv if it has no such file)"
    )
    corpus: str | None = Field(
        None,
        description="another BEIR folder or corpus JSONL to retrieve from, for sets "
        "that ship none (Bamboogle); relative: to the data root",
    )


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str = "test"
    baselines: list[str] = Field(default_factory=lambda: ["bm25", "minilm", "untrained"])
    top_n: int = 1
    dims: list[int] | None = Field(None, description="None: the model's Matryoshka dims")
    extra_sets: list[ExtraEvalSet] = Field(
        default_factory=list, description="converted public benchmarks eval_report evaluates beside NyxQA"
    )

    @field_validator("extra_sets")
    @classmethod
    def _unique_set_names(cls, value: list[ExtraEvalSet]) -> list[ExtraEvalSet]:
        names = [s.name for s in value]
        dupes = sorted({n for n in names if names.count(n) > 1} | ({"nyxqa"} & {n.lower() for n in names}))
        if dupes:
            raise ValueError(f"extra evaluation set names must be unique and not 'nyxqa': {dupes}")
        return value


class PromotionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gate_metrics: dict[str, float] = Field(
        default_factory=lambda: {"ndcg@10": 0.0, "recall@10": 0.0},
        description="metric -> margin the challenger must beat the champion by (test split, full dim)",
    )
    registered_model: str = "nyx-retriever"


class FetchSettings(BaseModel):
    """Downloading the ``http(s)`` images of OBELICS shards into the image store (``raw_images``,
    :mod:`nyx.data.fetch`): polite by default (a few requests per second to any one host)."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(16, ge=1, description="downloads in flight at once")
    per_host_rate: float = Field(
        4.0, ge=0, description="requests per second to one host, retries included (0: no limit)"
    )
    timeout: float = Field(20.0, gt=0, description="seconds for one attempt, from the request to the last byte")
    retries: int = Field(
        3, ge=0, description="further attempts after a 5xx, 429, timeout or connection error (never a 4xx)"
    )
    backoff: float = Field(1.0, ge=0, description="seconds before the first retry; doubles with each")
    max_backoff: float = Field(60.0, ge=0, description="longest wait between two attempts (also caps Retry-After)")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="larger images are aborted and rejected (too_large)")
    transient_runs: int = Field(3, ge=1, description="runs that try a URL again after transient failures; then final")
    user_agent: str = "nyx-image-fetch/1.0 (+OBELICS image download for a retrieval corpus)"
