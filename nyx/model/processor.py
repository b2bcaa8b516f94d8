"""The Qwen2.5-VL processor without torchvision and without a video processor.

transformers' ``Qwen2_5_VLProcessor`` insists on a video processor (which needs torchvision, never installed
here), and ``AutoProcessor.from_pretrained`` then silently falls back to the bare tokenizer. Nyx only embeds
text and still images, so :class:`NyxQwenProcessor` drops the video processor and always uses the PIL image
processor. It saves in, and loads from, the Hugging Face layout (also a folder laid out like the hub repo
``Qwen/Qwen2.5-VL-3B-Instruct``).
"""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoTokenizer, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from nyx.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

#: The pixel budgets of the paper (Qwen smart-resize bounds).


class NyxQwenProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for text and images only (no video processor, no torchvision).

    Use it like the parent: ``processor(text=[...], images=[...], return_tensors="pt")`` expands every
    ``<|image_pad|>`` into ``grid_thw.prod() // merge_size**2`` copies and returns ``pixel_values``,
    ``image_grid_thw`` and ``mm_token_type_ids`` beside the token ids.
    """

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs):
        if video_processor is not None:
            raise ValueError("NyxQwenProcessor handles text and images only: pass video_processor=None")
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    @classmethod
    def get_attributes(cls) -> list[str]:
        """The sub-processors that are saved and loaded: the image processor and the tokenizer."""
        return [a for a in super().get_attributes() if a != "video_processor"]

    def check_argument_for_proper_class(self, argument_name: str, argument: Any):
        if argument_name == "video_processor" and argument is None:
            return type(None)
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the PIL image processor (never the torchvision one) and the tokenizer."""
        kwargs.pop("subfolder", None)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    @property
    def merge_size(self) -> int:
        return int(self.image_processor.merge_size)

    def is_resized(self, height: int, width: int) -> bool:
        """True when smart-resize leaves an image of this size as it is (its resize would be an identity)."""
        ip = self.image_processor
        factor = int(ip.patch_size) * self.merge_size
        return smart_resize(
            height, width, factor=factor, min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"]
        ) == (height, width)

    def num_image_tokens(self, height: int, width: int) -> int:
        """How many ``<|image_pad|>`` tokens an image of this size expands to (after smart-resize)."""
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return int(patches) // (self.merge_size**2)

    @property
    def factor(self) -> int:
        """The side in pixels of one merged image token (patch size x merge size: 28 for Qwen2.5-VL)."""
        return int(self.image_processor.patch_size) * self.merge_size

    def shrunk_size(self, height: int, width: int, max_tokens: int) -> tuple[int, int]:
        """``(height, width)`` of an image scaled down to cost at most ``max_tokens`` image tokens.

        The aspect ratio is kept (both sides multiples of :attr:`factor`) and the size is one the processor
        leaves as it is (:meth:`is_resized`). Never below the pixel floor (``min_pixels``): where
        ``max_tokens`` is under the floor, the floor's size is returned and costs more than ``max_tokens``,
        so read the cost with :meth:`num_image_tokens`. An image already within ``max_tokens`` keeps its size.
        """
        ip = self.image_processor
        f, low, high = self.factor, int(ip.size["shortest_edge"]), int(ip.size["longest_edge"])
        cap = min(max(int(max_tokens) * f * f, low), high)
        h, w = smart_resize(height, width, factor=f, min_pixels=low, max_pixels=cap)
        while h * w > cap and max(h, w) > f:  # a very thin image: smart-resize clamps its short side up to f
            if h >= w:
                h -= f
            else:
                w -= f
        # below the floor the processor would scale it up again: return that size, so it is left alone
        return smart_resize(h, w, factor=f, min_pixels=low, max_pixels=high)


def load_processor(
    name_or_path: str | os.PathLike,
    min_pixels: int | None = DEFAULT_MIN_PIXELS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    revision: str | None = None,
    **kwargs: Any,
) -> NyxQwenProcessor:
    """Load a :class:`NyxQwenProcessor` from a hub id or a local folder, with the given pixel budget.

    ``min_pixels``/``max_pixels`` override the saved image-processor bounds (``None`` keeps them).
    """
    if revision is not None:
        kwargs["revision"] = revision
    processor = NyxQwenProcessor.from_pretrained(os.fspath(name_or_path), **kwargs)
    set_pixel_budget(processor, min_pixels, max_pixels)
    return processor


def set_pixel_budget(processor: NyxQwenProcessor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set the smart-resize bounds of the processor's image processor in place."""
    ip = processor.image_processor
    size = dict(ip.size)
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
    ip.size = type(ip.size)(**size) if not isinstance(ip.size, dict) else size
    # Older attribute names still read by some code paths.
    for name, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        if hasattr(ip, name):
            setattr(ip, name, size[key])
