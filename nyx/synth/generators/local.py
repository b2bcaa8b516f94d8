"""A generator that runs a Qwen2.5-VL in-process with transformers ``generate`` (greedy decoding).

It builds the same requests as the ``openai`` generator (same prompt files) and renders them with the
model's chat template: each image becomes ``<|vision_start|><|image_pad|><|vision_end|>`` in place, and the
processor expands it to the image's visual tokens. With the tiny offline profile (random weights) the
replies are meaningless; they are counted as unparseable and dropped, which is what the tests check.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from nyx.data.images import DEFAULT_IMAGE_CONFIG, ImageConfig, load_image
from nyx.synth.generators.chat import ChatGenerator, ChatRequest
from nyx.synth.generators.config import LocalSettings

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BatchFeature

log = logging.getLogger(__name__)


class LocalGenerator(ChatGenerator):
    """:class:`ChatGenerator` over a local Qwen2.5-VL (model and processor loaded on first use)."""

    kind = "local"
    concurrency = 1

    def __init__(
        self, settings: LocalSettings, image_cfg: ImageConfig | None = None, prompt_version: str = "v1", **kwargs: Any
    ):
        super().__init__(prompt_version=prompt_version, **kwargs)
        self.settings = settings
        self.image_cfg = image_cfg or DEFAULT_IMAGE_CONFIG
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    @property
    def model_ref(self) -> str:
        return self.settings.model_path or "tiny"

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.model_ref,
            "max_new_tokens": self.settings.max_new_tokens,
            "device": self.settings.device,
            "dtype": self.settings.dtype,
        }

    def _load(self) -> None:
        if self._model is None:
            from nyx.model.backbone import load_backbone, load_profile_processor

            self._processor = load_profile_processor(self.model_ref)
            self._model = load_backbone(self.model_ref, device=self.settings.device, dtype=self.settings.dtype)

    def build_inputs(self, request: ChatRequest) -> BatchFeature:
        """Model inputs (token ids, attention mask, pixel values, image grids) for one request."""
        self._load()
        content: list[dict[str, Any]] = []
        images = []
        for p in request.parts:
            if p.type == "text":
                content.append({"type": "text", "text": p.text or ""})
            else:
                content.append({"type": "image"})
                images.append(load_image(p.image or "", self.image_cfg))
        messages = [{"role": "user", "content": content}]
        prompt = self._processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._processor(text=[prompt], images=images or None, return_tensors="pt")

    def complete(self, request: ChatRequest) -> str | None:
        import torch

        self.stats.inc("calls")
        self.stats.inc(f"calls.{request.purpose}")
        with self._lock:  # one forward pass at a time; the model is not thread-safe
            inputs = self.build_inputs(request).to(self._model.device)
            with torch.inference_mode():
                out = self._model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False)
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return self._processor.tokenizer.decode(new_tokens, skip_special_tokens=True)

    def close(self) -> None:
        self._model = None
        self._processor = None
