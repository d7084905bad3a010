"""The demo's sizes: :data:`FULL` is ``cavmae demo``, :data:`QUICK` is ``cavmae demo --quick``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run. :data:`FULL` is ``cavmae demo``, :data:`QUICK` is ``cavmae demo --quick`` (CI)."""

    num_clips: int  # synthetic clips; ~20 % land in the held-out split (the generator's split column)
    num_classes: int
    duration: float  # seconds per clip: 2.6 s covers the 256 fbank frames (2.575 s) of the model's audio input
    frame_size: int  # px: frames are rendered, stored and fed at this size
    object_size: tuple[float, float]  # object radius range as a fraction of the frame (generator default 0.08-0.16)
    audio_length: int  # fbank frames (10 ms each)
    num_mel_bins: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    contrast_weight: float
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    finetune_eval_every: int  # held-out accuracy every N fine-tuning steps (the curves)
    samples_per_shard: int = 64
    workers: int = 2  # processes that render the clips and decode them into shards
    # torch threads while the demo runs. One: on a machine whose cores are busy with other work, two OpenMP threads
    # per op made a tiny-model step up to 60x slower (measured: 0.05 s -> 3.6 s on 2 shared cores), while one
    # thread costs at most ~1.4x on an idle machine; a fixed count also keeps results identical across machines.
    threads: int = 1


FULL = DemoSettings(
    num_clips=800,
    num_classes=16,
    duration=2.6,
    frame_size=64,
    object_size=(0.2, 0.35),
    audio_length=256,
    num_mel_bins=64,
    pretrain_steps=1200,
    pretrain_batch=32,
    pretrain_lr=1e-3,
    contrast_weight=1.0,
    finetune_steps=60,
    finetune_batch=16,
    finetune_lr=1e-3,
    finetune_eval_every=10,
)

QUICK = dataclasses.replace(FULL, num_clips=300, num_classes=8, pretrain_steps=250, finetune_steps=30)
