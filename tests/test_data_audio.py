"""cavmae.data.fbank: the fast fbank against torchaudio's Kaldi fbank, padding, normalisation, augmentations."""

import math

import pytest
import torch
import torchaudio

from cavmae.data.fbank import (
    FBANK_MEAN,
    FBANK_STD,
    add_noise,
    frames_for_samples,
    kaldi_fbank,
    samples_for_frames,
    spec_augment,
    time_roll,
    wav_to_fbank,
)


def reference_fbank(wave: torch.Tensor, num_mel_bins: int = 128, target_length: int = 1024) -> torch.Tensor:
    """CAV-MAE's recipe with torchaudio, written out as in design section 1."""
    wave = wave - wave.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        wave[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_shift=10,
    )
    p = target_length - fb.shape[0]
    fb = torch.nn.functional.pad(fb, (0, 0, 0, p)) if p > 0 else fb[:target_length]
    return (fb - FBANK_MEAN) / FBANK_STD


def _signals():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(160_000) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t)
    noisy = 0.1 * torch.randn(170_000, generator=g)
    # near-silent stretches with a DC offset: rounding decides the log here, so this is the hard case
    quiet = 0.2 + 1e-5 * torch.randn(50_000, generator=g)
    mixed = torch.cat([tone[:60_000], quiet, noisy[:40_000], torch.zeros(10_000)])
    return {"tone": tone, "noise": noisy, "quiet_dc": quiet, "mixed": mixed, "odd_length": noisy[:12_345]}


@pytest.mark.parametrize("name", list(_signals()))
@pytest.mark.parametrize("num_mel_bins", [128, 64])
def test_kaldi_fbank_matches_torchaudio(name, num_mel_bins):
    wave = _signals()[name]
    wave = wave - wave.mean()
    ref = torchaudio.compliance.kaldi.fbank(
        wave[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_shift=10,
    )
    ours = kaldi_fbank(wave, num_mel_bins)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("length", [0, 399, 400, 16_000, samples_for_frames(1024), 200_000])
def test_wav_to_fbank_pads_and_cuts_like_cavmae(length):
    wave = 0.1 * torch.randn(length, generator=torch.Generator().manual_seed(length))
    ref = reference_fbank(wave) if length >= 400 else torch.full((1024, 128), -FBANK_MEAN / FBANK_STD)
    ours = wav_to_fbank(wave, 16000)
    assert ours.shape == (1024, 128) and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() < 1e-5
    n = frames_for_samples(length)
    if n < 1024:  # padding is zero before normalisation
        assert torch.allclose(ours[n:], torch.tensor(-FBANK_MEAN / FBANK_STD))


def test_wav_to_fbank_converts_stereo_and_sample_rate():
    g = torch.Generator().manual_seed(1)
    stereo = 0.1 * torch.randn(2, 44_100 * 3, generator=g)
    ours = wav_to_fbank(stereo, 44_100)
    mono16k = torchaudio.functional.resample(stereo.mean(0), 44_100, 16_000)
    assert (ours - reference_fbank(mono16k)).abs().max().item() < 1e-5
    with pytest.raises(TypeError, match="float waveform"):
        wav_to_fbank(torch.zeros(16000, dtype=torch.int16), 16000)


def test_spec_augment_masks_within_bounds_and_is_seeded():
    fb = torch.ones(1024, 128)
    widths = []
    for seed in range(20):
        out = spec_augment(fb.clone(), 48, 192, torch.Generator().manual_seed(seed))
        cols = (out == 0).all(0)  # masked mel bins (whole columns)
        rows = (out == 0).all(1)  # masked frames (whole rows)
        assert (out == 0).sum() == cols.sum() * 1024 + rows.sum() * 128 - cols.sum() * rows.sum()
        assert cols.sum() < 48 and rows.sum() < 192
        widths.append((int(cols.sum()), int(rows.sum())))
        assert torch.equal(out, spec_augment(fb.clone(), 48, 192, torch.Generator().manual_seed(seed)))
    assert len(set(widths)) > 10 and max(w for w, _ in widths) > 24 and max(t for _, t in widths) > 96
    assert torch.equal(spec_augment(fb.clone(), 0, 0), fb)


def test_noise_and_roll():
    fb = torch.arange(1024 * 4, dtype=torch.float32).view(1024, 4)
    noisy = add_noise(fb.clone(), torch.Generator().manual_seed(0))
    assert (noisy - fb).min() >= 0 and (noisy - fb).max() <= 0.1
    rolled = time_roll(fb, torch.Generator().manual_seed(0))
    shift = int((rolled[:, 0] == 0).nonzero()[0])
    assert torch.equal(rolled, torch.roll(fb, shift, 0))
