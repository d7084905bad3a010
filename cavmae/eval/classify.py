"""Running a classifier on a batch: one frame per clip, or several frames per clip averaged."""

from __future__ import annotations

import torch
from torch import nn


def classify(model: nn.Module, batch: dict, mode: str) -> torch.Tensor:
    """Logits [B, C]; frames [B, 10, 3, H, W] are classified one frame at a time and the logits averaged."""
    frames = batch["frames"]
    if frames.dim() == 4:
        return model(batch["audio"], frames, mode=mode)
    return torch.stack([model(batch["audio"], frames[:, i], mode=mode) for i in range(frames.shape[1])]).mean(0)
