"""Records -> model inputs: input preparation (:meth:`NyxCollator.prepare`) and both collate paths.

The flow for one batch, shared by inference and training::

    records --prepare--> PreparedInput (text with one <|image_pad|> per image, loaded images, exact length)
            --collate--> model inputs (input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw)

* Each image part becomes ``<|vision_start|><|image_pad|><|vision_end|>`` in reading order; the processor expands
  the pad token into ``grid_thw.prod() // merge_size**2`` copies.
* Queries are wrapped in an instruction (:class:`~nyx.model.templates.QueryTemplate`, per task); documents carry
  none.
* Fitting a record into its token limit (:meth:`NyxCollator.prepare`): a record that fits is left as it is.
  Otherwise images are first shrunk (aspect ratio kept, never below ``min_pixels``) just enough that the text
  keeps ``min(its length, min_text_share`` of the budget``)``; then text parts are cut, before tokenisation and
  expansion, with image tokens budgeted from each image's grid. An image's tokens are never cut; only trailing
  images that do not fit even at the pixel floor are dropped (counted, and logged with the record id), so
  "Image features and image tokens do not match" cannot happen.
* Collation (:meth:`NyxCollator.collate_prepared`) either runs the processor on the prepared texts and images, or,
  when it could not tokenise differently, reuses :meth:`~NyxCollator.prepare`'s token ids and only runs the image
  processor (the same tensors, without tokenising twice).

:class:`~nyx.model.encoder.NyxEncoder` owns one :class:`NyxCollator` and exposes its methods.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from nyx.data.images import ImageConfig, load_image
from nyx.data.records import Record
from nyx.data.rejects import RecordError
from nyx.model.config import EncoderConfig
from nyx.model.processor import NyxQwenProcessor, set_pixel_budget

log = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
#: The counters of :attr:`NyxEncoder.input_stats`.
INPUT_STAT_KEYS = (
    "records",
    "text_truncated",
    "images_shrunk",
    "images_dropped",
    "records_with_shrunk_images",
    "records_with_dropped_images",
)


@dataclass
class PreparedInput:
    """One record ready for the processor: text with one ``<|image_pad|>`` per kept image, and the images."""

    record_id: str
    text: str
    images: list[Any]
    image_tokens: list[int]
    length: int  # exact number of tokens after the processor's expansion
    truncated: bool = False  # text cut or images dropped
    dropped_images: int = 0  # trailing images left out: they do not fit even at the pixel floor
    shrunk_images: int = 0  # kept images scaled down (below the pixel budget) to fit
    #: token ids of ``text`` (one ``<|image_pad|>`` per image, not yet expanded); lets collation skip
    #: re-tokenising. ``None``: the processor tokenises ``text``.
    input_ids: list[int] | None = None

    @property
    def n_images(self) -> int:
        return len(self.images)


class NyxCollator:
    """Builds model inputs from records for one processor and :class:`~nyx.model.config.EncoderConfig`.

    Sets the processor's pixel budget to the config's. :attr:`input_stats` counts, cumulatively over every
    :meth:`prepare` since construction or :meth:`reset_input_stats`: ``records`` prepared, ``text_truncated``
    (records whose text was cut), ``images_shrunk`` / ``images_dropped`` (images scaled down to fit / left out, as
    they do not fit even at the pixel floor) and ``records_with_shrunk_images`` / ``records_with_dropped_images``.
    """

    def __init__(self, processor: NyxQwenProcessor, config: EncoderConfig):
        self.config = config
        self._stats_lock = threading.Lock()
        self._input_stats = dict.fromkeys(INPUT_STAT_KEYS, 0)
        self.processor = processor
        self.image_config = ImageConfig(max_pixels=self.config.max_pixels, min_pixels=self.config.min_pixels)
        set_pixel_budget(processor, self.config.min_pixels, self.config.max_pixels)
        self.tokenizer = processor.tokenizer
        specials = sorted(
            set(self.tokenizer.all_special_tokens)
            | {
                IMAGE_PLACEHOLDER,
                "<|vision_pad|>",
                "<|video_pad|>",
                "<|image_pad|>",
                "<|vision_start|>",
                "<|vision_end|>",
            },
            key=len,
            reverse=True,
        )
        self._special_re = re.compile("|".join(re.escape(s) for s in specials if s))
        self._frame_lengths: dict[str, int] = {}
        self._image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        # Collation may reuse prepare()'s token ids when tokenising them again (as the processor does, with
        # the tokenizer's default special tokens) could not differ: the tokenizer adds no special tokens.
        probe = "a <|image_pad|> b"
        self.reuse_ids = (
            getattr(processor, "image_token_id", None) == self._image_token_id
            and self.tokenizer(probe)["input_ids"] == self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        )
        unk = self.tokenizer.unk_token_id
        for tok in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", self.config.eos_token):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if tid is None or (unk is not None and tid == unk):
                raise ValueError(f"the tokenizer has no {tok!r} token")

    # -- input statistics ---------------------------------------------------------------------------------

    @property
    def input_stats(self) -> dict[str, int]:
        """A copy of the cumulative input counters (see the class docstring), e.g. for an index manifest."""
        with self._stats_lock:
            return dict(self._input_stats)

    def reset_input_stats(self) -> None:
        """Set every :attr:`input_stats` counter back to 0."""
        with self._stats_lock:
            self._input_stats = dict.fromkeys(INPUT_STAT_KEYS, 0)

    def _count_input(self, prepared: PreparedInput, text_truncated: bool) -> None:
        with self._stats_lock:
            st = self._input_stats
            st["records"] += 1
            st["text_truncated"] += int(text_truncated)
            st["images_shrunk"] += prepared.shrunk_images
            st["images_dropped"] += prepared.dropped_images
            st["records_with_shrunk_images"] += int(prepared.shrunk_images > 0)
            st["records_with_dropped_images"] += int(prepared.dropped_images > 0)

    # -- input building ---------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        """Remove Qwen control tokens from user text (a literal ``<|image_pad|>`` would break the batch)."""
        return self._special_re.sub("", text)

    def _frame(self, record: Record, is_query: bool) -> tuple[str, str]:
        before, after = self.config.template_for(record).frame(record) if is_query else ("", "")
        if self.config.input_style == "chat":
            before = "<|im_start|>user\n" + before
            after = after + "<|im_end|>\n<|im_start|>assistant\n"
        return before, after + self.config.eos_token

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added), in one tokenizer call."""
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def _n_tokens(self, text: str) -> int:
        """Token count of a frame string (instruction, chat wrapper, EOS): few distinct values, cached."""
        if text not in self._frame_lengths:
            if len(self._frame_lengths) > 1024:
                self._frame_lengths.clear()
            self._frame_lengths[text] = len(self._token_ids([text])[0]) if text else 0
        return self._frame_lengths[text]

    def prepare(self, record: Record, is_query: bool, max_length: int) -> PreparedInput:
        """Load the record's images and build its text within ``max_length`` tokens.

        The fitting rule, where ``budget`` is ``max_length`` less the instruction frame (template, chat wrapper,
        EOS) and ``keep = min(the record's text tokens, ceil(config.min_text_share * budget))``:

        1. a record that fits is left exactly as it is;
        2. when the images leave less than ``keep`` tokens for the text, they are shrunk (aspect ratio kept,
           the largest first, to one common per-image token cap, never below ``min_pixels``) just enough to
           leave ``keep``; only trailing images that do not fit ``budget`` even at the pixel floor are dropped
           (logged with the record id);
        3. then the text is cut to what the images leave (its end first); an image's tokens are never cut.

        So a page image with a long text layer always reaches the model as an image, and a short caption is
        never cut to make room for a picture. :attr:`input_stats` counts what was cut, shrunk and dropped.
        Raises :class:`RecordError` naming the record when an image cannot be loaded, or when the frame alone
        does not fit.
        """
        before, after = self._frame(record, is_query)
        pieces: list[tuple[str, Any]] = []  # ("text", str) or ("image", index into images)
        images: list[Any] = []
        image_tokens: list[int] = []
        for part in record.content:
            if part.type == "image":
                img = load_image(cast(str, part.image), self.image_config, record_id=record.id)
                pieces.append(("image", len(images)))
                images.append(img)
                image_tokens.append(self.processor.num_image_tokens(img.height, img.width))
            elif part.text:
                text = self._clean(part.text)
                if text:
                    if pieces and pieces[-1][0] == "text":
                        text = "\n" + text
                    pieces.append(("text", text))
        piece_ids = iter(self._token_ids([v for k, v in pieces if k == "text"]))
        text_ids = [next(piece_ids) if k == "text" else None for k, _ in pieces]
        max_len = int(max_length)
        frame_len = self._n_tokens(before) + self._n_tokens(after)
        total_text = sum(len(ids) for ids in text_ids if ids is not None)

        images, image_tokens, shrunk = self._fit_images(
            record.id, images, image_tokens, max_len - frame_len, total_text
        )
        n_keep = len(images)
        dropped = sum(1 for kind, _ in pieces if kind == "image") - n_keep
        if dropped:
            log.warning(
                "record %r: %d image(s) dropped, they do not fit max_length=%d even at min_pixels=%d",
                record.id,
                dropped,
                max_len,
                self.config.min_pixels,
            )

        budget = max_len - frame_len - sum(t + 2 for t in image_tokens)
        for _ in range(8):
            text, kept_text = self._assemble(before, after, pieces, text_ids, n_keep, budget)
            ids = self._token_ids([text])[0]
            length = len(ids) + sum(t - 1 for t in image_tokens[:n_keep])
            if length <= max_len or budget <= 0:
                break
            budget -= length - max_len  # re-tokenisation across part boundaries can differ by a few tokens
        if length > max_len:
            raise RecordError(
                f"cannot fit max_length={max_len}: instruction and images need {length} tokens", record_id=record.id
            )
        prepared = PreparedInput(
            record_id=record.id,
            text=text,
            images=images,
            image_tokens=image_tokens,
            length=length,
            truncated=kept_text < total_text or dropped > 0,
            dropped_images=dropped,
            shrunk_images=shrunk,
            input_ids=ids,
        )
        self._count_input(prepared, kept_text < total_text)
        return prepared

    def _fit_images(
        self, record_id: str, images: list[Any], image_tokens: list[int], budget: int, text_tokens: int
    ) -> tuple[list[Any], list[int], int]:
        """Step 2 of :meth:`prepare`'s rule: ``(kept images, their token counts, how many were shrunk)`` for a
        record with ``budget`` tokens beside its frame and ``text_tokens`` of text. Unchanged when the images
        leave the text its share; trailing images that do not fit ``budget`` at the pixel floor are left out."""
        cost = sum(t + 2 for t in image_tokens)  # + <|vision_start|> and <|vision_end|>
        keep_text = min(text_tokens, math.ceil(self.config.min_text_share * max(budget, 0)))
        if cost <= budget - keep_text:
            return images, image_tokens, 0
        proc = self.processor
        floor_tokens = max(1, self.config.min_pixels // proc.factor**2)

        def tokens_at(cap: int) -> list[tuple[int, int, int]]:
            """``(height, width, tokens)`` of each image under a per-image cap of ``cap`` tokens."""
            out = []
            for img, t in zip(images, image_tokens):
                if t <= cap:
                    out.append((img.height, img.width, t))
                else:
                    h, w = proc.shrunk_size(img.height, img.width, cap)
                    out.append((h, w, min(t, proc.num_image_tokens(h, w))))
            return out

        floors = tokens_at(floor_tokens)
        n_keep = len(images)
        while n_keep > 0 and sum(t + 2 for *_, t in floors[:n_keep]) > budget:
            n_keep -= 1
        images, image_tokens = images[:n_keep], image_tokens[:n_keep]
        target = max(budget - keep_text, sum(t + 2 for *_, t in floors[:n_keep]))
        if sum(t + 2 for t in image_tokens) <= target:
            return images, image_tokens, 0
        # the largest common per-image cap whose total fits (the floor fits by construction)
        low, high = floor_tokens, max(image_tokens)
        while low < high:
            mid = (low + high + 1) // 2
            if sum(t + 2 for *_, t in tokens_at(mid)) <= target:
                low = mid
            else:
                high = mid - 1
        sized, shrunk = tokens_at(low), 0
        fitted, fitted_tokens = [], []
        for img, t, (h, w, new_t) in zip(images, image_tokens, sized):
            if new_t < t:
                img = img.resize((w, h), resample=self.image_config.resample)
                shrunk += 1
            fitted.append(img)
            fitted_tokens.append(new_t)
        if shrunk:
            log.debug("record %r: %d image(s) shrunk to fit %d tokens", record_id, shrunk, budget)
        return fitted, fitted_tokens, shrunk

    def _assemble(
        self,
        before: str,
        after: str,
        pieces: list[tuple[str, Any]],
        text_ids: list[list[int] | None],
        n_images: int,
        budget: int,
    ) -> tuple[str, int]:
        """The input text with the first ``budget`` text tokens (in reading order) and the first images."""
        out, left, kept = [before], max(budget, 0), 0
        for (kind, value), ids in zip(pieces, text_ids):
            if kind == "image":
                if value < n_images:
                    out.append(IMAGE_PLACEHOLDER)
            elif left > 0:
                ids = cast("list[int]", ids)  # a text piece always has its ids
                if len(ids) <= left:
                    out.append(value)
                    left, kept = left - len(ids), kept + len(ids)
                else:
                    out.append(self.tokenizer.decode(ids[:left], skip_special_tokens=False))
                    left, kept = 0, kept + left
        out.append(after)
        return "".join(out), kept

    def collate_prepared(self, prepared: Sequence[PreparedInput]) -> dict[str, torch.Tensor]:
        """Run the processor on prepared inputs: padded token ids, masks, pixels and image grids (CPU tensors).

        When every input carries its token ids (from :meth:`prepare`), the text is not tokenised again:
        the ids are expanded and padded here exactly as the processor would, and only the images go
        through the image processor.
        """
        images = [img for p in prepared for img in p.images]
        extra: dict[str, Any] = {}
        if images and all(self.processor.is_resized(img.height, img.width) for img in images):
            extra["do_resize"] = False  # load_image already smart-resized them: skip PIL's identity resize
        if self.reuse_ids and all(p.input_ids is not None for p in prepared):
            return self._collate_ids(prepared, images, extra)
        batch = self.processor(
            text=[p.text for p in prepared],
            images=images or None,
            return_tensors="pt",
            padding=True,
            padding_side=self.config.padding_side,
            truncation=False,
            **extra,
        )
        return {k: v for k, v in batch.items() if k != "token_type_ids"}

    def _collate_ids(
        self, prepared: Sequence[PreparedInput], images: list[Any], image_kwargs: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """The processor's output built from prepared token ids: each ``<|image_pad|>`` expanded to its
        image's ``grid_thw.prod() // merge_size**2`` copies, then padded (``collate_prepared``'s fast path)."""
        out: dict[str, torch.Tensor] = {}
        counts = np.zeros(0, dtype=np.int64)
        if images:
            pixels = self.processor.image_processor(images=images, return_tensors="pt", **image_kwargs)
            out["pixel_values"], out["image_grid_thw"] = pixels["pixel_values"], pixels["image_grid_thw"]
            counts = (pixels["image_grid_thw"].prod(-1) // self.processor.merge_size**2).numpy()
        img_id, seqs, used = self._image_token_id, [], 0
        for p in prepared:
            ids = np.asarray(p.input_ids, dtype=np.int64)
            is_img = ids == img_id
            n_img = int(is_img.sum())
            if n_img != p.n_images:
                raise RecordError(f"{n_img} image tokens in the text for {p.n_images} images", record_id=p.record_id)
            reps = np.ones(len(ids), dtype=np.int64)
            reps[is_img] = counts[used : used + n_img]
            used += n_img
            seqs.append(np.repeat(ids, reps))
        longest = max(len(q) for q in seqs)
        input_ids = np.full((len(seqs), longest), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), longest), dtype=np.int64)
        for row, q in enumerate(seqs):
            cols = slice(0, len(q)) if self.config.padding_side == "right" else slice(longest - len(q), longest)
            input_ids[row, cols], mask[row, cols] = q, 1
        ids_t = torch.from_numpy(input_ids)
        return {
            "input_ids": ids_t,
            "attention_mask": torch.from_numpy(mask),
            "mm_token_type_ids": (ids_t == img_id).to(torch.int64),
            **out,
        }

    def collate(self, records: Sequence[Record], is_query: bool, max_length: int) -> dict[str, torch.Tensor]:
        """Records -> model inputs, each cut at ``max_length`` tokens."""
        return self.collate_prepared([self.prepare(r, is_query, max_length) for r in records])


__all__ = ["IMAGE_PLACEHOLDER", "INPUT_STAT_KEYS", "NyxCollator", "PreparedInput"]
