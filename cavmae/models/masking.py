"""Random masking of token sequences for masked pre-training.

All functions return the kept tokens in their ORIGINAL order (kept indices ascending): order matters to a scan
backbone, and attention does not care. ``ids_restore`` maps the sequence [kept tokens (ascending), masked tokens
(ascending)] back to the original order, so ``gather(cat(kept, mask_tokens), ids_restore)`` un-shuffles.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Masked(NamedTuple):
    tokens: torch.Tensor  # [B, K, D] kept tokens, original order
    mask: torch.Tensor  # [B, L] 0 = kept, 1 = masked, original order
    ids_restore: torch.Tensor  # [B, L] position of each original token in cat(kept, masked)
    ids_keep: torch.Tensor  # [B, K] original indices of the kept tokens, ascending


def num_kept(length: int, mask_ratio: float) -> int:
    return int(length * (1 - mask_ratio))


def mask_from_noise(x: torch.Tensor, noise: torch.Tensor, mask_ratio: float) -> Masked:
    """Keep the `num_kept` tokens with the lowest noise. x [B, L, D], noise [B, L]."""
    b, length, dim = x.shape
    keep = num_kept(length, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_keep = torch.sort(ids_shuffle[:, :keep], dim=1).values
    ids_drop = torch.sort(ids_shuffle[:, keep:], dim=1).values
    ids_order = torch.cat([ids_keep, ids_drop], dim=1)  # the "shuffle" the decoder must undo
    ids_restore = torch.argsort(ids_order, dim=1)
    tokens = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(b, length, device=x.device, dtype=x.dtype)
    mask.scatter_(1, ids_keep, 0.0)
    return Masked(tokens, mask, ids_restore, ids_keep)


def random_masking(
    x: torch.Tensor,
    mask_ratio: float,
    mode: str = "unstructured",
    grid: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> Masked:
    """Mask `mask_ratio` of the tokens of x [B, L, D].

    mode: ``unstructured`` (per-sample uniform noise, MAE), or for audio on a (freq, time) `grid`: ``time``
    (whole time columns), ``freq`` (whole frequency rows), ``tf`` (both, 70 % of the ratio each), as in CAV-MAE's
    ablations. Structured modes push the chosen columns / rows to the masked side by adding 1.1 to their noise, so
    ties among them are still broken at random.
    """
    b, length, _ = x.shape
    noise = torch.rand(b, length, device=x.device, generator=generator)
    if mode == "unstructured":
        return mask_from_noise(x, noise, mask_ratio)
    if grid is None or grid[0] * grid[1] != length:
        raise ValueError(f"mask mode {mode!r} needs the (freq, time) grid of the {length} tokens, got {grid}")
    f, t = grid
    noise = noise.view(b, f, t)
    if mode in ("time", "tf"):
        n_t = int(t * mask_ratio * (0.7 if mode == "tf" else 1.0))
        cols = torch.rand(b, t, device=x.device, generator=generator).argsort(dim=1)[:, :n_t]  # [B, n_t]
        hit = torch.zeros(b, t, device=x.device).scatter_(1, cols, 1.1)
        noise = noise + hit[:, None, :]
    if mode in ("freq", "tf"):
        n_f = int(f * mask_ratio * (0.7 if mode == "tf" else 1.0))
        rows = torch.rand(b, f, device=x.device, generator=generator).argsort(dim=1)[:, :n_f]
        hit = torch.zeros(b, f, device=x.device).scatter_(1, rows, 1.1)
        noise = noise + hit[:, :, None]
    if mode not in ("time", "freq", "tf"):
        raise ValueError(f"unknown mask mode {mode!r}; expected unstructured, time, freq or tf")
    return mask_from_noise(x, noise.reshape(b, length), mask_ratio)
