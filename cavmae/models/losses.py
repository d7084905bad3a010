"""Losses of CAV-MAE pre-training: norm-pix reconstruction on masked patches, and InfoNCE.

The contrastive loss can take its negatives from every rank: embeddings are gathered with an autograd all-gather
(``torch.distributed.nn.functional.all_gather``), each rank computes the loss of its own rows with labels offset
by ``rank * local_batch``. N ranks with batch b then see the same loss as one process with batch N*b; the
all-gather's backward sums gradients over ranks, which DDP's gradient averaging turns back into the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True):
    """Mean squared error over masked patches. pred/target [B, L, P], mask [B, L] (1 = masked)."""
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as MAE / CAV-MAE
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)  # [B, L]
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def gather_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All rows of every rank [world*b, D] (gradients flow back to each rank) and this rank's row offset."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    return torch.cat(parts, dim=0), dist.get_rank() * x.shape[0]


def info_nce(
    audio_emb: torch.Tensor,
    video_emb: torch.Tensor,
    temperature: float = 0.05,
    symmetric: bool = False,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE between pooled audio and video embeddings [b, D]; returns (loss, in-batch retrieval accuracy).

    One direction (the paper's default): each video picks its audio among all audios of the batch. ``symmetric``
    averages that with each audio picking its video. With ``gather`` the batch is the union over ranks.
    """
    a = F.normalize(audio_emb.float(), dim=-1)
    v = F.normalize(video_emb.float(), dim=-1)
    if gather:
        a_all, offset = gather_batch(a)
        v_all, _ = gather_batch(v)
    else:
        a_all, v_all, offset = a, v, 0
    labels = torch.arange(a.shape[0], device=a.device) + offset
    logits_v2a = v @ a_all.t() / temperature  # [b, world*b]: local videos against all audios
    loss = F.cross_entropy(logits_v2a, labels)
    acc = (logits_v2a.argmax(dim=1) == labels).float().mean()
    if symmetric:
        logits_a2v = a @ v_all.t() / temperature
        loss = 0.5 * (loss + F.cross_entropy(logits_a2v, labels))
    return loss, acc.detach()
