"""Helpers shared by tests/test_train*.py: micro configs, subprocess runs, metrics files, W&B offline records."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import torch

import cavmae.models.cavmae as cavmae_model
from cavmae.config import Config, load_config
from cavmae.models.masking import Masked, mask_from_noise, random_masking
from cavmae.train.tasks import PretrainTask

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def micro_overrides(out_dir: str | Path, *extra: str) -> list[str]:
    """The tiny model on micro inputs (audio 64 x 32 -> 8 tokens, frames 32 px -> 4 tokens): steps of a few ms."""
    return [
        f"train.out_dir={out_dir}",
        "model.audio_length=64",
        "model.num_mel_bins=32",
        "model.image_size=32",
        "data.synthetic_size=64",
        "data.synthetic_val_size=16",
        "data.batch_size=8",
        "eval.batch_size=8",
        "train.epochs=2",
        "train.log_every=1",
        "train.ckpt_every=4",
        "train.image_every=0",
        "train.val_at_start=false",
        "train.progress_bar=false",
        "train.wandb_mode=disabled",
        *extra,
    ]


def micro_config(out_dir: str | Path, *extra: str) -> Config:
    return load_config(TINY, micro_overrides(out_dir, *extra))


def run_pretrain(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 180, fault: tuple[str, int] | None = None
) -> subprocess.CompletedProcess:
    """``python -m cavmae.cli pretrain ARGS`` from the repository root (this checkout's code); with ``fault``
    (name, step) through tests/fault_run.py, which injects that fault."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", **(env or {})}
    entry = ["-m", "cavmae.cli"] if fault is None else [str(REPO / "tests" / "fault_run.py"), fault[0], str(fault[1])]
    return subprocess.run(
        [sys.executable, *entry, "pretrain", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def recording_masking(log: list[torch.Tensor]):
    """A ``random_masking`` that draws as the real one does and appends each mask [B, L] (1 = masked) to ``log``."""

    def masking(x, mask_ratio, mode="unstructured", grid=None, generator=None) -> Masked:
        out = random_masking(x, mask_ratio, mode, grid, generator)
        log.append(out.mask.detach().cpu().clone())
        return out

    return masking


def replaying_masking(masks: list[torch.Tensor]):
    """A ``random_masking`` that hands out ``masks`` ([B, L] each, 1 = masked) in order, one per call."""
    queue = list(masks)

    def masking(x, mask_ratio, mode="unstructured", grid=None, generator=None) -> Masked:
        mask = queue.pop(0).to(x.device)
        assert mask.shape == x.shape[:2], (mask.shape, x.shape)
        return mask_from_noise(x, mask.float(), mask_ratio)  # keeps the tokens the mask keeps

    return masking


class MaskingTask(PretrainTask):
    """Pre-training whose training steps mask with ``masking`` (a :func:`recording_masking` or
    :func:`replaying_masking`); every other forward (validation) masks as usual."""

    def __init__(self, masking):
        self.masking = masking

    def step(self, model, batch, cfg):
        with mock.patch.object(cavmae_model, "random_masking", self.masking):
            return super().step(model, batch, cfg)


def first_masks(cfg: Config, seed: int, batch_size: int) -> list[torch.Tensor]:
    """The audio and video masks [B, L] a forward draws first from the global RNG seeded with ``seed``."""
    from cavmae.train import seed_everything

    m = cfg.model
    seed_everything(seed)
    audio = random_masking(
        torch.zeros(batch_size, math.prod(m.audio_grid), 1), m.mask_ratio_a, m.mask_mode, m.audio_grid
    )
    video = random_masking(torch.zeros(batch_size, math.prod(m.video_grid), 1), m.mask_ratio_v)
    return [audio.mask, video.mask]


def wandb_records(run_file: str | Path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``: a LevelDB-style log of 32 KiB blocks,
    after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(run_file).read_bytes()
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a header
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST fragment
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def wandb_history(run_file: str | Path) -> list[dict[str, str]]:
    out = []
    for rec in wandb_records(run_file):
        if rec.WhichOneof("record_type") == "history":
            out.append({item.key or "/".join(item.nested_key): item.value_json for item in rec.history.item})
    return out
