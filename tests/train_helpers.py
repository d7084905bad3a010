"""Helpers shared by tests/test_train*.py: micro configs, subprocess runs, metrics files, W&B offline records."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from cavmae.config import Config, load_config
from cavmae.models.masking import Masked, mask_from_noise

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


def content_masking(x, mask_ratio, mode="unstructured", grid=None, generator=None) -> Masked:
    """Masks that depend on each clip alone (its tokens' first channel) instead of the process's RNG stream, so
    one process with the whole batch and N processes with a share each mask every clip alike."""
    return mask_from_noise(x, x.detach()[..., 0].float(), mask_ratio)


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
