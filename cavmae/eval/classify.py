"""Running a classifier on a batch: one frame per clip, or each of several frames per clip.

Ten-frame evaluation follows the paper: the model runs once per frame and the *probabilities* (sigmoid for
multi-label, softmax for single-label) are averaged afterwards (cavmae/eval/evaluate.py), never the logits.
"""

from __future__ import annotations

import torch
from torch import nn

# Modes whose prediction does not depend on the frames: one pass is enough, whatever the number of frames.
AUDIO_ONLY_MODES = ("audio", "audioonly", "missing_video", "missingaudioonly")


def classify(model: nn.Module, batch: dict, mode: str, head: str = "linear") -> torch.Tensor:
    """Logits [B, C] of a batch with one frame per clip (frames [B, 3, H, W]); with the attention head
    (``finetune.head``) of whole clips (audio [B, N, L, F], frames [B, N, 3, H, W]). Audio-only modes need no
    frames (an audio-only batch has none)."""
    frames = batch.get("frames")
    if head == "attention":
        return model(batch["audio"], frames, mode=mode)
    if frames is not None and frames.dim() != 4:
        raise ValueError(
            f"classify expects frames [B, 3, H, W], got {tuple(frames.shape)}; use frame_logits for several frames"
        )
    return model(batch["audio"], None if mode in AUDIO_ONLY_MODES else frames, mode=mode)


def frame_logits(model: nn.Module, batch: dict, mode: str, head: str = "linear", windows: bool = False) -> torch.Tensor:
    """Logits [B, F, C]: one forward per frame of frames [B, F, 3, H, W] (F = 1 for frames [B, 3, H, W]).

    ``windows`` (data.audio_window > 0): with several frames the audio is [B, F, L, F'], frame k's own window at
    [:, k], and frame k is classified with it; otherwise the one audio [B, L, F'] serves every frame.
    Audio-only modes do not look at the frames (an audio-only batch has none), so they run once and F = 1; the
    attention head sees every frame in one forward, so F = 1 too.
    """
    if mode in AUDIO_ONLY_MODES:
        return model(batch["audio"], None, mode=mode)[:, None]
    frames = batch["frames"]
    if head == "attention":
        return classify(model, batch, mode, head)[:, None]
    if frames.dim() == 4:
        return classify(model, batch, mode)[:, None]
    audio = batch["audio"]
    return torch.stack(
        [model(audio[:, i] if windows else audio, frames[:, i], mode=mode) for i in range(frames.shape[1])], dim=1
    )
