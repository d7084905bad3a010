"""Pre-training and fine-tuning read WebDataset shards through the same loop as the synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

from cavmae.config import load_config
from cavmae.train import batches_per_epoch, make_batches, train

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
    assert 0.0 <= val["val/r1_v2a"] <= 1.0
    ft = train(shard_cfg(tiny_shards, tmp_path / "ft", f"train.init={pre / 'model'}", "finetune.loss=bce"))
    val = json.loads((ft / "val_metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= val["val/mAP"] <= 1.0 and val["val/classes_scored"] == 4


def test_shards_that_yield_no_batch_are_one_clear_error(tiny_shards, tmp_path):
    # 4 ranks get one shard of 2 clips each: not one batch of 3 in a whole pass, so topping up can never help
    import pytest

    from cavmae.config import ConfigError

    cfg = shard_cfg(tiny_shards, tmp_path, "data.batch_size=3", "data.samples_per_epoch=12")
    assert batches_per_epoch(cfg, 4) == 1
    with pytest.raises(ConfigError, match=r"data.train_shards: process 0 read no batch of data.batch_size=3"):
        list(make_batches(cfg, "train", epoch=0, rank=0, world_size=4))
