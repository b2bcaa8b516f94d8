"""The trainer on the tiny Qwen2.5-VL: gradient cache, learning, checkpoint/resume, final save, 2-process ZeRO-2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nyx.data.records import Part, Record
from nyx.train.checkpoints import find_latest_checkpoint
from nyx.train.config import DEFAULT_DEEPSPEED_CONFIG, TrainConfig
from nyx.train.dataset import TrainingExample, batch_records
from nyx.train.gradcache import cached_step, plain_step
from nyx.train.loss import MatryoshkaInfoNCE
from nyx.train.trainer import train
from nyx.utils.batches import chunked
from tests.paths import REPO
from tests.tolerances import EPS32, EPS64, assert_within, rounding_tol

TOPICS = [
    "apples grow on trees in the orchard",
    "the train leaves the station at noon",
    "cats sleep most of the day",
    "rivers flow into the sea",
    "the moon orbits the earth",
    "bread is baked in an oven",
    "snow falls in winter",
    "bees make honey from nectar",
]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "red.png"
    arr = np.zeros((56, 84, 3), dtype=np.uint8)
    arr[..., 0] = 200
    arr[10:40, 20:50, 2] = 150
    Image.fromarray(arr).save(path)
    return str(path)


def _examples(image: str, n: int = 8) -> list[TrainingExample]:
    out = []
    for i, t in enumerate(TOPICS[:n]):
        query = Record(f"q{i}", [Part.of_text(f"what about {t.split()[1]}?")], {"choices": ["yes", "no"]})
        pos_parts = [Part.of_text(t)] + ([Part.of_image(image), Part.of_text("see the picture")] if i % 3 == 0 else [])
        out.append(
            TrainingExample(
                query,
                Record(f"d{i}", pos_parts),
                (Record.from_text(f"n{i}", TOPICS[(i + 3) % len(TOPICS)] + " as well"),),
                "toy",
            )
        )
    return out


def _write_triples(path: Path, examples: list[TrainingExample]) -> Path:
    with open(path, "w") as f:
        for e in examples:
            f.write(
                json.dumps(
                    {
                        "query": e.query.to_json(),
                        "positive": e.positive.to_json(),
                        "negatives": [n.to_json() for n in e.negatives],
                    }
                )
                + "\n"
            )
    return path


def test_gradcache_on_tiny_qwen_equals_plain_step(image):
    """In float64, so that only a real difference (a chunk left out, dropout not replayed) exceeds the tolerance."""
    from nyx.model.encoder import NyxEncoder

    queries, docs = batch_records(_examples(image, 4))
    loss_fn = MatryoshkaInfoNCE(dims=[128, 32], weights=[1.0, 0.2])
    losses, grads = [], []
    for cached in (False, True):
        enc = NyxEncoder.from_pretrained("tiny", dtype=torch.float64, show_progress=False)
        enc.module.train()

        def encode(inputs, enc=enc):
            return enc.embed(inputs)

        if cached:
            out = cached_step(
                encode,
                [enc.collate(c, True) for c in chunked(queries, 2)],
                [enc.collate(c, False) for c in chunked(docs, 3)],
                4,
                loss_fn,
            )
        else:
            out = plain_step(encode, enc.collate(queries, True), enc.collate(docs, False), 4, loss_fn)
        losses.append(out.loss.total.item())
        grads.append({n: p.grad.clone() for n, p in enc.module.named_parameters() if p.grad is not None})
        n_tokens = int(
            enc.collate(queries, True)["attention_mask"].sum() + enc.collate(docs, False)["attention_mask"].sum()
        )
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert any("visual" in n for n in grads[0])  # the image went through the vision tower
    # loss: 4 queries x (4 in-batch + 4 own negatives) logits of size <= 1/tau = 50; a weight's gradient sums
    # over every token of the batch, each through those logits
    assert_within("gradcache tiny Qwen: loss", losses[1], losses[0], rounding_tol(EPS64, 8, 50.0))
    for name in grads[0]:
        scale = float(grads[0][name].abs().max())
        assert_within(
            "gradcache tiny Qwen: grad", grads[1][name], grads[0][name], rounding_tol(EPS64, n_tokens * 8, 50.0 * scale)
        )


def test_mrl_dims_beyond_the_tiny_hidden_size_fail_clearly(tmp_path, image):
    cfg = TrainConfig(output_dir=str(tmp_path), per_device_batch_size=2, mrl_dims=[2048, 1024], mrl_weights=[1, 1])
    with pytest.raises(ValueError, match="exceeds the encoder's hidden size 128"):
        train(cfg, examples=_examples(image, 4))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Interrupt(RuntimeError):
    pass


def test_two_questions_on_one_chunk_are_not_each_others_negatives(tmp_path, image):
    examples = _examples(image, 4)
    twin = examples[1]
    # a second question written from example 1's chunk (another id, the same content)
    examples[2] = TrainingExample(
        examples[2].query, Record("d1-again", list(twin.positive.content)), examples[2].negatives, "toy"
    )
    base = dict(per_device_batch_size=4, max_steps=1, learning_rate=1e-4, seed=3, lora={"enabled": False})
    masked = train(TrainConfig(output_dir=str(tmp_path / "masked"), **base), examples=examples)
    plain = train(
        TrainConfig(output_dir=str(tmp_path / "plain"), mask_false_negatives=False, **base), examples=examples
    )
    assert masked.history[0]["masked_false_negatives"] == 2 and plain.history[0]["masked_false_negatives"] == 0
    # unmasked, queries 1 and 2 each see their own answer again as a negative: the first loss is higher
    assert plain.history[0]["loss"] > masked.history[0]["loss"] + 1e-3


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, image):
    """An uninterrupted 5-step LoRA run, and the same run killed after step 3 and resumed from its step-2 checkpoint."""
    root = tmp_path_factory.mktemp("lora")
    examples = _examples(image, 4)  # one global batch of 4: every step sees the same examples
    base = dict(
        per_device_batch_size=4,
        epochs=5,
        learning_rate=2e-3,
        warmup_ratio=0.2,
        logging_steps=1,
        save_steps=2,
        seed=3,
        lora={"rank": 8, "alpha": 16, "dropout": 0.1},
    )
    logged: list[tuple[int, dict]] = []
    full = train(
        TrainConfig(output_dir=str(root / "full"), **base), on_log=lambda s, m: logged.append((s, m)), examples=examples
    )

    def stop_at_3(step, metrics):
        if step == 3:
            raise _Interrupt()

    with pytest.raises(_Interrupt):
        train(TrainConfig(output_dir=str(root / "cut"), **base), on_log=stop_at_3, examples=examples)
    checkpoint = find_latest_checkpoint(root / "cut")
    resumed = train(
        TrainConfig(output_dir=str(root / "cut"), resume_from_checkpoint="latest", **base), examples=examples
    )
    return full, resumed, checkpoint, logged, examples


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(lora_runs):
    full, *_ = lora_runs
    losses = [h["loss"] for h in full.history]
    assert len(losses) == 5
    assert losses[-1] < 0.8 * losses[0], losses


def test_on_log_receives_total_and_per_dim_losses_lr_grad_norm_and_throughput(lora_runs):
    full, _, _, logged, _ = lora_runs
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5]
    keys = set(logged[0][1])
    assert {
        "loss",
        "loss_dim_128",
        "loss_dim_64",
        "loss_dim_32",
        "loss_dim_16",
        "lr",
        "grad_norm",
        "samples_per_sec",
        "epoch",
    } <= keys
    assert logged[0][1]["lr"] == 0.0 and logged[1][1]["lr"] == pytest.approx(2e-3)  # 1 warm-up step, then decay
    lines = (full.output_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]


def test_resume_from_latest_checkpoint_continues_at_the_right_step_with_the_same_losses(lora_runs):
    full, resumed, checkpoint, _, _ = lora_runs
    assert checkpoint is not None and checkpoint.name == "step-00000002"
    assert [h["step"] for h in resumed.history] == [3, 4, 5]
    for got, want in zip(resumed.history, full.history[2:]):
        # the same float32 computations on the same CPU: only a few roundings' worth of difference is allowed
        assert_within("resume: loss", got["loss"], want["loss"], rounding_tol(EPS32, 1, want["loss"]))
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
    assert resumed.global_step == 5
    assert (checkpoint / "model" / "adapter_config.json").is_file()


def test_final_adapter_loads_with_nyx_encoder_and_embeds_like_the_trained_model(lora_runs, image):
    from nyx.model.encoder import NyxEncoder
    from nyx.model.tiny import ensure_tiny_model

    full, resumed, _, _, examples = lora_runs
    assert (full.final_dir / "adapter_config.json").is_file()
    records = [e.positive for e in examples]
    a = NyxEncoder.from_pretrained(str(ensure_tiny_model()), adapter_path=full.final_dir, show_progress=False)
    b = NyxEncoder.from_pretrained(resumed.final_dir, show_progress=False)  # adapter folder alone
    base = NyxEncoder.from_pretrained("tiny", show_progress=False)
    ea, eb, e0 = (enc.encode(records) for enc in (a, b, base))
    # interrupted + resumed == uninterrupted: float32 unit vectors of the same weights (a norm over 128 terms)
    assert_within("resume: final embeddings", ea, eb, rounding_tol(EPS32, 128))
    assert np.abs(ea - e0).max() > 1e-3  # training changed the model


#: Relative tolerances of the two-process run against the one-process run, in float32 (the trainer's dtype).
#: Step 1 sees the same weights: the embeddings differ only by padding and chunking (~eps32), and the loss
#: (logits of size <= 1/tau = 50) by ~50 * eps32 = 6e-6. Each later step passes that through AdamW, whose first
#: updates are ~lr * sign(g), so gradient entries near zero can move by ~lr = 1e-3 either way; over 4 steps the
#: loss stays within 1e-4 of its value and the gradient norm (a sum of ~1e4 squares) within 1e-3.
_TWO_PROCESS_REL = {"loss": 1e-4, "loss_dim_16": 1e-4, "grad_norm": 1e-3}


@pytest.mark.slow
def test_two_process_deepspeed_zero2_and_ddp_match_one_process_run(tmp_path, image):
    """torchrun x2 with gradient cache (gloo; DeepSpeed ZeRO-2, then plain DDP) vs one plain process, same global
    batch."""
    data = _write_triples(tmp_path / "triples.jsonl", _examples(image, 8))
    common = dict(
        data=[{"name": "toy", "kind": "triples", "path": str(data)}],
        learning_rate=1e-3,
        epochs=2,
        logging_steps=1,
        save_steps=1000,
        seed=5,
        lora={"dropout": 0.0},
    )
    ref = train(TrainConfig(output_dir=str(tmp_path / "ref"), per_device_batch_size=4, **common))
    assert len(ref.history) == 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, deepspeed in (("deepspeed", str(DEFAULT_DEEPSPEED_CONFIG)), ("ddp", None)):
        cfg = TrainConfig(
            output_dir=str(tmp_path / name),
            per_device_batch_size=2,
            grad_cache=True,
            grad_cache_chunk_size=1,
            deepspeed=deepspeed,
            **common,
        )
        (tmp_path / f"{name}.json").write_text(cfg.model_dump_json())
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_port",
                str(_free_port()),
                "-m",
                "nyx.train.run",
                "--config",
                str(tmp_path / f"{name}.json"),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        got = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert len(got) == 4, name
        for g, want in zip(got, ref.history):
            for key in ("loss", "loss_dim_16", "grad_norm"):
                assert_within(
                    f"two-process {name} vs one process: {key} step {g['step']}",
                    g[key],
                    want[key],
                    _TWO_PROCESS_REL[key] * abs(want[key]),
                )
        assert (tmp_path / name / "final" / "adapter_config.json").is_file()
        # what really ran: a silent fall-back (DDP instead of DeepSpeed, one process instead of two) fails here
        run = json.loads((tmp_path / name / "final" / "train_summary.json").read_text())["run"]
        want = ("DEEPSPEED", 2) if deepspeed else ("MULTI_CPU", None)
        assert (run["distributed_type"], run["zero_stage"]) == want, run
        assert run["world_size"] == 2 and run["global_batch_size"] == 4
