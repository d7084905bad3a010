"""CAV-MAE Sync's audio windows: which fbank frames of a clip go with its frame k, and their fbank alone.

A Sync training pair is one of the clip's N frames (k in 0..N-1, at the times ``clip_start + k * duration / N``)
and the L fbank frames of audio around it. The mapping follows the public Sync loader (edsonroteia/cav-mae-sync,
``dataloader_sync.py``): the clip's fbank is first zero-padded or cut to S = :data:`CLIP_FBANK_FRAMES` (1024)
frames, whatever the clip's real length, then pos = round(k * S / N) (Python's round: halves to even),
start = max(0, pos - L // 2), and a window that would run past frame S is moved back to end at S (start 0 when
L >= S). A clip shorter than 10.24 s therefore has windows that reach into the padding, as in the public code.

:func:`window_fbank` computes only the window's frames: Kaldi frame j reads samples [160 j, 160 j + 400) and
nothing else (per-frame DC removal, preemphasis inside the frame), so the fbank of the samples
[160 start, 160 start + 400 + 160 (L - 1)) equals rows start..start+L-1 of the whole clip's fbank.
"""

from __future__ import annotations

import torch

from cavmae.data.fbank import FRAME_SHIFT, kaldi_fbank, samples_for_frames

# fbank frames a clip is padded or cut to before its windows are cut (the public Sync loader's fixed 1024: 10.24 s)
CLIP_FBANK_FRAMES = 1024


def frame_audio_window(k: int, num_frames: int, total_fbank_frames: int, window: int) -> int:
    """First fbank frame of the `window`-frame audio window of frame `k` of `num_frames` in a clip of
    `total_fbank_frames` (padded) fbank frames; the window is [start, start + window)."""
    if not 0 <= k < num_frames:
        raise ValueError(f"frame index {k} outside [0, {num_frames})")
    if window < 1 or total_fbank_frames < 1:
        raise ValueError(f"window ({window}) and total_fbank_frames ({total_fbank_frames}) must be >= 1")
    pos = round(k * total_fbank_frames / num_frames)
    start = max(0, pos - window // 2)
    return max(0, min(start, total_fbank_frames - window))


def window_fbank(wave: torch.Tensor, start: int, window: int, num_mel_bins: int = 128) -> torch.Tensor:
    """Unnormalised fbank [<= window, num_mel_bins] of the frames [start, start + window) that the 16 kHz waveform
    `wave` [N] (DC already removed over the whole clip) holds, computed from the samples those frames read only.
    Fewer than `window` rows when the window runs past the waveform: the missing rows are the whole clip's zero
    padding (0 before normalisation), which the caller adds."""
    first = start * FRAME_SHIFT
    return kaldi_fbank(wave[first : first + samples_for_frames(window)], num_mel_bins, max_frames=window)


__all__ = ["CLIP_FBANK_FRAMES", "frame_audio_window", "window_fbank"]
