"""Patch embeddings, fixed 2-D sin-cos position embeddings (MAE convention), and patchify helpers."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Conv2d(kernel = stride = patch) from an image [B, C, H, W] to tokens [B, (H/p)*(W/p), dim], row-major.

    No norm, no CLS token (as in the public CAV-MAE code). The attribute name ``proj`` matches the public checkpoints.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid  # (rows, cols) of patches
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        if (rows, cols) != self.grid:
            raise ValueError(
                f"input of spatial size {tuple(x.shape[-2:])} gives a {rows}x{cols} patch grid; "
                f"this model was built for {self.grid[0]}x{self.grid[1]} (check model.audio_length / image_size)"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[len(positions), dim]: sin of the first half of frequencies, then cos (MAE's 1-D embedding)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.double()[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """[rows*cols, dim] row-major; first half of the channels encodes the column (width / time) index, second
    half the row (height / frequency) index, as MAE and CAV-MAE do."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding dim must be divisible by 4, got {dim}")
    col = torch.arange(cols).repeat(rows)  # token r*cols + c -> c
    row = torch.arange(rows).repeat_interleave(cols)  # -> r
    return torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1).float()


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C], pixel order (p_row, p_col, channel) like MAE."""
    b, c, h, w = imgs.shape
    p = patch_size
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, chans: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: [B, rows*cols, p*p*C] -> [B, C, rows*p, cols*p]."""
    b = x.shape[0]
    p = patch_size
    rows, cols = grid
    x = x.reshape(b, rows, cols, p, p, chans)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, chans, rows * p, cols * p)


def audio_to_image(audio: torch.Tensor) -> torch.Tensor:
    """fbank [B, T, F] -> image [B, 1, F, T] (height = frequency, width = time), so token index = f*(T/p) + t."""
    return audio.unsqueeze(1).transpose(2, 3)


def xavier_conv_(conv: nn.Conv2d) -> None:
    """MAE initialises the patch projection like a Linear layer (xavier on the flattened kernel)."""
    w = conv.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_linear_and_norm(module: nn.Module) -> None:
    """MAE / CAV-MAE init: xavier-uniform Linear weights with zero bias, LayerNorm weight 1 bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
