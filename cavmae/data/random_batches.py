"""Learnable synthetic audio-visual clips, held in memory: tests, demos and benchmarks without any media.

Each clip has a class c (one of K) and a two-number signature (s1, s2) drawn uniformly from [0, 1):

- audio [T, F] (normalised-fbank scale): Gaussian noise, a harmonic comb over frequency whose spacing depends on
  the class, and a loud band of mel bins centred at s1, switched on for half the clip from s2 and modulated in
  time at a class-dependent rate (4 + 4c cycles per clip);
- frame [3, H, W]: Gaussian noise, diagonal stripes in the class colour with a class-dependent period, and a
  bright blob of the class colour centred at x = s1, y = s2.

The comb and stripes cover every patch, so masked patches can be predicted from visible ones (reconstruction
learns); the class is visible in both modalities; and which audio goes with which frame is learnable beyond the
class (band height <-> blob x, onset time <-> blob y): in-batch retrieval can beat 1/K.
Everything is a function of (seed, split): train and val are disjoint draws, identical on every rank.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.utils.data import Dataset

from cavmae.config import Config

_SPLIT_OFFSET = {"train": 0, "val": 1_000_003}
AMPLITUDE = 2.0


class SyntheticAV(Dataset):
    """Map-style dataset of dict samples: ``audio`` [T, F], ``frames`` [3, H, W], ``labels`` [C], ``key``."""

    def __init__(
        self,
        size: int,
        audio_length: int,
        num_mel_bins: int,
        image_size: int,
        num_classes: int,
        num_patterns: int,
        seed: int = 0,
        split: str = "train",
        noise: float = 0.5,
    ):
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split must be one of {list(_SPLIT_OFFSET)}, got {split!r}")
        self.split = split
        g = torch.Generator().manual_seed(seed * 7919 + _SPLIT_OFFSET[split])
        n, t_len, f_len, h = size, audio_length, num_mel_bins, image_size
        cls = torch.randperm(n, generator=g) % num_patterns  # [N] balanced classes
        s1, s2 = torch.rand(n, generator=g), torch.rand(n, generator=g)  # [N] per-clip signature

        # audio: a class-specific harmonic comb over the whole clip (what reconstruction can learn), plus a loud
        # band of mel bins centred at s1, on for half the clip from s2, modulated at a class-specific rate
        t = torch.arange(t_len) / t_len  # [T]
        f = torch.arange(f_len) / f_len  # [F]
        spacing = 3.0 + cls.float()[:, None]  # comb teeth per unit of frequency
        comb = 0.5 * torch.cos(2 * math.pi * spacing * f[None])  # [N, F]
        band = torch.exp(-0.5 * ((f[None] - (0.1 + 0.8 * s1[:, None])) / 0.06) ** 2)  # [N, F]
        onset = 0.45 * s2[:, None]
        window = torch.sigmoid((t[None] - onset) * 60) * torch.sigmoid((onset + 0.5 - t[None]) * 60)  # [N, T]
        rate = 4.0 + 4.0 * cls.float()[:, None]
        modulation = 0.5 + 0.5 * torch.sin(2 * math.pi * rate * t[None])  # [N, T]
        pattern_a = comb[:, None, :] + AMPLITUDE * (window * modulation)[:, :, None] * band[:, None, :]  # [N, T, F]
        self.audio = noise * torch.randn(n, t_len, f_len, generator=g) + pattern_a

        # frames: class-coloured diagonal stripes of a class-specific period over the whole frame, plus a bright
        # blob of the class colour centred at (x, y) = (s1, s2), inset from the border
        y = (torch.arange(h) + 0.5) / h  # pixel centres in (0, 1)
        hue = 2 * math.pi * cls.float() / num_patterns
        colour = torch.stack([torch.cos(hue + k * 2 * math.pi / 3) for k in range(3)], dim=1)  # [N, 3]
        period = 2.0 + cls.float()  # stripes per frame
        stripes = 0.5 * torch.cos(2 * math.pi * period[:, None, None] * (y[None, :, None] + y[None, None, :]))
        cx, cy = 0.15 + 0.7 * s1, 0.15 + 0.7 * s2  # [N]
        blob = torch.exp(
            -((y[None, None, :] - cx[:, None, None]) ** 2 + (y[None, :, None] - cy[:, None, None]) ** 2) / (2 * 0.1**2)
        )  # [N, H, W]: rows = y, columns = x
        pattern_v = colour[:, :, None, None] * (stripes + AMPLITUDE * blob)[:, None]  # [N, 3, H, W]
        self.frames = noise * torch.randn(n, 3, h, h, generator=g) + pattern_v

        self.classes = cls
        self.labels = torch.nn.functional.one_hot(cls, num_classes).float()  # [N, C]
        self.signature = torch.stack([s1, s2], dim=1)  # [N, 2], for analyses

    def __len__(self) -> int:
        return self.audio.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {
            "audio": self.audio[i],
            "frames": self.frames[i],
            "labels": self.labels[i],
            "key": f"synthetic-{self.split}-{i:06d}",
        }


NUM_FRAMES = 10


class TenFrames(Dataset):
    """A synthetic split with N frames per clip (``frames`` [N, 3, H, W], N = 10 by default), for evaluation on
    every frame: frame N // 2 is the clip's own frame (what single-frame evaluation sees) and frame k that frame
    shifted circularly by k - N // 2 pixels to the right, so the views differ but show the same clip. With
    `per_frame_audio` (data.audio_window > 0) ``audio`` is [N, T, F] too, the clip's audio once per frame: the
    layout the shard loader gives Sync evaluation."""

    def __init__(self, base: SyntheticAV, num_frames: int = NUM_FRAMES, per_frame_audio: bool = False):
        self.base = base
        self.num_frames = num_frames
        self.per_frame_audio = per_frame_audio

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        sample = self.base[i]
        frame = sample["frames"]
        n = self.num_frames
        sample["frames"] = torch.stack([torch.roll(frame, k - n // 2, dims=-1) for k in range(n)])
        if self.per_frame_audio:
            sample["audio"] = sample["audio"].expand(n, *sample["audio"].shape).clone()
        return sample


@functools.lru_cache(maxsize=4)
def _cached(*args) -> SyntheticAV:
    return SyntheticAV(*args)


def synthetic_dataset(cfg: Config, split: str) -> SyntheticAV:
    """The synthetic split for this config (built once per process and cached: the tensors never change)."""
    m, d = cfg.model, cfg.data
    size = d.synthetic_size if split == "train" else d.synthetic_val_size
    return _cached(
        size,
        m.audio_length,
        m.num_mel_bins,
        m.image_size,
        m.num_classes,
        d.synthetic_classes,
        cfg.train.seed,
        split,
        d.synthetic_noise,
    )


def collate(samples: list[dict]) -> dict:
    """Stack samples into the loader's batch format: audio [B, T, F], frames [B, 3, H, W] (or [B, 10, 3, H, W]
    from :class:`TenFrames`), labels [B, C], keys."""
    return {
        "audio": torch.stack([s["audio"] for s in samples]),
        "frames": torch.stack([s["frames"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "keys": [s["key"] for s in samples],
    }
