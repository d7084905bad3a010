"""Normalisation statistics of a shard set: the mean and std of the fbank the loader computes (``cavmae stats``).

The loader normalises every fbank as ``(x - data.fbank_mean) / data.fbank_std``; the defaults are AudioSet's
(CAV-MAE's). For other data these are the values to set: the mean and the standard deviation of all values of the
clips' fbank exactly as the loader builds it before normalising (the whole clip's DC removed, cut or zero-padded to
``audio_length`` frames of ``num_mel_bins`` bins, no augmentation). Padded frames are counted, as they are in the
batches the model sees (AST's ``get_norm_stats`` also measures the loader's padded output); the std is that of all
values together (AST averages per-batch stds instead, which depends on the batch size).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cavmae.data.fbank import kaldi_fbank
from cavmae.data.samples import LoaderSettings, SampleError, decode, prune
from cavmae.data.shards import expand_shards, iter_shard

log = logging.getLogger(__name__)


@dataclass
class FbankStats:
    mean: float
    std: float
    clips: int  # clips measured
    skipped: int  # samples that could not be decoded (not measured)

    def overrides(self) -> str:
        """The config overrides that normalise with these statistics."""
        return f"data.fbank_mean={self.mean:.4f} data.fbank_std={self.std:.4f}"


def _settings(audio_length: int, num_mel_bins: int, audio_channel: str) -> LoaderSettings:
    """Evaluation-time loader settings of an audio-only pass (no frames, no augmentation, any label index)."""
    return LoaderSettings(
        audio_length=audio_length,
        num_mel_bins=num_mel_bins,
        image_size=0,
        num_classes=2**31 - 1,  # labels are not looked at; any index is valid
        train=False,
        frame_mode="middle",
        seed=0,
        batch_size=1,
        drop_last=False,
        shuffle_buffer=0,
        resampled=False,
        audio_channel=audio_channel,
        frames=False,
    )


def _samples(urls: list[str], skipped: list[str]):
    def on_error(kind: str, message: str) -> None:
        skipped.append(message)
        log.warning("skipped [%s]: %s", kind, message)

    for url in urls:
        yield from iter_shard(url, on_error)


def fbank_statistics(
    shards: str | Sequence[str],
    *,
    audio_length: int = 1024,
    num_mel_bins: int = 128,
    clips: int = 0,
    seed: int = 0,
    audio_channel: str = "first",
) -> FbankStats:
    """Mean and std of the loader's unnormalised fbank [audio_length, num_mel_bins] over the clips of `shards`.

    clips: 0 measures every clip; K > 0 a sample of K clips drawn with `seed` (the same K and seed give the same
    clips); the shards are then read twice (once to count). Samples that do not decode are skipped and counted.
    """
    urls = expand_shards(shards)
    if not urls:
        raise ValueError("no shards given")
    chosen: set[int] | None = None
    if clips > 0:
        total = sum(1 for _ in _samples(urls, []))
        if clips < total:
            chosen = set(random.Random(seed).sample(range(total), clips))
    s = _settings(audio_length, num_mel_bins, audio_channel)
    total_sum = total_sq = 0.0
    measured = 0
    skipped: list[str] = []
    for i, sample in enumerate(_samples(urls, skipped)):
        if chosen is not None and i not in chosen:
            continue
        try:
            wave = decode(prune(sample, s, 0)[0], s, 0).wave  # DC removed, cut to audio_length frames
        except SampleError as e:
            skipped.append(str(e))
            log.warning("skipped [%s]: %s", e.kind, e)
            continue
        fbank = torch.zeros(audio_length, num_mel_bins, dtype=torch.float64)
        part = kaldi_fbank(wave, num_mel_bins, max_frames=audio_length)  # [n <= T, F]; the rest stays 0 (padding)
        fbank[: part.shape[0]] = part
        total_sum += float(fbank.sum())
        total_sq += float((fbank * fbank).sum())
        measured += 1
    if not measured:
        raise ValueError(f"no clip could be measured in {len(urls)} shard(s) ({len(skipped)} skipped)")
    n = measured * audio_length * num_mel_bins
    mean = total_sum / n
    std = max(total_sq / n - mean * mean, 0.0) ** 0.5
    return FbankStats(mean, std, measured, len(skipped))
