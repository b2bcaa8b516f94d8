"""The multimodal hard-negative miner: mmE5 (Llama-3.2-Vision) as a dense retriever, the tiny offline mllama that
stands in for it, the miner's identity in ``hard_negatives``' data version, and the profiles' choice of miner.

The image fixture: documents whose text is identical and whose only difference is the colour of their image, and
queries naming a colour. A text-only miner (MiniLM) cannot tell the documents apart; with random weights the tiny
mllama's ranking means nothing semantically, so "ranked by image content" is tested as what it is: the ranking
follows the images (moving the images between documents moves the ranking with them), and the text-only
miner's does not move at all.
"""

import json

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from nyx.data.beir import load_beir, write_beir
from nyx.data.records import Part, Record
from nyx.synth.mining import mine_hard_negatives, resolve_miner

COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 200, 40),
    "blue": (20, 40, 220),
    "yellow": (240, 230, 30),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "orange": (250, 140, 0),
    "purple": (130, 20, 160),
    "grey": (128, 128, 128),
    "pink": (250, 150, 200),
    "brown": (120, 70, 20),
    "cyan": (0, 220, 220),
}
DOC_TEXT = "A photograph from the town archive."
MINING = dict(k=8, skip=2, n=3)


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, rgb in COLOURS.items():
        path = folder / f"{name}.png"
        Image.new("RGB", (48, 36), rgb).save(path)
        out[name] = str(path)
    return out


def _fixture(images, order):
    """Documents ``d00..d11`` with identical text; document ``i`` shows colour ``order[i]``. One query per colour,
    its positive the document showing that colour."""
    corpus = [
        Record(id=f"d{i:02d}", content=[Part.of_text(DOC_TEXT), Part.of_image(images[c])]) for i, c in enumerate(order)
    ]
    holder = {c: f"d{i:02d}" for i, c in enumerate(order)}
    queries = [
        Record(
            id=f"q-{c}",
            content=[Part.of_text(f"Which photograph of the archive is {c}?")],
            extra={"positive_id": holder[c]},
        )
        for c in COLOURS
    ]
    return corpus, queries


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _images(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def tiny_miner():
    return resolve_miner("mme5", "tiny", batch_size=6)


# -- the tiny Llama-3.2-Vision -----------------------------------------------------------------------------------


def test_tiny_mllama_builds_offline_once_and_embeds_text_image_and_mixed_records_to_unit_vectors(tmp_path, images):
    from transformers import AutoConfig

    from nyx.model.tiny_mllama import ensure_tiny_mllama
    from nyx.retrieval.mme5 import MmE5Encoder
    from nyx.utils.build_cache import STAMP_FILENAME

    folder = ensure_tiny_mllama(tmp_path)
    assert AutoConfig.from_pretrained(folder).model_type == "mllama"
    stamp = (folder / STAMP_FILENAME).stat().st_mtime_ns
    assert ensure_tiny_mllama(tmp_path) == folder and (folder / STAMP_FILENAME).stat().st_mtime_ns == stamp  # cached

    enc = MmE5Encoder("tiny")
    records = [
        Record(id="t", content=[Part.of_text("the red bridge over the river")]),
        Record(id="i", content=[Part.of_image(images["red"])]),
        Record(id="m-red", content=[Part.of_text(DOC_TEXT), Part.of_image(images["red"])]),
        Record(id="m-blue", content=[Part.of_text(DOC_TEXT), Part.of_image(images["blue"])]),
        Record(
            id="m2", content=[Part.of_image(images["green"]), Part.of_text(DOC_TEXT), Part.of_image(images["pink"])]
        ),
    ]
    for emb in (enc.encode_documents(records, batch_size=2), enc.encode_queries(records, batch_size=3)):
        assert emb.shape == (len(records), enc.dim) and np.isfinite(emb).all()
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        # the image reaches the embedding: same text, different image colour, different vector
        assert not np.allclose(emb[2], emb[3], atol=1e-6)
    # batching does not change an embedding (last-token pooling finds the real last token under right padding)
    alone = enc.encode_documents([records[3]], batch_size=1)
    np.testing.assert_allclose(alone[0], enc.encode_documents(records, batch_size=8)[3], atol=1e-5)


def test_mme5_prompts_follow_the_published_format():
    from nyx.retrieval.mme5 import document_prompt, query_prompt

    q = Record(id="q", content=[Part.of_text("Which bridge is red?")])
    assert query_prompt(q) == "Find a Wikipedia image-passage pair that answers this question: Which bridge is red?"
    d = Record(id="d", content=[Part.of_image("a.png"), Part.of_text("The bridge."), Part.of_image("b.png")])
    assert document_prompt(d) == (
        "<|image|><|image|><|begin_of_text|> Represent the given image with related text information: The bridge."
    )
    assert document_prompt(Record(id="t", content=[Part.of_text("Just text.")])) == "Just text."
    qi = Record(id="qi", content=[Part.of_image("a.png"), Part.of_text("What is this?")])
    assert (
        query_prompt(qi) == "<|image|><|begin_of_text|> Represent the given image with the following question: "
        "What is this?"
    )


# -- mining by image content ---------------------------------------------------------------------------------------


def _ranking(miner, corpus, queries):
    """Each query's top-``k`` document ids, best first (ties by id, as the miner orders them)."""
    miner.retriever.index(corpus)
    run = miner.retriever.search(queries, k=MINING["k"])
    return {q: [d for d, _ in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))] for q, hits in run.items()}


def test_vlm_miner_ranks_by_image_content_and_differs_from_minilm(images, tiny_miner):
    order = list(COLOURS)
    shuffled = order[5:] + order[:5]  # the same images, held by other documents (and the same identical texts)
    minilm = resolve_miner("minilm")
    ranked, mined = {}, {}
    for name, miner in (("vlm", tiny_miner), ("minilm", minilm)):
        for label, o in (("a", order), ("b", shuffled)):
            corpus, queries = _fixture(images, o)
            colour_of = {r.id: o[i] for i, r in enumerate(corpus)}
            ids = _ranking(miner, corpus, queries)
            ranked[name, label] = (ids, {q: [colour_of[d] for d in ds] for q, ds in ids.items()})
            records, stats = mine_hard_negatives(queries, corpus, miner, **MINING)
            assert stats["queries_full"] == len(queries)
            mined[name, label] = {r["query_id"]: r["negative_ids"] for r in records}

    # the VLM ranks by image content: after the images moved between documents its ranking, read as image colours,
    # is the same, read as document ids it moved with them; and it is not one ranking for every query
    assert ranked["vlm", "a"][1] == ranked["vlm", "b"][1]
    assert ranked["vlm", "a"][0] != ranked["vlm", "b"][0]
    assert len({tuple(v) for v in ranked["vlm", "a"][0].values()}) > 1
    # MiniLM sees only the (identical) text: its ranking of the documents does not move with the images at all
    assert ranked["minilm", "a"][0] == ranked["minilm", "b"][0]
    assert ranked["minilm", "a"][1] != ranked["minilm", "b"][1]
    # so the negatives the two miners keep differ
    differ = sum(mined["vlm", "a"][q] != mined["minilm", "a"][q] for q in mined["vlm", "a"])
    assert differ >= len(COLOURS) // 2, differ


# -- the miner's identity --------------------------------------------------------------------------------------------


def test_miner_identity_names_model_and_weights(tmp_path, tiny_miner, images):
    from nyx.retrieval.mme5 import MmE5Retriever

    ident = tiny_miner.identity
    assert ident["kind"] == "mme5" and ident["model_id"] == "tiny-mllama" and ident["revision"].startswith("build-")
    assert ident["weights"]
    assert resolve_miner("minilm").fingerprint() != tiny_miner.fingerprint()
    # a saved mme5 retriever folder: its encoder is reused (the corpus is indexed anew) and its folder is named
    corpus, _ = _fixture(images, list(COLOURS))
    saved = MmE5Retriever(model="tiny")
    saved.index(corpus[:3])
    saved.save(tmp_path / "mme5-index")
    folder_miner = resolve_miner(str(tmp_path / "mme5-index"))
    assert folder_miner.identity["kind"] == "retriever_folder" and folder_miner.identity["retriever"] == "mme5"
    assert folder_miner.identity["model_id"] == "tiny-mllama"


def test_registered_version_resolves_to_its_index_folder(tmp_path, images):
    from mlflow import MlflowClient

    from nyx.registry import INDEX_DIR_TAG
    from nyx.retrieval.mme5 import MmE5Retriever

    corpus, _ = _fixture(images, list(COLOURS))
    saved = MmE5Retriever(model="tiny")
    saved.index(corpus[:2])
    saved.save(tmp_path / "idx")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model("nyx-retriever")
    v1 = c.create_model_version("nyx-retriever", source=str(tmp_path / "model"))
    c.set_model_version_tag("nyx-retriever", v1.version, INDEX_DIR_TAG, str(tmp_path / "idx"))
    c.set_model_version_tag("nyx-retriever", v1.version, "nyx.weights_sha256", "abc123")
    c.set_registered_model_alias("nyx-retriever", "champion", v1.version)
    miner = resolve_miner("models:/nyx-retriever@champion", tracking_uri=uri)
    assert miner.identity["kind"] == "registered" and miner.identity["version"] == str(v1.version)
    assert miner.identity["weights_sha256"] == "abc123" and miner.identity["from"] == "index_dir"
    assert miner.retriever.name == "mme5"
    with pytest.raises(ValueError, match="cannot resolve"):
        resolve_miner("models:/nyx-retriever@nobody", tracking_uri=uri)


def _materialise(tmp_resources, miner_overrides):
    from assets.hard_negatives import hard_negatives

    res = {k: tmp_resources[k] for k in ("settings", "mlflow")}
    overrides = {"miner": {**miner_overrides, "mining": MINING}}
    r = dg.materialize(
        [hard_negatives], resources=res, run_config={"ops": {"hard_negatives": {"config": {"overrides": overrides}}}}
    )
    assert r.success
    mat = r.asset_materializations_for_node("hard_negatives")[0]
    return mat.tags["dagster/data_version"], mat.metadata


def test_changing_the_miner_changes_the_data_version_and_metadata(tmp_path, images, tmp_resources):
    corpus, queries = _fixture(images, list(COLOURS))
    qrels = {q.id: {q.extra["positive_id"]: 1} for q in queries}
    write_beir(tmp_path / "data" / "nyxqa" / "train", corpus, queries, qrels)
    assert len(load_beir(tmp_path / "data" / "nyxqa" / "train").corpus) == len(COLOURS)
    v_bm25, m_bm25 = _materialise(tmp_resources, {"retriever": "bm25"})
    v_bm25_again, _ = _materialise(tmp_resources, {"retriever": "bm25"})
    v_vlm, m_vlm = _materialise(tmp_resources, {"retriever": "mme5", "model": "tiny"})
    assert v_bm25 == v_bm25_again  # same miner, same data: same version
    assert v_vlm != v_bm25
    assert m_bm25["miner"].value == "bm25" and m_vlm["miner"].value.startswith("mme5:tiny-mllama")
    ident = m_vlm["miner_identity"].value
    assert ident["kind"] == "mme5" and ident["model_id"] == "tiny-mllama" and ident["weights"]
    lines = (tmp_path / "data" / "hard_negatives" / "train.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["miner"].startswith("mme5:tiny-mllama")


def test_data_version_holds_the_miner_identity_even_for_the_same_negatives(tmp_path, images):
    from assets.hard_negatives import _negatives_data_version
    from nyx.synth.mining import MiningConfig

    corpus, queries = _fixture(images, list(COLOURS))
    write_beir(tmp_path / "train", corpus, queries, {q.id: {q.extra["positive_id"]: 1} for q in queries})
    out = tmp_path / "negatives.jsonl"
    out.write_text('{"query_id": "q-red", "positive_id": "d00", "negative_ids": ["d05"]}\n')
    a = {"kind": "mme5", "model_id": "intfloat/mmE5-mllama-11b-instruct", "revision": None}
    b = {"kind": "mme5", "model_id": "/models/mme5-finetune", "revision": None, "weights": "sha256-manifest:1"}
    version = _negatives_data_version(a, MiningConfig(), tmp_path / "train", out)
    assert version == _negatives_data_version(dict(a), MiningConfig(), tmp_path / "train", out)
    assert version != _negatives_data_version(b, MiningConfig(), tmp_path / "train", out)
    # the same folder with new weights
    assert _negatives_data_version(b, MiningConfig(), tmp_path / "train", out) != _negatives_data_version(
        {**b, "weights": "sha256-manifest:2"}, MiningConfig(), tmp_path / "train", out
    )
    assert version != _negatives_data_version(a, MiningConfig(k=30), tmp_path / "train", out)


# -- the profiles ----------------------------------------------------------------------------------------------------


def test_paper_mines_with_mme5_and_the_rehearsal_with_the_tiny_mllama():
    from nyx.retrieval import retriever_class
    from nyx.retrieval.mme5 import MME5_MODEL_ID, MmE5Retriever
    from nyx.settings import PROFILES

    paper, rehearsal = PROFILES["paper"].miner, PROFILES["rehearsal"].miner
    assert paper.retriever == "mme5" and paper.model == MME5_MODEL_ID == "intfloat/mmE5-mllama-11b-instruct"
    assert retriever_class(paper.retriever) is MmE5Retriever
    assert rehearsal.retriever == "mme5" and rehearsal.model == "tiny"
    assert rehearsal.mining == paper.mining
