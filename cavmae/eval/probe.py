"""Probes of a pre-training run: how good the frozen embeddings of a fixed, small held-out set are.

Retrieval R@1/5/10 (and median rank) in both directions, and leave-one-out k-NN classification accuracy: each clip
takes the majority label of its k nearest other clips (cosine similarity) among the probe set, for the audio
embeddings, the video embeddings and their concatenation (each half L2-normalised). A hit is a predicted class
the clip carries (single- and multi-label alike). Embeddings only: no masking, no decoder, no gradients.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cavmae.eval.metrics import retrieval_metrics


@torch.no_grad()
def knn_accuracy(emb: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Leave-one-out k-NN accuracy (percent) of embeddings [N, D] with (multi-hot) labels [N, C]."""
    n = emb.shape[0]
    if n < 2:
        raise ValueError("k-NN needs at least two clips")
    e = F.normalize(emb.float(), dim=-1)
    sim = e @ e.t()
    sim.fill_diagonal_(float("-inf"))  # not its own neighbour
    idx = sim.topk(min(k, n - 1), dim=1).indices  # [N, k]
    votes = (labels.float() > 0.5).float()[idx].sum(1)  # [N, C]
    pred = votes.argmax(1)
    return 100.0 * float((labels[torch.arange(n), pred] > 0.5).float().mean())


@torch.no_grad()
def probe_metrics(
    model: nn.Module, batches: Iterable[dict], k: int = 10, scoring: str = "clip", windows: bool = False
) -> dict[str, float]:
    """Flat metrics of a pre-training model on probe batches (``audio``, ``frames`` [B, 3, H, W], ``labels``).

    A per-frame ``scoring`` (cavmae/eval/scoring.py, resolved from eval.scoring) takes frames [B, N, 3, H, W] with
    audio as :func:`cavmae.eval.retrieval.embed_frames` takes it; retrieval is scored by the strategy and k-NN runs
    on the frame-averaged embeddings."""
    from cavmae.eval.retrieval import embed_frames
    from cavmae.eval.scoring import retrieval_metrics_scored

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    audio, video, labels = [], [], []
    for b in batches:
        if scoring == "clip":
            a, v = model.embed(b["audio"].to(device), b["frames"].to(device))  # [B, D]
        else:
            a, v = embed_frames(model, b["audio"].to(device), b["frames"].to(device), windows)  # [B, N, D]
        audio.append(a.float().cpu())
        video.append(v.float().cpu())
        labels.append(b["labels"].float().cpu())
    model.train(was_training)
    a, v, y = torch.cat(audio), torch.cat(video), torch.cat(labels)
    out: dict[str, float] = {"clips": float(len(y))}
    if scoring == "clip":
        ranked = retrieval_metrics(a, v)
    else:
        ranked = retrieval_metrics_scored(a, v, scoring)
        a, v = a.mean(1), v.mean(1)  # one vector per clip for k-NN
    for direction, m in ranked.items():
        short = "v2a" if direction == "video_to_audio" else "a2v"
        out.update({f"{short}_{key}": value for key, value in m.items() if key != "mean_rank"})
    both = torch.cat([F.normalize(a, dim=-1), F.normalize(v, dim=-1)], dim=1)
    out.update(knn_a=knn_accuracy(a, y, k), knn_v=knn_accuracy(v, y, k), knn_av=knn_accuracy(both, y, k))
    return out
