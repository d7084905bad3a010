"""Damaged checkpoints: --resume auto falls back to the newest readable one and says so; a damaged file is named as
damaged; a checkpoint directory without meta.json is reported, never skipped silently into a fresh start."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from train_helpers import micro_config, read_jsonl

from cavmae.config import ConfigError
from cavmae.models.weights import CheckpointError, DamagedCheckpointError
from cavmae.train import train
from cavmae.train.state import list_checkpoints


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    """A finished 8-step run with complete checkpoints at steps 4 and 8 (copy it before damaging anything)."""
    out = tmp_path_factory.mktemp("two") / "run"
    train(micro_config(out, "train.max_steps=8", "train.ckpt_every=4", "train.keep_last=0"))
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000004", "ckpt-00000008"]
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def test_resume_auto_falls_back_to_the_newest_readable_checkpoint(two_checkpoints, tmp_path, caplog):
    out = copy_run(two_checkpoints, tmp_path / "run")
    truncate(out / "checkpoints" / "ckpt-00000008" / "model.safetensors")
    with caplog.at_level(logging.INFO):
        train(micro_config(out, "train.max_steps=8", "train.ckpt_every=4"), resume="auto")
    text = caplog.text
    assert "ckpt-00000008/model.safetensors is not a readable safetensors file" in text
    assert "falling back to the older" in text and "ckpt-00000004" in text
    assert "resumed from" in text and "the newest readable checkpoint (1 newer one(s) damaged)" in text
    # steps 5..8 were trained again from step 4 and the damaged checkpoint replaced by a good one
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")][-4:] == [5, 6, 7, 8]
    train(micro_config(out, "train.max_steps=8"), resume="auto")  # now ckpt-8 reads again: nothing to do


def test_damaged_optimizer_is_reported_as_damaged(two_checkpoints, tmp_path):
    out = copy_run(two_checkpoints, tmp_path / "run")
    ckpt = out / "checkpoints" / "ckpt-00000008"
    truncate(ckpt / "optimizer.pt")
    with pytest.raises(DamagedCheckpointError) as e:
        train(micro_config(out, "train.max_steps=8"), resume=str(ckpt))
    msg = str(e.value)
    assert str(ckpt / "optimizer.pt") in msg and "damaged or truncated" in msg
    assert "does not fit" not in msg


def test_every_checkpoint_damaged_is_an_error_naming_each(two_checkpoints, tmp_path):
    out = copy_run(two_checkpoints, tmp_path / "run")
    for ckpt in list_checkpoints(out):
        truncate(ckpt / "trainer_state.pt")
    with pytest.raises(DamagedCheckpointError, match="no readable checkpoint to resume from \\(2 tried\\)") as e:
        train(micro_config(out, "train.max_steps=8"), resume="auto")
    assert "ckpt-00000004/trainer_state.pt" in str(e.value) and "ckpt-00000008/trainer_state.pt" in str(e.value)


def test_checkpoint_without_meta_json_is_reported(two_checkpoints, tmp_path, caplog):
    out = copy_run(two_checkpoints, tmp_path / "run")
    (out / "checkpoints" / "ckpt-00000008" / "meta.json").unlink()
    with caplog.at_level(logging.INFO):
        train(micro_config(out, "train.max_steps=8"), resume="auto")
    assert "skipping" in caplog.text and "ckpt-00000008: no meta.json" in caplog.text
    assert "resumed from" in caplog.text and "ckpt-00000004" in caplog.text

    only = copy_run(two_checkpoints, tmp_path / "only")
    shutil.rmtree(only / "checkpoints" / "ckpt-00000004")
    (only / "checkpoints" / "ckpt-00000008" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="ckpt-00000008 has no meta.json.*no complete checkpoint"):
        train(micro_config(only, "train.max_steps=8"), resume="auto")
    with pytest.raises(ConfigError, match="already holds checkpoints"):  # nor a fresh start over it
        train(micro_config(only, "train.max_steps=8"))
    assert (only / "checkpoints" / "ckpt-00000008" / "model.safetensors").is_file()
