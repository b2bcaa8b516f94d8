"""NyxEncoder: interleaved text-and-image records -> L2-normalised embeddings with a Qwen2.5-VL backbone.

The flow for one batch, shared by inference and training::

    records --prepare--> PreparedInput (text with one <|image_pad|> per image, loaded images, exact length)
            --collate--> model inputs (input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw)
            --embed----> last-token pooled, L2-normalised torch tensor (with grad when grad is enabled)

The model package, one concern per module:

* :mod:`nyx.model.templates` — the query instruction (:class:`QueryTemplate`);
* :mod:`nyx.model.config` — :class:`EncoderConfig` and the config file a model folder carries;
* :mod:`nyx.model.collator` — ``prepare`` and ``collate`` (how a record is fitted into its token limit);
* :mod:`nyx.model.modeling` — the torch module (:class:`EmbeddingModel`: backbone, pooling, normalisation);
* :mod:`nyx.model.vision_speedups` — the vision tower's fast paths, ``torch.compile``, the bf16 check;
* this module — :class:`NyxEncoder`: loading and saving, and batched / sharded inference.

Token limits: training (:meth:`NyxEncoder.collate`) cuts at ``EncoderConfig.max_length``, the length the model is
(or was) trained with; inference (:meth:`NyxEncoder.encode`, :meth:`NyxEncoder.prepare`) cuts at
:attr:`NyxEncoder.inference_max_length`, which :meth:`NyxEncoder.from_pretrained` sets to the model's own context
limit unless ``max_length`` is given.

Over 400 lines: :class:`NyxEncoder` is one public API (load and save, input building, embedding, batched and sharded
encoding with its prefetching and order restoring); its parts that stand alone live in the modules above.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nyx.data.records import Record
from nyx.data.rejects import RecordError, RejectLog
from nyx.model.backbone import (
    ModelProfile,
    load_backbone,
    load_profile_processor,
    resolve_device,
    resolve_dtype,
    resolve_profile,
)
from nyx.model.collator import NyxCollator, PreparedInput
from nyx.model.config import EncoderConfig, save_model_config, saved_encoder_settings
from nyx.model.modeling import EmbeddingModel
from nyx.model.pooling import mrl_truncate
from nyx.model.processor import NyxQwenProcessor
from nyx.model.vision_speedups import compile_backbone, cpu_supports_bf16
from nyx.utils.batches import chunked
from nyx.utils.io import atomic_write, read_json, write_json
from nyx.utils.prefetch import prefetch

#: Tokenizers without a limit report ``model_max_length`` as a huge sentinel (transformers' 1e30).
_NO_TOKENIZER_LIMIT = 10**9


@dataclass(frozen=True)
class EncodeWindow:
    """A sort window's records that were prepared, in input order (:meth:`NyxEncoder.iter_batches`)."""

    ids: list[str]


@dataclass(frozen=True)
class EncodeBatch:
    """Model inputs of one batch; ``rows`` index the batch's records in the current :class:`EncodeWindow`."""

    rows: list[int]
    inputs: dict[str, torch.Tensor]


class NyxEncoder:
    """Embeds queries and documents (:class:`~nyx.data.records.Record`) into one space.

    Build it with :meth:`from_pretrained` (``"tiny"``, ``"paper"``, a local folder or a hub id, plus an
    optional LoRA adapter folder), or directly from a loaded backbone and processor.

    ``inference_max_length`` is the token limit of :meth:`prepare` and :meth:`encode` (default
    ``config.max_length``; :meth:`from_pretrained` sets the model's :attr:`context_length` unless told a
    ``max_length``); :meth:`collate`, the trainer's path, cuts at ``config.max_length``.

    :attr:`input_stats` counts, cumulatively over every :meth:`prepare` (encoding and collation alike) since
    construction or :meth:`reset_input_stats`: ``records`` prepared, ``text_truncated`` (records whose text was
    cut), ``images_shrunk`` / ``images_dropped`` (images scaled down to fit / left out, as they do not fit even
    at the pixel floor) and ``records_with_shrunk_images`` / ``records_with_dropped_images``.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        processor: NyxQwenProcessor,
        profile: ModelProfile,
        config: EncoderConfig | None = None,
        adapter_path: str | None = None,
        inference_max_length: int | None = None,
    ):
        self.profile = profile
        self.config = config or EncoderConfig.from_profile(profile)
        self.inference_max_length = int(inference_max_length or self.config.max_length)
        self.processor = processor
        self.module = EmbeddingModel(backbone)
        self.adapter_path = adapter_path
        self.collator = NyxCollator(processor, self.config)
        self.image_config = self.collator.image_config
        self.tokenizer = processor.tokenizer
        if self.config.dim is not None and not 0 < self.config.dim <= self.hidden_size:
            raise ValueError(f"dim {self.config.dim} outside 1..{self.hidden_size}")
        if self.config.autocast == "bfloat16" and self.device.type == "cpu" and not cpu_supports_bf16():
            raise ValueError(
                "autocast='bfloat16' needs a CPU with native bf16 (avx512_bf16 or AMX); this one "
                "would emulate it, slower than float32"
            )
        self.compiled_modules = compile_backbone(self.module.vl_model()) if self.config.compile else []

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | ModelProfile,
        adapter_path: str | os.PathLike | None = None,
        device: Any = None,
        dtype: Any = "auto",
        merge_adapter: bool = True,
        **config_overrides: Any,
    ) -> NyxEncoder:
        """Load a profile's backbone and processor (and a peft LoRA adapter), ready for :meth:`encode`.

        ``name_or_path`` may also be an adapter folder (with ``adapter_config.json``): its base model is then
        loaded and the adapter applied. ``config_overrides`` set :class:`EncoderConfig` fields
        (``batch_size=16``, ``padding_side="left"``, ``dim=256``, ...). A folder's ``nyx_profile.json``
        (:meth:`save_pretrained`) supplies the settings it was saved with unless overridden here: a full model
        folder's profile its input settings (``max_length``, ``max_pixels``, ``min_pixels``), an adapter folder's
        its own, and either's ``"encoder"`` section the other fields that change embeddings
        (:func:`~nyx.model.config.saved_encoder_settings`; an adapter folder's win over its base's).

        The pixel budget carries over to inference (a model property); the training ``max_length`` does not:
        :attr:`inference_max_length` is the model's :attr:`context_length` unless ``max_length`` is given
        here, which then sets both. ``config.max_length`` keeps the training length, so training from the
        loaded encoder (:meth:`collate`) still cuts where it did.
        """
        if config_overrides.get("max_length", 0) is None:
            del config_overrides["max_length"]
        explicit_max_length = config_overrides.get("max_length")
        saved: dict[str, Any] = {}  # what the folders' nyx_profile.json say; an adapter's wins over its base's
        for folder in (adapter_path, name_or_path):
            if folder is not None and not isinstance(folder, ModelProfile):
                saved = {**saved_encoder_settings(folder), **saved}
        if not isinstance(name_or_path, ModelProfile) and (Path(name_or_path) / "adapter_config.json").is_file():
            if adapter_path is not None:
                raise ValueError(f"{name_or_path} is an adapter folder and adapter_path was also given")
            adapter_path = name_or_path
            name_or_path = read_json(Path(name_or_path) / "adapter_config.json")["base_model_name_or_path"]
        profile = resolve_profile(name_or_path)
        dev = resolve_device(device)
        backbone = load_backbone(
            profile, device=dev, dtype=resolve_dtype(dtype if dtype is not None else profile.dtype, dev)
        )
        if adapter_path is not None:
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, os.fspath(adapter_path), is_trainable=False)
            if merge_adapter:
                backbone = backbone.merge_and_unload()
            backbone = backbone.to(dev).eval()
        processor = load_profile_processor(profile)
        config = EncoderConfig.from_profile(profile, **{**saved, **config_overrides})
        encoder = cls(
            backbone,
            processor,
            profile,
            config,
            adapter_path=os.fspath(adapter_path) if adapter_path is not None else None,
            inference_max_length=explicit_max_length,
        )
        if explicit_max_length is None:
            encoder.inference_max_length = encoder.context_length
        return encoder

    def save_pretrained(self, folder: str | os.PathLike, backbone: torch.nn.Module | None = None) -> Path:
        """Save this encoder so that :meth:`from_pretrained` loads it back: the backbone in the Hugging Face layout
        (a peft model saves its adapter), the processor, and ``nyx_profile.json`` (:meth:`save_config`).

        ``backbone`` is saved instead of :attr:`backbone` when given (the trainer's unwrapped or merged model).
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        model: Any = backbone if backbone is not None else self.backbone
        model.save_pretrained(out)
        self.processor.save_pretrained(out)
        self.save_config(out)
        return out

    def save_config(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/nyx_profile.json``: the profile with this encoder's input settings (``max_length``,
        ``min_pixels``, ``max_pixels``) and the other :class:`EncoderConfig` fields that change embeddings
        (``query_templates``, ``input_style``, ``eos_token``, ``padding_side``, ``min_text_share``); see
        :mod:`nyx.model.config`."""
        return save_model_config(folder, self.profile, self.config)

    # -- identity -----------------------------------------------------------------------------------------

    @property
    def backbone(self) -> torch.nn.Module:
        return self.module.backbone

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.module.vl_model().config.text_config.hidden_size)

    @property
    def dim(self) -> int:
        """Size of the embeddings :meth:`encode` returns (the Matryoshka prefix when ``config.dim`` is set)."""
        return self.config.dim or self.hidden_size

    @property
    def context_length(self) -> int:
        """The longest input the model takes: its text backbone's ``max_position_embeddings``, or the
        tokenizer's ``model_max_length`` when that is set and smaller."""
        limit = int(self.module.vl_model().config.text_config.max_position_embeddings)
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_TOKENIZER_LIMIT:
            limit = min(limit, tokenizer_limit)
        return limit

    @property
    def input_stats(self) -> dict[str, int]:
        """A copy of the cumulative input counters (see the class docstring), e.g. for an index manifest."""
        return self.collator.input_stats

    def reset_input_stats(self) -> None:
        """Set every :attr:`input_stats` counter back to 0."""
        self.collator.reset_input_stats()

    @property
    def model_id(self) -> str:
        return self.profile.name_or_path

    @property
    def revision(self) -> str | None:
        return self.profile.revision

    def info(self) -> dict[str, Any]:
        """What an index manifest records to tell whether two sets of embeddings are comparable."""
        cfg = self.config.model_dump(mode="json")
        return {
            "profile": self.profile.name,
            "model_id": self.model_id,
            "revision": self.revision,
            "adapter_path": self.adapter_path,
            "dim": self.dim,
            "hidden_size": self.hidden_size,
            "max_length": self.inference_max_length,
            "min_text_share": self.config.min_text_share,
            "image_fit": "shrink",  # oversize images are scaled down, not dropped (embeddings differ from "drop")
            "min_pixels": self.config.min_pixels,
            "max_pixels": self.config.max_pixels,
            "input_style": self.config.input_style,
            "eos_token": self.config.eos_token,
            "query_templates": cfg["query_templates"],
            "pooling": "last_token",
            "normalized": True,
            # only when set: bf16 embeddings differ from float32 ones beyond rounding (compile does not change them)
            **({"autocast": self.config.autocast} if self.config.autocast else {}),
        }

    # -- input building (nyx.model.collator) --------------------------------------------------------------

    @property
    def _reuse_ids(self) -> bool:
        """Whether collation reuses :meth:`prepare`'s token ids (:attr:`NyxCollator.reuse_ids`)."""
        return self.collator.reuse_ids

    def prepare(self, record: Record, is_query: bool, max_length: int | None = None) -> PreparedInput:
        """Load the record's images and build its text within ``max_length`` tokens (default
        :attr:`inference_max_length`): :meth:`NyxCollator.prepare <nyx.model.collator.NyxCollator.prepare>`."""
        limit = self.inference_max_length if max_length is None else int(max_length)
        return self.collator.prepare(record, is_query, limit)

    def collate_prepared(self, prepared: Sequence[PreparedInput]) -> dict[str, torch.Tensor]:
        """Prepared inputs -> padded model inputs (CPU tensors): :meth:`NyxCollator.collate_prepared
        <nyx.model.collator.NyxCollator.collate_prepared>`."""
        return self.collator.collate_prepared(prepared)

    def collate(self, records: Sequence[Record], is_query: bool) -> dict[str, torch.Tensor]:
        """Records -> model inputs (the trainer's collator uses this), cut at the training ``config.max_length``."""
        return self.collator.collate(records, is_query, self.config.max_length)

    # -- embedding ----------------------------------------------------------------------------------------

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs -> L2-normalised float32 embeddings (B, hidden); differentiable when grad is on."""
        dev = self.device
        moved = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self.config.autocast is None:
            return self.module(**moved)
        with torch.autocast(dev.type, dtype=getattr(torch, self.config.autocast)):
            return self.module(**moved)

    def forward_embeddings(
        self, batch: Sequence[Record] | dict[str, torch.Tensor], is_query: bool = False
    ) -> torch.Tensor:
        """Embeddings WITH grad for training: records (collated here) or already collated inputs."""
        inputs = batch if isinstance(batch, dict) else self.collate(batch, is_query)
        return self.embed(inputs)

    # -- batched inference --------------------------------------------------------------------------------

    def encode(
        self,
        records: Iterable[Record],
        is_query: bool = False,
        batch_size: int | None = None,
        dim: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed records -> float32 array (N, dim), rows in input order, L2-normalised.

        A record whose image cannot be loaded raises :class:`RecordError` (use :meth:`encode_to_shards`
        with a ``RejectLog`` to skip and log bad records instead).
        """
        records = list(records)
        out = np.zeros((len(records), dim or self.dim), dtype=np.float32)
        row = 0
        for _, emb in self._iter_encoded(
            records, is_query, batch_size, dim, show_progress, rejects=None, total=len(records)
        ):
            out[row : row + len(emb)] = emb
            row += len(emb)
        return out

    def encode_queries(self, records: Iterable[Record], **kwargs: Any) -> np.ndarray:
        return self.encode(records, is_query=True, **kwargs)

    def encode_documents(self, records: Iterable[Record], **kwargs: Any) -> np.ndarray:
        return self.encode(records, is_query=False, **kwargs)

    def _iter_encoded(
        self,
        records: Iterable[Record],
        is_query: bool,
        batch_size: int | None,
        dim: int | None,
        show_progress: bool | None,
        rejects: RejectLog | None,
        total: int | None = None,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, embeddings)`` window by window, in input order (rejected records left out).

        Within a window of ``batch_size * sort_window_batches`` records, batches are formed from records of
        similar length and image count, which cuts padding; the order is restored before yielding. Image
        loading, tokenisation and collation (:meth:`iter_batches`) run ``config.prefetch_batches`` batches ahead
        of the model in a background thread.
        """
        bs = batch_size or self.config.batch_size
        show = self.config.show_progress if show_progress is None else show_progress
        want = dim or self.dim
        depth = self.config.prefetch_batches if total is None or total > bs else 0  # one batch: nothing to overlap
        was_training = self.module.training
        if was_training:
            self.module.eval()
        try:
            with (
                tqdm(total=total, disable=not show, unit="rec", desc="query" if is_query else "document") as bar,
                torch.inference_mode(),
            ):
                for item in prefetch(self.iter_batches(records, is_query, bs), depth, name="nyx-encode-prefetch"):
                    if isinstance(item, RecordError):
                        if rejects is None:
                            raise item
                        rejects.add(item)
                        bar.update(1)
                    elif isinstance(item, EncodeWindow):
                        ids, pending = item.ids, len(item.ids)
                        emb = np.zeros((pending, want), dtype=np.float32)
                        if not pending:  # every record of the window was rejected
                            yield ids, emb
                    else:
                        emb[item.rows] = mrl_truncate(self.embed(item.inputs), want).cpu().numpy()
                        pending -= len(item.rows)
                        bar.update(len(item.rows))
                        if not pending:
                            yield ids, emb
        finally:
            if was_training:
                self.module.train()

    def iter_batches(
        self, records: Iterable[Record], is_query: bool, batch_size: int
    ) -> Iterator[RecordError | EncodeWindow | EncodeBatch]:
        """The CPU side of encoding as a stream. Per window of ``batch_size * sort_window_batches`` records:
        a :class:`RecordError` for each record that cannot be prepared, then an :class:`EncodeWindow` with the
        ids of the others, then an :class:`EncodeBatch` per length-sorted batch."""
        for chunk in chunked(records, batch_size * self.config.sort_window_batches):
            prepared: list[PreparedInput] = []
            for r in chunk:
                try:
                    prepared.append(self.prepare(r, is_query))
                except RecordError as e:
                    yield e
            yield EncodeWindow([p.record_id for p in prepared])
            order = sorted(range(len(prepared)), key=lambda i: (-prepared[i].length, -prepared[i].n_images))
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                yield EncodeBatch(rows, self.collate_prepared([prepared[i] for i in rows]))

    def encode_to_shards(
        self,
        records: Iterable[Record],
        out_dir: str | os.PathLike,
        shard_size: int = 10_000,
        is_query: bool = False,
        batch_size: int | None = None,
        dim: int | None = None,
        rejects: RejectLog | None = None,
        show_progress: bool | None = None,
    ) -> dict[str, Any]:
        """Stream embeddings to ``out_dir`` as ``.npy`` shards with their ids (for corpora larger than memory).

        Writes ``embeddings-00000.npy`` + ``ids-00000.json`` per ``shard_size`` records, then ``manifest.json``
        (shards, count, dim, :meth:`info`). Each file is written atomically. Records that cannot be prepared go
        to ``rejects`` when given (and are left out), otherwise they raise. Returns the manifest.
        """
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        want = dim or self.dim
        shards: list[dict[str, Any]] = []
        ids_buf: list[str] = []
        emb_buf: list[np.ndarray] = []
        buffered = 0
        total = len(records) if hasattr(records, "__len__") else None  # type: ignore[arg-type]

        def flush() -> None:
            nonlocal ids_buf, emb_buf, buffered
            if not buffered:
                return
            k = len(shards)
            emb = np.concatenate(emb_buf)[:buffered]
            emb_name, ids_name = f"embeddings-{k:05d}.npy", f"ids-{k:05d}.json"
            with atomic_write(out / emb_name, "wb") as f:
                np.save(f, emb)
            write_json(ids_buf, out / ids_name)
            shards.append({"embeddings": emb_name, "ids": ids_name, "count": buffered})
            ids_buf, emb_buf, buffered = [], [], 0

        for ids, emb in self._iter_encoded(records, is_query, batch_size, want, show_progress, rejects, total):
            pos = 0
            while pos < len(ids):
                take = min(shard_size - buffered, len(ids) - pos)
                ids_buf.extend(ids[pos : pos + take])
                emb_buf.append(emb[pos : pos + take])
                buffered += take
                pos += take
                if buffered == shard_size:
                    flush()
        flush()
        manifest = {
            "count": sum(s["count"] for s in shards),
            "dim": want,
            "dtype": "float32",
            "is_query": is_query,
            "shards": shards,
            "encoder": {**self.info(), "dim": want},
            "rejected": len(rejects) if rejects is not None else 0,
        }
        write_json(manifest, out / "manifest.json")
        return manifest


def read_shards(out_dir: str | os.PathLike, mmap: bool = True) -> Iterator[tuple[list[str], np.ndarray]]:
    """Iterate ``(ids, embeddings)`` over the shards written by :meth:`NyxEncoder.encode_to_shards`."""
    out = Path(out_dir)
    manifest = read_json(out / "manifest.json")
    for shard in manifest["shards"]:
        emb = np.load(out / shard["embeddings"], mmap_mode="r" if mmap else None)
        ids = read_json(out / shard["ids"])
        if len(ids) != len(emb):
            raise ValueError(f"shard {shard['embeddings']}: {len(emb)} embeddings but {len(ids)} ids")
        yield ids, emb


__all__ = ["EncodeBatch", "EncodeWindow", "NyxEncoder", "read_shards"]
