"""Losses of CAV-MAE pre-training: norm-pix reconstruction on masked patches, and InfoNCE.

The contrastive loss can take its negatives from every rank: embeddings are gathered with an autograd all-gather
(``torch.distributed.nn.functional.all_gather``), each rank computes the loss of its own rows with labels offset
by ``rank * local_batch``. N ranks with batch b then see the same loss as one process with batch N*b; the
all-gather's backward sums gradients over ranks, which DDP's gradient averaging turns back into the mean.

Contrast groups (the paper's negatives on any device count): the paper ran DataParallel on 4 GPUs, so each GPU's
InfoNCE took its negatives from its own quarter of the batch. :func:`grouped_info_nce` cuts the global batch into
G groups of N consecutive clips, computes InfoNCE within each and returns this process's part of the MEAN over
groups (gathering from other ranks only when a group spans ranks), so the grouped loss has the scale of the
ungrouped one. The paper summed its four GPUs' losses, sum_g (k_rec rec_g + k_c InfoNCE_g): G times
k_rec rec + k_c mean_g InfoNCE_g, so G times our gradients. Adam's step does not depend on the scale of the loss
(up to its eps, which weighs G times more against our gradients), so the same lr takes the same steps; but Adam's
coupled weight decay (wd * param added to the gradient) weighs G times more against our loss than against the
paper's sum: weight decay wd here steps as G * wd did in the paper.
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


def grouped_info_nce(
    audio_emb: torch.Tensor,
    video_emb: torch.Tensor,
    group: int,
    temperature: float = 0.05,
    symmetric: bool = False,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE within groups of ``group`` consecutive clips of the global batch, embeddings [b, D] per process.

    Returns (the mean over this process's rows of their in-group InfoNCE, in-group retrieval accuracy of the local
    rows). Every group holds ``group`` rows and every process b, so the mean of the first over processes (what
    DDP's gradient averaging optimises) is mean_g InfoNCE_g over the G groups of the global batch: on one process,
    a batch of 8 with groups of 4 gives exactly (InfoNCE(first 4) + InfoNCE(last 4)) / 2, loss and gradients. A
    group that spans processes needs ``gather`` (an autograd all-gather); without it (forwards that not every
    process runs) the local batch is cut into groups, or is one group when ``group`` does not divide it.
    """
    b = audio_emb.shape[0]
    a = F.normalize(audio_emb.float(), dim=-1)
    v = F.normalize(video_emb.float(), dim=-1)
    if gather and b % group:
        a_all, offset = gather_batch(a)
        v_all, _ = gather_batch(v)
    else:
        a_all, v_all, offset = a, v, 0
    total = a_all.shape[0]
    if total % group:
        if a_all is not a:
            raise ValueError(f"train.contrast_group={group} does not divide the global batch of {total} clips")
        group = total  # off the training path: one group
    rows = offset + torch.arange(b, device=a.device)  # global index of each local row
    labels = rows % group  # position within its group
    start = rows - labels  # [b] first global row of its group

    def in_group(x_all: torch.Tensor) -> torch.Tensor:  # [b, group, D]: the clips of each local row's group
        return x_all[start[:, None] + torch.arange(group, device=a.device)[None, :]]

    logits_v2a = torch.einsum("bd,bnd->bn", v, in_group(a_all)) / temperature  # [b, group]
    loss = F.cross_entropy(logits_v2a, labels)
    acc = (logits_v2a.argmax(dim=1) == labels).float().mean()
    if symmetric:
        logits_a2v = torch.einsum("bd,bnd->bn", a, in_group(v_all)) / temperature
        loss = 0.5 * (loss + F.cross_entropy(logits_a2v, labels))
    return loss, acc.detach()
