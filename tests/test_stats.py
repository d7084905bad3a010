"""``cavmae stats``: the fbank mean and std of a shard set, against a direct computation with torchaudio."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from cavmae.cli import main
from cavmae.data.prepare import prepare_shards
from cavmae.data.sources import plan_inputs
from cavmae.data.stats import fbank_statistics

FRAMES, BINS = 128, 32  # 1.28 s of fbank: the 0.5 s clip is padded, the 2 s clip is cut
SECONDS = {"a": 0.5, "b": 1.0, "c": 2.0}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    folder = root / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    waves = {}
    for i, (name, seconds) in enumerate(SECONDS.items()):
        n = int(seconds * 16000)
        wave = (0.1 * (i + 1) * np.sin(np.arange(n) * 0.05 * (i + 1)) + 0.02 * rng.standard_normal(n)).astype(
            np.float32
        )
        pcm = np.rint(wave * 32768).astype(np.int16)
        sf.write(folder / f"{name}.wav", pcm, 16000, subtype="PCM_16")
        waves[name] = torch.from_numpy(pcm.astype(np.float32) / 32768)
    manifest = prepare_shards(plan_inputs(videos=folder), root / "shards", name="s", samples_per_shard=2)
    return [str(root / "shards" / s["file"]) for s in manifest["shards"]], waves


def direct_fbank(wave: torch.Tensor) -> torch.Tensor:
    """CAV-MAE's fbank with torchaudio, zero-padded or cut to FRAMES, unnormalised: float64 [FRAMES, BINS]."""
    fb = torchaudio.compliance.kaldi.fbank(
        (wave - wave.mean())[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=BINS,
        dither=0.0,
        frame_shift=10,
    )
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, FRAMES - fb.shape[0])))[:FRAMES]
    return fb.double()


def direct(waves: list[torch.Tensor]) -> tuple[float, float]:
    values = torch.stack([direct_fbank(w) for w in waves])
    return float(values.mean()), float(values.std(unbiased=False))


def test_stats_equal_a_direct_computation(shards):
    urls, waves = shards
    stats = fbank_statistics(urls, audio_length=FRAMES, num_mel_bins=BINS)
    mean, std = direct(list(waves.values()))
    assert stats.clips == 3 and stats.skipped == 0
    assert stats.mean == pytest.approx(mean, abs=1e-4) and stats.std == pytest.approx(std, abs=1e-4)
    assert abs(mean - fbank_statistics(urls, audio_length=256, num_mel_bins=BINS).mean) > 0.1  # padding counts


def test_seeded_sample_of_clips(shards):
    urls, waves = shards
    first = fbank_statistics(urls, audio_length=FRAMES, num_mel_bins=BINS, clips=2, seed=3)
    assert first == fbank_statistics(urls, audio_length=FRAMES, num_mel_bins=BINS, clips=2, seed=3)
    assert first.clips == 2
    subsets = [direct([waves[k] for k in pair]) for pair in itertools.combinations(sorted(waves), 2)]
    matches = [m for m, s in subsets if abs(m - first.mean) < 1e-4 and abs(s - first.std) < 1e-4]
    assert len(matches) == 1  # exactly one pair of clips gives these statistics
    everything = fbank_statistics(urls, audio_length=FRAMES, num_mel_bins=BINS, clips=10)  # more than there are
    assert everything.clips == 3


def test_command_prints_the_overrides(shards, capsys):
    urls, waves = shards
    assert main(["stats", "--shards", *urls, "--audio-length", str(FRAMES), "--mel-bins", str(BINS)]) == 0
    line = capsys.readouterr().out.strip()
    m = re.fullmatch(r"data\.fbank_mean=(-?\d+\.\d{4}) data\.fbank_std=(\d+\.\d{4})  # 3 clips, .*", line)
    assert m, line
    mean, std = direct(list(waves.values()))
    assert float(m.group(1)) == pytest.approx(mean, abs=1e-4) and float(m.group(2)) == pytest.approx(std, abs=1e-4)
