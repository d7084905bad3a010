"""End-to-end runs: the README's first command with W&B offline, learning on synthetic data, precision options."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import TINY, micro_config, read_jsonl, run_pretrain, wandb_history

import cavmae
from cavmae.config import load_config
from cavmae.train import train

METRIC_KEYS = {"step", "epoch", "loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c", "lr"}
METRIC_KEYS |= {"grad_norm", "samples_per_s", "data_wait", "bad_steps"}


@pytest.fixture(scope="module")
def tiny_offline_run(tmp_path_factory):
    """`cavmae pretrain --config configs/tiny.yaml` (shortened to 4 steps) with W&B offline into tmp."""
    tmp = tmp_path_factory.mktemp("tiny")
    overrides = [
        f"train.out_dir={tmp / 'run'}",
        "train.max_steps=4",
        "train.log_every=1",
        "train.image_every=2",
        "train.wandb_mode=offline",
        "data.synthetic_size=64",  # fewer clips than the recipe's 512: only 4 steps run
        "data.synthetic_val_size=32",
    ]
    proc = run_pretrain(["--config", "configs/tiny.yaml", *overrides], env={"WANDB_DIR": str(tmp / "wandb")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc


def test_pretrain_command_prints_the_run_directory_and_saves_the_model(tiny_offline_run):
    tmp, proc = tiny_offline_run
    run = tmp / "run"
    assert f"run directory: {run.resolve()}" in proc.stdout
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[0].keys() >= METRIC_KEYS
    assert all(math.isfinite(r["loss"]) and 0 <= r["data_wait"] < 1 for r in rows)  # samples_per_s: test_train_units
    assert rows[0]["lr"] == pytest.approx(1e-3 / 10)  # warmup: step 1 of 10
    model = cavmae.load_model(run / "model")
    assert model.cfg == load_config(TINY).model
    resolved = load_config(run / "config.yaml")
    assert resolved.train.max_steps == 4 and resolved.train.wandb_mode == "offline"
    for step in (2, 4):
        assert (run / "images" / f"step_{step:08d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val = read_jsonl(run / "val_metrics.jsonl")
    assert [r["step"] for r in val] == [0, 4] and {"val/loss", "val/r1_v2a", "val/r1_a2v"} <= val[-1].keys()


def test_wandb_offline_run_holds_metrics_and_images(tiny_offline_run):
    tmp, _ = tiny_offline_run
    runs = list((tmp / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp / "wandb").rglob("*"))[:20]
    run_id = (tmp / "run" / "wandb_id.txt").read_text().strip()
    history = wandb_history(runs[0] / f"run-{run_id}.wandb")
    train_rows = [h for h in history if "train/loss" in h]
    assert [int(h["train/step"]) for h in train_rows] == [1, 2, 3, 4]
    logged = [r["loss"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    assert [float(h["train/loss"]) for h in train_rows] == pytest.approx(logged)
    assert any("val/r1_v2a" in h for h in history)
    images = [h for h in history if h.get("train/reconstruction/_type") == '"image-file"']
    assert [int(h["train/step"]) for h in images] == [2, 4]
    assert len(list((runs[0] / "files" / "media" / "images").rglob("*.png"))) == 2


def test_tiny_model_learns_the_synthetic_data(pretrained_tiny):
    """A few hundred CPU steps: validation loss falls and in-batch retrieval (32 clips, chance 1/32) rises."""
    val = read_jsonl(pretrained_tiny / "val_metrics.jsonl")
    first, last = val[0], val[-1]
    assert first["step"] == 0 and last["step"] == 200
    assert last["val/loss"] < first["val/loss"] - 0.3, (first, last)
    assert last["val/loss_c"] < first["val/loss_c"] - 1.0
    assert last["val/loss_rec"] < first["val/loss_rec"] - 0.2
    r1 = 0.5 * (last["val/r1_v2a"] + last["val/r1_a2v"])
    assert r1 > 4 / 32 and r1 > 0.5 * (first["val/r1_v2a"] + first["val/r1_a2v"]) + 0.08, (first, last)


def test_accumulation_bf16_and_activation_checkpointing_run(tmp_path):
    cfg = micro_config(
        tmp_path / "run",
        "train.max_steps=3",
        "train.grad_accum=2",
        "train.mixed_precision=bf16",
        "train.activation_checkpointing=true",
        "optim.grad_clip=1.0",
        "optim.name=adam",
        "optim.schedule=step",
    )
    train(cfg)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    trainer = torch.load(tmp_path / "run" / "checkpoints" / "ckpt-00000003" / "trainer_state.pt", weights_only=True)
    # 2 micro-batches of 8 clips per step: 6 batches of the epoch's 8 consumed, 48 clips seen
    assert trainer["state"]["batch_in_epoch"] == 6 and trainer["state"]["samples"] == 48
