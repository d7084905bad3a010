"""Pre-training and fine-tuning read WebDataset shards through the same loop as the synthetic data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import cavmae.data.loader as loader_module
from cavmae.config import load_config
from cavmae.data.loader import loader_for
from cavmae.train import batches_per_epoch, make_batches, train
from cavmae.train.tasks import PretrainTask

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def shard_cfg(tiny_shards, out: Path, *extra: str):
    return load_config(
        TINY,
        [
            "data.synthetic=false",
            f"data.train_shards=[{tiny_shards.pattern}]",
            f"data.val_shards=[{tiny_shards.pattern}]",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.shuffle_buffer=4",
            "eval.batch_size=4",
            "model.num_classes=4",
            "train.epochs=1",
            "train.max_steps=3",
            "train.val_at_start=false",
            "train.image_every=0",
            "train.progress_bar=false",
            f"train.out_dir={out}",
            *extra,
        ],
    )


def test_every_rank_gets_the_same_number_of_batches(tiny_shards, tmp_path):
    # 8 clips in 4 shards of 2; 3 ranks get 2, 1, 1 shards: the short ranks top up to the common count
    cfg = shard_cfg(tiny_shards, tmp_path, "data.batch_size=1")
    want = batches_per_epoch(cfg, 3)
    assert want == 8 // 3
    for rank in range(3):
        batches = list(make_batches(cfg, "train", epoch=0, rank=rank, world_size=3))
        assert len(batches) == want
        assert batches[0]["audio"].shape == (1, 512, 128) and batches[0]["frames"].shape == (1, 3, 112, 112)
    # skipping on resume lands on the same batches
    full = [b["keys"] for b in make_batches(cfg, "train", epoch=1, rank=0, world_size=1)]
    tail = [b["keys"] for b in make_batches(cfg, "train", epoch=1, rank=0, world_size=1, skip=3)]
    assert tail == full[3:]


def test_pretrain_and_finetune_from_shards(tiny_shards, tmp_path):
    pre = train(shard_cfg(tiny_shards, tmp_path / "pre"))
    lines = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 3
    val = json.loads((pre / "val_metrics.jsonl").read_text().splitlines()[-1])
    for key in ("val/r1_v2a", "val/r1_a2v"):  # top-1 hits over the 8 validation clips, each counted once
        assert (val[key] * 8).is_integer(), (key, val[key])
    ft = train(shard_cfg(tiny_shards, tmp_path / "ft", f"train.init={pre / 'model'}", "finetune.loss=bce"))
    val = json.loads((ft / "val_metrics.jsonl").read_text().splitlines()[-1])
    assert val["val/classes_scored"] == 4
    final = json.loads((ft / "final_metrics.json").read_text())
    assert final["clips"] == 8 and final["last_epoch"]["mAP"] == val["val/mAP"]


def test_shards_that_yield_no_batch_are_one_clear_error(tiny_shards, tmp_path):
    # 4 ranks get one shard of 2 clips each: not one batch of 3 in a whole pass, so topping up can never help
    from cavmae.config import ConfigError

    cfg = shard_cfg(tiny_shards, tmp_path, "data.batch_size=3", "data.samples_per_epoch=12")
    assert batches_per_epoch(cfg, 4) == 1
    with pytest.raises(ConfigError, match=r"data.train_shards: process 0 read no batch of data.batch_size=3"):
        list(make_batches(cfg, "train", epoch=0, rank=0, world_size=4))


def keys_of(batches) -> list[list[str]]:
    return [b["keys"] for b in batches]


@pytest.mark.parametrize(
    "extra",
    [
        ("data.num_workers=0",),
        ("data.num_workers=2",),  # batches come from the two workers in turn
        ("data.num_workers=2", "data.resampled=true", "data.samples_per_epoch=10"),
    ],
)
def test_resuming_skips_to_the_batches_an_unskipped_epoch_yields(tiny_shards, tmp_path, extra):
    cfg = shard_cfg(tiny_shards, tmp_path, "data.batch_size=1", *extra)
    full = list(make_batches(cfg, "train", epoch=1))
    assert len(full) == batches_per_epoch(cfg, 1)
    for skip in (1, 3, len(full) - 1):
        tail = list(make_batches(cfg, "train", epoch=1, skip=skip))
        assert keys_of(tail) == keys_of(full[skip:]), skip
    assert torch.equal(tail[0]["audio"], full[-1]["audio"]) and torch.equal(tail[0]["frames"], full[-1]["frames"])


def test_resuming_does_not_decode_the_skipped_samples(tiny_shards, tmp_path, monkeypatch):
    decoded = []
    real_decode = loader_module.decode

    def counting_decode(item, s, epoch):
        decoded.append(item.key)
        return real_decode(item, s, epoch)

    monkeypatch.setattr(loader_module, "decode", counting_decode)
    cfg = shard_cfg(tiny_shards, tmp_path, "data.batch_size=1")  # no worker processes: decoding happens here
    tail = list(make_batches(cfg, "train", epoch=0, skip=5))
    assert len(tail) == 8 - 5
    assert decoded == [k for keys in keys_of(tail) for k in keys]  # the 5 skipped clips were never decoded


def test_resuming_beyond_a_short_first_pass_reads_to_the_position(tiny_shards, tmp_path, caplog):
    # 3 ranks, 4 shards of 2 clips: a rank with one shard has 2 batches in a pass and tops up to 12 // 3 = 4
    cfg = shard_cfg(tiny_shards, tmp_path, "data.batch_size=1", "data.samples_per_epoch=12")
    short = 0
    for rank in range(3):
        full = keys_of(make_batches(cfg, "train", epoch=0, rank=rank, world_size=3))
        assert len(full) == 4
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cavmae.train.batches"):
            assert keys_of(make_batches(cfg, "train", epoch=0, rank=rank, world_size=3, skip=3)) == full[3:]
        short += "holds fewer than the 3 batches to skip" in caplog.text
    assert short == 2  # the two ranks with one shard fell back to reading; the rank with two did not


class RecordingTask(PretrainTask):
    """Pre-training that records the keys of every training batch."""

    def __init__(self):
        self.keys: list[list[str]] = []

    def step(self, model, batch, cfg):
        self.keys.append(list(batch["keys"]))
        return super().step(model, batch, cfg)


MICRO = ("model.audio_length=64", "model.num_mel_bins=32", "model.image_size=32", "data.val_shards=[]")
# epochs whose length is not a whole number of batches: 7 resampled clips in batches of 2, 8 clips in batches of 3
RESAMPLED_7 = ("data.resampled=true", "data.samples_per_epoch=7")


@pytest.mark.parametrize(
    "extra, per_epoch",
    [
        ((*RESAMPLED_7, "data.drop_last=true"), 3),  # not ceil's 4
        ((*RESAMPLED_7, "data.drop_last=false"), 4),  # not floor's 3
        (("data.batch_size=3", "data.drop_last=false"), 3),  # the last batch holds 2 (floor: 2)
        (("data.batch_size=3", "data.drop_last=true"), 2),
    ],
)
def test_the_loader_yields_the_epoch_length_the_loop_counts(tiny_shards, tmp_path, extra, per_epoch):
    cfg = shard_cfg(tiny_shards, tmp_path, *MICRO, *extra)
    loader = loader_for(cfg, cfg.data.train_shards, train=True)
    assert batches_per_epoch(cfg, 1) == len(loader) == len(list(loader)) == per_epoch


@pytest.mark.parametrize(
    "extra", [(*RESAMPLED_7, "data.drop_last=true"), ("data.batch_size=3", "data.drop_last=false")]
)
def test_the_loop_trains_on_each_epoch_the_loader_yields(tiny_shards, tmp_path, extra):
    cfg = shard_cfg(tiny_shards, tmp_path / "run", *MICRO, *extra, "train.epochs=2", "train.max_steps=0")
    epochs = [keys_of(loader_for(cfg, cfg.data.train_shards, train=True, epoch=e)) for e in (0, 1)]
    assert len(epochs[0]) == len(epochs[1]) == 3
    task = RecordingTask()
    cfg.train.log_every = 1
    train(cfg, task=task)
    assert task.keys == epochs[0] + epochs[1]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]
