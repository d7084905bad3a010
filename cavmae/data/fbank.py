"""Waveform -> normalised log-mel fbank, exactly as CAV-MAE computes it, plus the fbank augmentations.

Reference (the public CAV-MAE code's data loader): 16 kHz mono waveform, DC removed (subtract its mean), then
``torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)`` (25 ms window, preemphasis 0.97,
power spectrum, snip_edges), zero-padded at the end or cut to ``target_length`` frames, then
``(x - (-5.081)) / 4.4849``.

:func:`kaldi_fbank` computes the same numbers as torchaudio's function (within 1e-5; the tests check it) in less time
(measured: scripts/results/README.md), because the loader runs it once per sample: it keeps the mel filterbank and the
window between calls (torchaudio rebuilds both every call), skips the frame log-energy that ``use_energy=False``
throws away, and gets the power spectrum and the mel energies in one product: the squared real and imaginary parts
[frames, 514] times the filterbank with its rows repeated, in blocks of consecutive filters that skip the ~87 % of the
filterbank that is zero. The frame preparation (per-frame DC removal, preemphasis, window) keeps torchaudio's order of
operations exactly: preemphasis cancels most of the low frequencies, so a different rounding there moves the low mel
bins of quiet frames by up to 1e-3.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms at 16 kHz
FFT_SIZE = 512  # frame length rounded up to a power of two, as Kaldi does
PREEMPHASIS = 0.97
FBANK_MEAN = -5.081  # AudioSet statistics (the public CAV-MAE code's), also used for VGGSound
FBANK_STD = 4.4849
_EPS = torch.finfo(torch.float32).eps  # Kaldi's floor before the log


def samples_for_frames(num_frames: int) -> int:
    """Waveform samples needed for `num_frames` fbank frames (1024 frames -> 164,080 samples, 10.255 s)."""
    return FRAME_LENGTH + FRAME_SHIFT * (num_frames - 1)


def frames_for_samples(num_samples: int) -> int:
    """Fbank frames Kaldi produces from `num_samples` samples (snip_edges: only whole windows)."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


@functools.lru_cache(maxsize=8)
def _filterbank(num_mel_bins: int) -> tuple[torch.Tensor, tuple[tuple[int, int, int, int, torch.Tensor], ...]]:
    """The Hann window [400] and the mel filterbank cut into blocks of consecutive filters.

    Each block is (first filter, end filter, first FFT bin, end FFT bin, weights [bins, filters]) covering only the
    FFT bins where one of its filters is non-zero. Built once per process from torchaudio's own
    ``get_mel_banks`` so the weights are bit-identical to the reference.
    """
    from torchaudio.compliance.kaldi import get_mel_banks

    # low_freq 20, high_freq 0 (= Nyquist), no VTLN: Kaldi's defaults, as the reference call uses them.
    mel, _ = get_mel_banks(num_mel_bins, FFT_SIZE, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
    mel = torch.nn.functional.pad(mel.float(), (0, 1))  # [mel, 257]: the Nyquist bin gets weight 0, as in Kaldi
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float32)
    # 8 blocks: the fastest split on a 1024 x 257 spectrum, well ahead of the dense product (scripts/results/README.md)
    per_block = max(1, num_mel_bins // 8)
    blocks = []
    for first in range(0, num_mel_bins, per_block):
        end = min(first + per_block, num_mel_bins)
        nonzero = (mel[first:end] != 0).any(0).nonzero().flatten()
        if nonzero.numel() == 0:  # filters narrower than one FFT bin (very many mel bins): all-zero output
            lo, hi = 0, 1
        else:
            lo, hi = int(nonzero[0]), int(nonzero[-1]) + 1
        # rows repeated for the interleaved (re^2, im^2) columns of the squared spectrum: [2 * bins, filters]
        blocks.append((first, end, lo, hi, mel[first:end, lo:hi].T.repeat_interleave(2, dim=0).contiguous()))
    return window, tuple(blocks)


def kaldi_fbank(waveform: torch.Tensor, num_mel_bins: int = 128, max_frames: int | None = None) -> torch.Tensor:
    """Log-mel fbank of a 16 kHz mono waveform [N] -> [frames, num_mel_bins], like torchaudio's Kaldi fbank.

    Equivalent to ``torchaudio.compliance.kaldi.fbank(waveform[None], htk_compat=True, sample_frequency=16000,
    use_energy=False, window_type='hanning', num_mel_bins=num_mel_bins, dither=0.0, frame_shift=10)`` (within 1e-5).
    The caller removes the DC offset of the whole waveform first, as CAV-MAE does. `max_frames` stops early: frames
    are local, so the first k frames do not depend on the samples after them.
    """
    if waveform.dim() != 1:
        raise ValueError(f"kaldi_fbank expects a 1-D waveform, got shape {tuple(waveform.shape)}")
    waveform = waveform.float()
    n = frames_for_samples(waveform.numel())
    if max_frames is not None:
        n = min(n, max_frames)
    if n == 0:
        return waveform.new_zeros(0, num_mel_bins)
    window, blocks = _filterbank(num_mel_bins)
    frames = waveform.as_strided((n, FRAME_LENGTH), (FRAME_SHIFT * waveform.stride(0), waveform.stride(0)))
    padded = waveform.new_empty(n, FFT_SIZE)  # frames zero-padded to the FFT size, written in place
    padded[:, FRAME_LENGTH:] = 0
    x = padded[:, :FRAME_LENGTH]
    torch.sub(frames, frames.mean(dim=1, keepdim=True), out=x)  # per-frame DC removal
    # preemphasis x[j] -= 0.97 x[j-1], with x[-1] = x[0] (Kaldi's replicate padding)
    shifted = torch.cat((x[:, :1], x[:, :-1]), dim=1)
    x.sub_(shifted.mul_(PREEMPHASIS))
    x.mul_(window)
    # |z|^2 = re^2 + im^2, summed by the filterbank product itself: [n, 257] complex -> [n, 514] real, squared
    sq = torch.view_as_real(torch.fft.rfft(padded)).reshape(n, 2 * (FFT_SIZE // 2 + 1)).square_()
    out = torch.cat([sq[:, 2 * lo : 2 * hi] @ weights for _, _, lo, hi, weights in blocks], dim=1)  # [n, mel]
    return out.clamp_min_(_EPS).log_()


def to_mono_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """A float waveform [N] or [channels, N] at any rate -> float32 [N] at 16 kHz (channels averaged)."""
    w = torch.as_tensor(waveform)
    if not w.is_floating_point():
        raise TypeError(f"expected a float waveform in [-1, 1], got dtype {w.dtype}")
    w = w.float()
    if w.dim() == 2:
        w = w.mean(dim=0)
    elif w.dim() != 1:
        raise ValueError(f"expected a waveform [N] or [channels, N], got shape {tuple(w.shape)}")
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        w = AF.resample(w, sample_rate, SAMPLE_RATE)
    return w


def wav_to_fbank(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    num_mel_bins: int = 128,
    target_length: int = 1024,
    normalize: bool = True,
    mean: float = FBANK_MEAN,
    std: float = FBANK_STD,
) -> torch.Tensor:
    """Waveform [N] or [channels, N] at `sample_rate` -> fbank float32 [target_length, num_mel_bins].

    Mono 16 kHz conversion, DC removal, Kaldi fbank, zero padding at the end or cutting to `target_length` frames
    (padding happens before normalisation, so padded frames hold -mean/std afterwards), then (x - mean) / std
    unless `normalize` is False (SpecAugment masks the unnormalised fbank with zeros, as CAV-MAE does).
    """
    w = to_mono_16k(waveform, sample_rate)
    w = w - w.mean()
    fb = kaldi_fbank(w, num_mel_bins, max_frames=target_length)
    if fb.shape[0] < target_length:
        fb = torch.nn.functional.pad(fb, (0, 0, 0, target_length - fb.shape[0]))
    if normalize:
        fb = normalize_fbank(fb, mean, std)
    return fb


def normalize_fbank(fbank: torch.Tensor, mean: float = FBANK_MEAN, std: float = FBANK_STD) -> torch.Tensor:
    """(x - mean) / std, in place."""
    return fbank.sub_(mean).div_(std)


def spec_augment(fbank: torch.Tensor, freqm: int, timem: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One frequency mask and one time mask on fbank [T, F] (in place), as torchaudio's masking transforms do.

    Widths are drawn uniformly in [0, freqm) / [0, timem) and the start uniformly where the mask fits; masked
    values become 0. CAV-MAE applies this to the unnormalised fbank, before :func:`normalize_fbank`.
    """
    t, f = fbank.shape[-2:]
    for size, width_max, dim in ((f, freqm, -1), (t, timem, -2)):
        if width_max <= 0:
            continue
        u = torch.rand(2, generator=generator)
        width = int(u[0] * width_max)
        start = int(u[1] * (size - width))
        if width:
            fbank.narrow(dim, start, width).zero_()
    return fbank


def add_noise(fbank: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """CAV-MAE's noise augmentation on the normalised fbank [T, F]: uniform noise scaled by U(0, 0.1), in place."""
    scale = float(torch.rand(1, generator=generator)) / 10
    return fbank.add_(torch.rand(fbank.shape, generator=generator).mul_(scale))


def time_roll(fbank: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Circular shift of fbank [T, F] along time by a uniform integer in [-T, T) (CAV-MAE's roll augmentation)."""
    t = fbank.shape[0]
    shift = int(torch.randint(-t, t, (1,), generator=generator))
    return torch.roll(fbank, shift, dims=0)


__all__ = [
    "FBANK_MEAN",
    "FBANK_STD",
    "SAMPLE_RATE",
    "add_noise",
    "frames_for_samples",
    "kaldi_fbank",
    "normalize_fbank",
    "samples_for_frames",
    "spec_augment",
    "time_roll",
    "to_mono_16k",
    "wav_to_fbank",
]
