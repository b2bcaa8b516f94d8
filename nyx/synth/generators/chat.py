"""What the model-backed generators (``openai``, ``local``) share: prompts -> chat requests -> parsed JSON.

A :class:`ChatRequest` is one user turn as interleaved parts (text and image references, in order); each
backend converts it to its own wire format (OpenAI ``image_url`` content parts with data URLs; Qwen's
chat template with ``<|image_pad|>`` placeholders) and returns the raw reply text, or ``None`` when the
call failed. Replies that do not parse are counted (``unparseable``) and dropped, never fatal.
"""

from __future__ import annotations

import json
import logging
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nyx.data.records import Part, Record
from nyx.synth.generators.base import Generator, QAPair
from nyx.synth.generators.prompts import Prompt, load_prompt
from nyx.synth.text import normalize_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    """One single-turn chat request: the purpose (for stats), the prompt identity and the user parts."""

    purpose: str
    prompt_id: str
    parts: tuple[Part, ...]

    @property
    def images(self) -> list[str]:
        return [p.image for p in self.parts if p.type == "image" and p.image]


def record_parts(record: Record) -> list[Part]:
    """A record's content with a ``<image k>`` marker announcing each image (1-based, record order)."""
    out: list[Part] = []
    k = 0
    for p in record.content:
        if p.type == "image":
            k += 1
            out.append(Part.of_text(f"<image {k}>"))
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------------------------
# Parsing model output
# ------------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json_payload(text: str | None) -> Any | None:
    """The JSON value in a model reply (bare, fenced in ```json, or embedded in prose), else ``None``."""
    if not text:
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        cand = cand.strip()
        try:
            return json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            pass
        for open_, close in (("{", "}"), ("[", "]")):
            i, j = cand.find(open_), cand.rfind(close)
            if 0 <= i < j:
                try:
                    return json.loads(cand[i : j + 1])
                except (json.JSONDecodeError, ValueError):
                    continue
    return None


def _as_int_list(value: Any) -> list[int] | None:
    if value is None:
        return []
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, list):
        return None
    out: list[int] = []
    for v in value:
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            out.append(v)
        elif isinstance(v, str) and re.fullmatch(r"\s*(?:image\s*)?(\d+)\s*", v, re.I):
            out.append(int(re.findall(r"\d+", v)[0]))
        else:
            return None
    return out


def parse_qa_items(obj: Any) -> list[dict[str, Any]] | None:
    """Validated QA items ``{question, answer, images, id?}`` from ``{"qa": [...]}`` or a bare list.

    ``None`` when the shape is wrong; single malformed items are skipped.
    """
    items = obj.get("qa") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        return None
    out: list[dict[str, Any]] = []
    for it in items:
        if not isinstance(it, dict):
            continue
        q, a = it.get("question"), it.get("answer")
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = str(a)
        images = _as_int_list(it.get("images", it.get("image_refs")))
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip() or images is None:
            continue
        item: dict[str, Any] = {"question": q.strip(), "answer": a.strip(), "images": images}
        if isinstance(it.get("id"), int) and not isinstance(it.get("id"), bool):
            item["id"] = it["id"]
        out.append(item)
    return out


# ------------------------------------------------------------------------------------------------------------
# The shared generator
# ------------------------------------------------------------------------------------------------------------


class ChatGenerator(Generator):
    """A generator whose passes are prompts sent to a chat model; subclasses implement :meth:`complete`."""

    def __init__(self, prompt_version: str = "v1", **kwargs: Any):
        super().__init__(**kwargs)
        self.prompt_version = prompt_version
        self.prompts: dict[str, Prompt] = {
            name: load_prompt(name, prompt_version)
            for name in ("qa_generation", "multi_image_qa", "qa_refine", "distractors", "reader")
        }

    @abstractmethod
    def complete(self, request: ChatRequest) -> str | None:
        """The model's reply text, or ``None`` when the call failed for good (already counted)."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prompts": {k: p.id for k, p in self.prompts.items()}}

    # -- helpers -------------------------------------------------------------------------------------------------

    def _request(self, purpose: str, prompt: str, values: dict[str, Any], tail: Sequence[Part]) -> ChatRequest:
        p = self.prompts[prompt]
        text = p.render(**values)
        return ChatRequest(purpose=purpose, prompt_id=p.id, parts=(Part.of_text(text), *tail))

    def _json(self, request: ChatRequest) -> Any | None:
        reply = self.complete(request)
        if reply is None:
            return None
        obj = parse_json_payload(reply)
        if obj is None:
            self.stats.inc(f"unparseable.{request.purpose}")
            log.debug("unparseable %s reply (%d chars)", request.purpose, len(reply))
        return obj

    def _pairs(self, request: ChatRequest) -> list[QAPair]:
        obj = self._json(request)
        if obj is None:
            return []
        items = parse_qa_items(obj)
        if items is None:
            self.stats.inc(f"unparseable.{request.purpose}")
            return []
        return [
            QAPair(
                question=it["question"],
                answer=it["answer"],
                image_refs=it["images"],
                meta={"prompt": request.prompt_id},
            )
            for it in items
        ]

    # -- the passes ----------------------------------------------------------------------------------------------

    def generate_qa(self, chunk: Record) -> list[QAPair]:
        values = {
            "max_pairs": self.max_qa_per_chunk,
            "max_answer_words": self.max_answer_words,
            "n_images": chunk.n_images,
        }
        return self._pairs(self._request("qa", "qa_generation", values, record_parts(chunk)))

    def generate_multi_image_qa(self, chunk: Record) -> list[QAPair]:
        values = {
            "max_pairs": self.multi_image_questions,
            "max_answer_words": self.max_answer_words,
            "n_images": chunk.n_images,
        }
        return self._pairs(self._request("multi_image_qa", "multi_image_qa", values, record_parts(chunk)))

    def refine(self, chunk: Record, pairs: list[QAPair]) -> list[QAPair]:
        listing = json.dumps(
            [
                {"id": i, "question": p.question, "answer": p.answer, "images": p.image_refs}
                for i, p in enumerate(pairs)
            ],
            ensure_ascii=False,
            indent=1,
        )
        request = self._request(
            "refine", "qa_refine", {"pairs": listing, "max_answer_words": self.max_answer_words}, record_parts(chunk)
        )
        obj = self._json(request)
        items = parse_qa_items(obj) if obj is not None else None
        if items is None:
            if obj is not None:
                self.stats.inc("unparseable.refine")
            return []
        out: list[QAPair] = []
        for it in items:
            i = it.get("id")
            if i is None or not 0 <= i < len(pairs):
                self.stats.inc("refine_unknown_id")
                continue
            src = pairs[i]  # question and images stay those of the first pass
            out.append(
                QAPair(
                    question=src.question,
                    answer=it["answer"],
                    image_refs=src.image_refs,
                    kind=src.kind,
                    meta={**src.meta, "refine_prompt": request.prompt_id},
                )
            )
        self.stats.inc("refine_deleted", len(pairs) - len(out))
        return out

    def distractors(self, question: str, answer: str, chunk: Record, n: int = 3) -> list[str]:
        request = self._request(
            "distractors", "distractors", {"question": question, "answer": answer, "n": n}, record_parts(chunk)
        )
        obj = self._json(request)
        items = obj.get("distractors") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            if obj is not None:
                self.stats.inc("unparseable.distractors")
            return []
        seen = {normalize_answer(answer)}
        out: list[str] = []
        for d in items:
            if isinstance(d, (int, float)) and not isinstance(d, bool):
                d = str(d)
            if not isinstance(d, str) or not d.strip() or normalize_answer(d) in seen:
                continue
            seen.add(normalize_answer(d))
            out.append(d.strip())
        return out[:n]

    def answer(
        self, question: str | Record, context_records: Sequence[Record], choices: Sequence[str] | None = None
    ) -> str:
        q_text = question.text if isinstance(question, Record) else question
        q_images = question.images if isinstance(question, Record) else []
        block = ""
        if choices:
            block = "\nChoose one of these options and reply with its text exactly:\n" + "\n".join(
                f"- {c}" for c in choices
            )
        tail: list[Part] = []
        if q_images:
            tail += [Part.of_text("Images given with the question:"), *(Part.of_image(i) for i in q_images)]
        tail.append(Part.of_text("Documents:"))
        for k, doc in enumerate(context_records, start=1):
            tail.append(Part.of_text(f"[Document {k}]"))
            tail.extend(record_parts(doc))
        request = self._request(
            "reader",
            "reader",
            {"question": q_text, "choices_block": block, "max_answer_words": self.max_answer_words},
            tail,
        )
        reply = self.complete(request)
        if reply is None:
            return ""
        text = reply.strip().splitlines()[0].strip() if reply.strip() else ""
        text = re.sub(r"^(answer|final answer)\s*:\s*", "", text, flags=re.I).strip().strip('"').strip()
        if choices:
            norm = normalize_answer(text)
            for c in choices:
                if normalize_answer(c) == norm:
                    return c
            for c in choices:  # "B) Paris" or "Paris." style replies
                if normalize_answer(c) and normalize_answer(c) in norm:
                    return c
        return text
