"""Checkpoints: exact resume after SIGKILL, after a crash mid-save, weights-only files, bad-step stop."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import micro_config, micro_overrides, read_jsonl, run_pretrain

from cavmae.config import ConfigError
from cavmae.models.weights import CheckpointError
from cavmae.train import TrainingStopped, train
from cavmae.train.state import list_checkpoints
from cavmae.train.tasks import PretrainTask

STEPS = 12  # 8 steps per epoch: the run crosses an epoch boundary (and its validation) at step 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run: its metrics.jsonl and val_metrics.jsonl."""
    out = tmp_path_factory.mktemp("reference")
    train(micro_config(out, f"train.max_steps={STEPS}"))
    return {"train": read_jsonl(out / "metrics.jsonl"), "val": read_jsonl(out / "val_metrics.jsonl")}


def assert_same_run(out, reference: dict) -> None:
    got = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(got, reference["train"]):
        for k in ("loss", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c", "lr", "grad_norm"):
            assert a[k] == b[k], f"step {a['step']}: {k} {a[k]!r} != {b[k]!r} in the uninterrupted run"
    assert read_jsonl(out / "val_metrics.jsonl") == reference["val"]


def test_resume_after_sigkill_logs_the_uninterrupted_losses(tmp_path, reference):
    out = tmp_path / "run"
    args = micro_overrides(out, f"train.max_steps={STEPS}")
    killed = run_pretrain(["--config", "configs/tiny.yaml", *args], fault=("kill_after_step", 10))
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")][-1] == 10
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000004", "ckpt-00000008"]
    resumed = run_pretrain(["--config", "configs/tiny.yaml", "--resume", "auto", *args])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "ckpt-00000008" in resumed.stderr
    assert_same_run(out, reference)  # steps 9 and 10 were redone, 11 and 12 are new: all as uninterrupted


def test_crash_while_saving_resumes_from_the_previous_checkpoint(tmp_path, reference):
    out = tmp_path / "run"
    killed = run_pretrain(
        ["--config", "configs/tiny.yaml", *micro_overrides(out, f"train.max_steps={STEPS}")],
        fault=("kill_in_save", 8),
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    partial = out / "checkpoints" / ".tmp-ckpt-00000008"
    assert (partial / "model.safetensors").is_file() and not (partial / "meta.json").exists()
    assert not (out / "checkpoints" / "ckpt-00000008").exists()
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000004"]
    train(micro_config(out, f"train.max_steps={STEPS}"), resume="auto")  # in-process this time
    assert_same_run(out, reference)
    assert not partial.exists(), "the torn temporary checkpoint is cleaned up by the next save"
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000004", "ckpt-00000008", "ckpt-00000012"]


def test_checkpoint_files_load_with_weights_only_and_keep_last(tmp_path):
    out = tmp_path / "run"
    train(micro_config(out, "train.max_steps=6", "train.ckpt_every=2", "train.keep_last=2"))
    ckpts = list_checkpoints(out)
    assert [p.name for p in ckpts] == ["ckpt-00000004", "ckpt-00000006"]
    for name in ("optimizer.pt", "trainer_state.pt", "rng-0.pt"):
        obj = torch.load(ckpts[-1] / name, weights_only=True)  # no pickled objects
        assert isinstance(obj, dict)
    trainer = torch.load(ckpts[-1] / "trainer_state.pt", weights_only=True)
    assert trainer["state"]["step"] == 6 and trainer["state"]["epoch"] == 0 and trainer["state"]["batch_in_epoch"] == 6
    import cavmae

    model = cavmae.load_model(out / "model")
    final = load_file(str(ckpts[-1] / "model.safetensors"))
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
    assert (out / "config.yaml").is_file()


def test_damaged_checkpoint_and_existing_run_give_clear_errors(tmp_path):
    out = tmp_path / "run"
    train(micro_config(out, "train.max_steps=4"))
    with pytest.raises(ConfigError, match="already holds checkpoints.*resume auto"):
        train(micro_config(out, "train.max_steps=4"))
    (list_checkpoints(out)[-1] / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        train(micro_config(out, "train.max_steps=8"), resume="auto")
    with pytest.raises(CheckpointError, match="nowhere does not exist"):
        train(micro_config(out, "train.max_steps=8"), resume=str(tmp_path / "nowhere"))


class NanAfter(PretrainTask):
    """Pre-training whose loss turns NaN after the first `good` training steps."""

    def __init__(self, good: int):
        self.calls, self.good = 0, good

    def step(self, model, batch, cfg):
        out = super().step(model, batch, cfg)
        self.calls += 1
        if self.calls > self.good:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_non_finite_losses_skip_steps_then_stop_with_a_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = micro_config(out, "train.max_steps=20", "train.ckpt_every=2", "train.max_bad_steps=3")
    with pytest.raises(TrainingStopped, match=r"step 5: 3 steps in a row.*max_bad_steps=3.*ckpt-00000005"):
        train(cfg, task=NanAfter(good=2))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) for r in rows[:2]) and all(math.isnan(r["loss"]) for r in rows[2:])
    assert [r["bad_steps"] for r in rows] == [0, 0, 1, 2, 3]
    good = load_file(str(out / "checkpoints" / "ckpt-00000002" / "model.safetensors"))
    last = load_file(str(out / "checkpoints" / "ckpt-00000005" / "model.safetensors"))
    assert all(torch.equal(good[k], last[k]) for k in good), "skipped steps must not touch the weights"
    assert all(torch.isfinite(v).all() for v in last.values())


def test_tiny_sync_resumes_bit_exactly_after_sigkill(tmp_path):
    """The Sync recipe (global tokens, registers) checkpoints and restores its extra parameters like the rest."""
    sync = ["--config", "configs/tiny_sync.yaml"]
    ref, out = tmp_path / "reference", tmp_path / "run"
    uninterrupted = run_pretrain([*sync, *micro_overrides(ref, f"train.max_steps={STEPS}")])
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    reference = {"train": read_jsonl(ref / "metrics.jsonl"), "val": read_jsonl(ref / "val_metrics.jsonl")}
    args = micro_overrides(out, f"train.max_steps={STEPS}")
    killed = run_pretrain([*sync, *args], fault=("kill_after_step", 10))
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_pretrain([*sync, "--resume", "auto", *args])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "ckpt-00000008" in resumed.stderr
    assert_same_run(out, reference)
