"""Small offline files of every external training-source format, written by code (never copied from the datasets).

:func:`write_sample_sources` writes, under one folder (``<data>/external`` for ``prepare_sample``)::

    mmeb_sample/train.jsonl + images/           research format (MMEB / mmE5 columns)
    hotpotqa_sample/train.json                  HotpotQA distractor setting (JSON array)
    2wikimultihopqa_sample/train.json           2WikiMultihopQA (HotpotQA's format + type, evidences)
    musique_sample/train.jsonl                  MuSiQue (paragraphs with is_supporting)
    hotpotqa_retrieved_sample/train_with_retrieved_docs.jsonl
                                                questions with ranked pre-retrieved passages (the paper's rows with
                                                ``qry``/``retrieved_docs`` and one FlashRAG-style row)

Each file has good rows and a few rows that each conversion rule must catch; :data:`EXPECTED` says how many rows
each has, how many are usable and why the others are rejected (``tests/nyx/train/test_training_sources.py``). The
content is invented (the fictional lake towns of Varnholm), so no NyxQA question can occur in it by chance. Same
call, same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: fixture -> (file relative to the folder, format, recipe)
SAMPLE_FILES: dict[str, tuple[str, str, str | None]] = {
    "mmeb": ("mmeb_sample/train.jsonl", "research", None),
    "hotpotqa": ("hotpotqa_sample/train.json", "hotpotqa", "gold"),
    "2wikimultihopqa": ("2wikimultihopqa_sample/train.json", "2wikimultihopqa", "gold"),
    "musique": ("musique_sample/train.jsonl", "musique", "gold"),
    "retrieved": ("hotpotqa_retrieved_sample/train_with_retrieved_docs.jsonl", "hotpotqa", "retrieved"),
}

#: fixture -> rows in the file, usable triples, rejected rows by reason (the text before the first colon), and
#: rows repaired rather than rejected
EXPECTED: dict[str, dict[str, Any]] = {
    "mmeb": {
        "loaded": 11,
        "usable": 8,
        "reasons": {"empty pos_text": 1, "unresolvable image": 1, "malformed JSON line": 1},
        "fixed": {"stray image token removed from a text-only query": 1},
        "dropped_negatives": {"negative equals the positive": 1},
    },
    "hotpotqa": {"loaded": 8, "usable": 6, "reasons": {"no supporting paragraph (unanswerable)": 1, "query": 1}},
    "2wikimultihopqa": {"loaded": 5, "usable": 4, "reasons": {"no supporting paragraph (unanswerable)": 1}},
    "musique": {"loaded": 5, "usable": 4, "reasons": {"no supporting paragraph (unanswerable)": 1}},
    "retrieved": {
        "loaded": 6,
        "usable": 5,
        "reasons": {"no retrieved passages (retrieved_docs / output.retrieval_result)": 1},
    },
}

TOWNS = ["Varnholm", "Quellmoor", "Brisket Ford", "Ottervale", "Lindmere", "Harrowgate", "Selbyck", "Tamsworth"]
LAKES = [
    "Lake Orrin",
    "Lake Pell",
    "Lake Dunmarrow",
    "Lake Ysolde",
    "Lake Carrow",
    "Lake Fenwick",
    "Lake Ambry",
    "Lake Tolley",
]
TRADES = [
    "rope-making",
    "glass-blowing",
    "eel fishing",
    "bell casting",
    "peat cutting",
    "boat building",
    "lace weaving",
    "salt panning",
]
COLOURS = [
    (200, 40, 40),
    (40, 160, 60),
    (40, 70, 200),
    (220, 180, 30),
    (140, 60, 170),
    (30, 170, 170),
    (240, 120, 20),
    (90, 90, 90),
]


def _png(path: Path, colour: tuple[int, int, int], stripe: int) -> None:
    from PIL import Image, ImageDraw

    from nyx.data.images import encode_png

    img = Image.new("RGB", (84, 84), colour)
    draw = ImageDraw.Draw(img)
    draw.rectangle([stripe * 9 % 70, 10, stripe * 9 % 70 + 12, 74], fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(img))


def _para(i: int) -> tuple[str, list[str]]:
    t, lake, trade = TOWNS[i % 8], LAKES[i % 8], TRADES[i % 8]
    return t, [f"{t} is a small town on the shore of {lake}.", f"It is known for {trade} since the old charter."]


def _write_lines(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")


def _mmeb(folder: Path) -> None:
    for i, colour in enumerate(COLOURS):
        _png(folder / "images" / f"scene_{i}.png", colour, i)
    rows: list[Any] = []
    for i in range(3):  # image query -> text positive, image negative
        rows.append(
            {
                "qry": "<|image_1|>\nWhich lake town does this banner belong to?",
                "qry_image_path": f"images/scene_{i}.png",
                "pos_text": f"The banner of {TOWNS[i]}, on {LAKES[i]}.",
                "pos_image_path": "",
                "neg_text": f"The banner of {TOWNS[i + 4]}, on {LAKES[i + 4]}.",
                "neg_image_path": "",
            }
        )
    for i in range(3, 5):  # text query -> image positive (MMEB's t2i), image negative
        rows.append(
            {
                "qry": f"Find the banner of {TOWNS[i]}.",
                "qry_image_path": "",
                "pos_text": "<|image_1|>\nRepresent the given banner.",
                "pos_image_path": f"images/scene_{i}.png",
                "neg_text": "<|image_1|>\nRepresent the given banner.",
                "neg_image_path": f"images/scene_{i + 2}.png",
            }
        )
    # image + text query with parallel lists of negatives (mmE5's hard negatives)
    rows.append(
        {
            "qry": "<|image_1|>\nWhat trade is shown in this banner of Selbyck?",
            "qry_image_path": "images/scene_6.png",
            "pos_text": f"Selbyck is known for {TRADES[6]}.",
            "pos_image_path": "",
            "neg_text": [f"Ottervale is known for {TRADES[3]}.", f"Lindmere is known for {TRADES[4]}."],
            "neg_image_path": ["", ""],
        }
    )
    # a text-only query with a stray image token: repaired, kept
    rows.append(
        {
            "qry": "<|image_1|>\nWhich town on Lake Tolley makes salt?",
            "qry_image_path": "",
            "pos_text": f"Tamsworth on {LAKES[7]} is known for {TRADES[7]}.",
            "pos_image_path": "",
            "neg_text": f"Harrowgate on {LAKES[5]} is known for {TRADES[5]}.",
            "neg_image_path": "",
        }
    )
    # a negative equal to the positive: the negative is dropped, the row kept
    rows.append(
        {
            "qry": "Which town on Lake Ambry casts bells?",
            "qry_image_path": "",
            "pos_text": f"Harrowgate on {LAKES[5]} is known for {TRADES[3]}.",
            "pos_image_path": "",
            "neg_text": f"Harrowgate on {LAKES[5]} is known for {TRADES[3]}.",
            "neg_image_path": "",
        }
    )
    # rejected: empty pos_text; an image that does not exist; a malformed line
    rows.append(
        {
            "qry": "Which town weaves lace?",
            "qry_image_path": "",
            "pos_text": "",
            "pos_image_path": "",
            "neg_text": "",
            "neg_image_path": "",
        }
    )
    rows.append(
        {
            "qry": "<|image_1|>\nWhose banner is this?",
            "qry_image_path": "images/missing.png",
            "pos_text": "The banner of Varnholm.",
            "pos_image_path": "",
            "neg_text": "",
            "neg_image_path": "",
        }
    )
    rows.append('{"qry": "Which town cuts peat?", "pos_text": ')
    _write_lines(folder / "train.jsonl", rows)


def _hotpot_row(i: int, question: str, supporting: list[int], distractors: list[int], **extra: Any) -> dict:
    context = [list(_para(j)) for j in supporting + distractors]
    facts = [[_para(j)[0], 0] for j in supporting]
    return {
        "_id": f"vh{i:04d}",
        "question": question,
        "answer": TOWNS[(supporting or [0])[-1] % 8],
        "supporting_facts": facts,
        "context": context,
        **extra,
    }


def _hotpot_rows(prefix: str, n_good: int, two_wiki: bool = False) -> list[dict]:
    rows = []
    for i in range(n_good):
        a, b = i % 8, (i + 1) % 8
        extra = (
            {"type": "compositional", "evidences": [[TOWNS[a], "located on", LAKES[a]]]}
            if two_wiki
            else {"type": "bridge", "level": "easy"}
        )
        rows.append(
            _hotpot_row(
                i,
                f"{prefix}Which {TRADES[b]} town shares a charter with the town on {LAKES[a]}?",
                [a, b],
                [(i + 3) % 8, (i + 5) % 8],
                **extra,
            )
        )
    # no supporting fact names a paragraph of the context: nothing to use as the positive
    bad = _hotpot_row(
        90,
        f"{prefix}Which town lies between {LAKES[0]} and {LAKES[1]}?",
        [],
        [2, 3],
        **({"type": "comparison", "evidences": []} if two_wiki else {"type": "comparison", "level": "hard"}),
    )
    bad["supporting_facts"] = [["Nowhere Fen", 0]]
    rows.append(bad)
    return rows


def _hotpot(folder: Path) -> None:
    rows = _hotpot_rows("", 6)
    rows.append(_hotpot_row(91, "   ", [0], [1], type="bridge", level="easy"))  # no question
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _two_wiki(folder: Path) -> None:
    rows = _hotpot_rows("In the registry, ", 4, two_wiki=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _musique(folder: Path) -> None:
    rows = []
    for i in range(5):
        supporting = {i % 8, (i + 2) % 8} if i < 4 else set()  # the last one is unanswerable
        paras = [
            {
                "idx": k,
                "title": _para(j)[0],
                "paragraph_text": " ".join(_para(j)[1]),
                "is_supporting": j % 8 in supporting,
            }
            for k, j in enumerate(range(i, i + 6))
        ]
        rows.append(
            {
                "id": f"2hop__{i}_{i + 2}",
                "paragraphs": paras,
                "question": f"Which trade is practised in the town that chartered {TOWNS[(i + 2) % 8]}?",
                "question_decomposition": [],
                "answer": TRADES[(i + 2) % 8],
                "answer_aliases": [],
                "answerable": i < 4,
            }
        )
    _write_lines(folder / "train.jsonl", rows)


def _retrieved(folder: Path) -> None:
    def passage(j: int) -> str:
        t, sents = _para(j)
        return f"{t}\n{' '.join(sents)} (record {j})"

    rows: list[Any] = []
    for i in range(4):  # the paper's rows: qry, ans, retrieved_docs (15 passages, best first)
        rows.append(
            {
                "qry": f"Which town by {LAKES[i]} holds the oldest charter (ledger {i})?",
                "ans": [TOWNS[i]],
                "retrieved_docs": [passage(i * 20 + r) for r in range(15)],
            }
        )
    # a FlashRAG-style row: question, golden_answers, output.retrieval_result of {"id", "contents"}
    rows.append(
        {
            "id": "train_4",
            "question": "Which town by Lake Ysolde holds the oldest charter (ledger 4)?",
            "golden_answers": [TOWNS[3]],
            "metadata": {},
            "output": {
                "retrieval_result": [
                    {"id": str(100 + r), "contents": f'"{_para(r)[0]}"\n{" ".join(_para(r)[1])} ({r})'}
                    for r in range(14)
                ]
            },
        }
    )
    rows.append({"qry": "Which town keeps no ledger?", "ans": ["none"], "retrieved_docs": []})  # rejected
    _write_lines(folder / "train_with_retrieved_docs.jsonl", rows)


WRITERS = {
    "mmeb": _mmeb,
    "hotpotqa": _hotpot,
    "2wikimultihopqa": _two_wiki,
    "musique": _musique,
    "retrieved": _retrieved,
}


def write_sample_sources(folder: str | os.PathLike) -> dict[str, Path]:
    """Write every fixture under ``folder``; returns ``{fixture: file}``."""
    folder = Path(folder)
    out = {}
    for name, (rel, _, _) in SAMPLE_FILES.items():
        WRITERS[name]((folder / rel).parent)
        out[name] = folder / rel
    return out


#: where ``prepare_sample`` writes the fixtures, relative to the data root (the rehearsal profile points there)
SAMPLE_SOURCES_DIR = "external"


def ensure_sample_sources(paths, profile) -> list[Path]:
    """For a profile that runs on the bundled sample (``sample`` settings): write the fixtures under
    ``<data>/external`` when a declared source points at one that is missing. Returns the files written."""
    if getattr(profile, "sample", None) is None:
        return []
    root = paths.root / SAMPLE_SOURCES_DIR
    wanted = {(root / rel).resolve() for rel, _, _ in SAMPLE_FILES.values()}
    declared = [
        Path(s.path) if Path(s.path).is_absolute() else paths.root / s.path for s in profile.stage1.extra_sources
    ]
    if any(p.resolve() in wanted and not p.is_file() for p in declared):
        return list(write_sample_sources(root).values())
    return []
