"""Retrieval and classification metrics.

Retrieval: query i's true match is gallery item i. Its rank is 1 + the number of gallery items that score higher,
plus the number of items with an EQUAL score and a lower index (ties resolved deterministically, by index, so
the result does not depend on the sort algorithm or on chunking). Scores are computed in chunks of queries so a
100,000 x 100,000 similarity matrix is never held at once (chunk x N floats at a time).

Classification: mAP / mAUC (multi-label, AudioSet) and top-1 / top-5 accuracy (single-label, VGGSound) from
torchmetrics, macro-averaged over classes as the CAV-MAE papers report them.

Retrieval at two levels (:func:`class_retrieval_metrics`, :func:`instance_chance`, :func:`class_chance`,
:func:`class_only_ceiling`), for paired clips with labels ``[N]`` (class indices) or ``[N, C]`` (multi-hot):

- instance level: query i must find its own pair, gallery item i (R@k, median rank; chance R@k = k / N, median
  rank (N + 1) / 2);
- class level: the gallery is the N - 1 OTHER clips (the own pair is left out, so the level measures the class
  alone) and an item is relevant when it shares at least one label with the query; precision@k and mean average
  precision over the queries that have a relevant item;
- the class-only ceiling of instance R@k: an embedding that knows only a clip's labels ranks first the clips whose
  label set equals the query's (multi-label: identical sets; a clip sharing one label of two is still told apart)
  and cannot order them, so the true pair sits at a uniformly random position among those c clips (its own pair
  included): expected R@k = mean over queries of min(k, c) / c.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def true_match_ranks(query: torch.Tensor, gallery: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """1-based rank of gallery[i] among all gallery items for query[i]. query, gallery [N, D] -> ranks [N] (int64).

    Scores are dot products: pass L2-normalised embeddings for cosine similarity.
    """
    if query.shape != gallery.shape:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be paired [N, D]")
    n = query.shape[0]
    ranks = torch.empty(n, dtype=torch.long)
    idx = torch.arange(n, device=gallery.device)
    for start in range(0, n, chunk):
        q = query[start : start + chunk]
        s = q @ gallery.t()  # [c, N]
        rows = torch.arange(s.shape[0], device=s.device)
        own = s[rows, rows + start].unsqueeze(1)  # [c, 1] score of the true match
        higher = (s > own).sum(1)
        tied_before = ((s == own) & (idx[None, :] < (rows + start)[:, None])).sum(1)
        ranks[start : start + chunk] = (1 + higher + tied_before).cpu()
    return ranks


def rank_summary(ranks: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@k in percent, median and mean rank."""
    out = {f"R@{k}": 100.0 * (ranks <= k).double().mean().item() for k in ks}
    out["median_rank"] = ranks.double().quantile(0.5).item()  # mean of the two middle ranks when N is even
    out["mean_rank"] = ranks.double().mean().item()
    return out


@torch.no_grad()
def retrieval_metrics(audio_emb: torch.Tensor, video_emb: torch.Tensor, chunk: int = 1024) -> dict[str, dict]:
    """Both directions for paired embeddings [N, D] (normalised here): ``video_to_audio`` and ``audio_to_video``."""
    a = F.normalize(audio_emb.float(), dim=-1)
    v = F.normalize(video_emb.float(), dim=-1)
    return {
        "video_to_audio": rank_summary(true_match_ranks(v, a, chunk)),
        "audio_to_video": rank_summary(true_match_ranks(a, v, chunk)),
    }


def label_matrix(labels: torch.Tensor) -> torch.Tensor:
    """labels [N] class indices or [N, C] multi-hot -> [N, C] bool (single-label as one-hot)."""
    if labels.dim() == 1:
        return F.one_hot(labels.long(), int(labels.max()) + 1 if labels.numel() else 1).bool()
    return labels > 0.5


def shares_label(labels: torch.Tensor) -> torch.Tensor:
    """[N, N] bool: clips i and j share at least one label (the class level's "same class")."""
    m = label_matrix(labels).float()
    return (m @ m.t()) > 0


def same_label_set(labels: torch.Tensor) -> torch.Tensor:
    """[N, N] bool: clips i and j have identical label sets (what a class-only embedding cannot tell apart)."""
    m = label_matrix(labels)
    return (m[:, None, :] == m[None, :, :]).all(-1)


def _others(n: int) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool)


@torch.no_grad()
def class_retrieval_metrics(
    query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Class-level retrieval (percent): ``P@k`` and ``mAP`` of query [N, D] against the other N - 1 gallery items
    [N, D] (dot products: pass L2-normalised embeddings), relevant = shares a label (module docstring). Equal
    scores are ordered by gallery index, as in :func:`true_match_ranks`. Holds the [N, N] scores at once."""
    if query.shape != gallery.shape:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be paired [N, D]")
    n = query.shape[0]
    if n < 2:
        raise ValueError("class-level retrieval needs at least two clips")
    scores = (query.float() @ gallery.float().t()).cpu()
    others = _others(n)
    # [N, N - 1]: each row's other items, best first (stable sort of the index-ordered row: ties by index)
    order = torch.sort(scores[others].view(n, n - 1), dim=1, descending=True, stable=True).indices
    relevant = torch.gather(shares_label(labels)[others].view(n, n - 1), 1, order).double()  # [N, N - 1]
    out = {f"P@{k}": 100.0 * relevant[:, : min(k, n - 1)].mean(1).mean().item() for k in ks}
    hits = relevant.cumsum(1)
    precision = hits / torch.arange(1, n, dtype=torch.float64)
    count = relevant.sum(1)
    scored = count > 0
    ap = (precision * relevant).sum(1)[scored] / count[scored]
    out["mAP"] = 100.0 * ap.mean().item() if scored.any() else math.nan
    return out


def instance_chance(n: int, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Instance retrieval of a random ranking of n items: R@k = min(k, n) / n (percent), median rank (n + 1) / 2."""
    out = {f"R@{k}": 100.0 * min(k, n) / n for k in ks}
    out["median_rank"] = (n + 1) / 2
    return out


def class_chance(labels: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Class-level retrieval of a random ranking (percent): with m relevant among the M = N - 1 others, expected
    P@k = m / M for every k, expected AP = (H_M + (m - 1) / (M - 1) * (M - H_M)) / M (H_M the M-th harmonic
    number); both averaged over the queries (mAP: over those with m > 0, as :func:`class_retrieval_metrics`)."""
    n = labels.shape[0]
    big_m = n - 1
    m = (shares_label(labels) & _others(n)).sum(1).double()  # [N] relevant others per query
    precision = 100.0 * (m / big_m).mean().item()
    harmonic = sum(1.0 / r for r in range(1, big_m + 1))
    spread = (m - 1) / (big_m - 1) if big_m > 1 else torch.zeros_like(m)
    ap = (harmonic + spread * (big_m - harmonic)) / big_m
    scored = m > 0
    out = {f"P@{k}": precision for k in ks}
    out["mAP"] = 100.0 * ap[scored].mean().item() if scored.any() else math.nan
    return out


def class_only_ceiling(labels: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """The best expected instance retrieval of an embedding that knows only each clip's labels (module docstring):
    query i's pair is uniform over the c_i clips of its label set, so R@k = mean_i min(k, c_i) / c_i (percent);
    the median rank is that of the pooled rank distribution P(r) = mean_i [r <= c_i] / c_i (the midpoint r + 0.5
    where its CDF is exactly 1/2, as the sample median of many draws)."""
    c = same_label_set(labels).sum(1).double()  # [N], own pair included
    out = {f"R@{k}": 100.0 * (c.clamp(max=k) / c).mean().item() for k in ks}
    cdf = 0.0
    for r in range(1, int(c.max()) + 1):
        cdf += ((r <= c).double() / c).mean().item()
        if abs(cdf - 0.5) < 1e-9:
            out["median_rank"] = r + 0.5
            break
        if cdf > 0.5:
            out["median_rank"] = float(r)
            break
    return out


@torch.no_grad()
def top_k(query: torch.Tensor, gallery: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores and indices of the k best gallery items for each query [Q, D] -> ([Q, k], [Q, k]).

    Equal scores are ordered by gallery index, as in :func:`true_match_ranks`.
    """
    q = F.normalize(query.float(), dim=-1)
    g = F.normalize(gallery.float(), dim=-1)
    s = q @ g.t()
    order = torch.sort(s, dim=1, descending=True, stable=True)  # stable: equal scores keep index order
    k = min(k, g.shape[0])
    return order.values[:, :k], order.indices[:, :k]


def d_prime(auc: float) -> float:
    """Sensitivity index from an AUC: sqrt(2) * Phi^-1(AUC) (the d-prime AudioSet papers report beside mAUC)."""
    auc = min(max(float(auc), 1e-7), 1 - 1e-7)
    return math.sqrt(2.0) * float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(auc, dtype=torch.float64)))


def to_probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Sigmoid (multi-label) or softmax over the last dim (single-label), in float32."""
    logits = logits.float()
    return logits.sigmoid() if multilabel else logits.softmax(dim=-1)


@torch.no_grad()
def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """logits [N, C]; targets [N, C] multi-hot (multi-label) or one-hot / class indices [N] (single-label).

    Multi-label: macro mAP, mAUC and d-prime (classes without a positive are left out of the averages, as
    sklearn-based evaluation code must do to be defined). Single-label: top-1 and top-5 accuracy (percent).
    """
    return score_metrics(to_probabilities(logits, multilabel), targets, multilabel)


@torch.no_grad()
def score_metrics(probs: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """:func:`classification_metrics` from probabilities [N, C] (e.g. averaged over frames) instead of logits."""
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multilabel_auroc,
        multilabel_average_precision,
    )

    probs = probs.float().cpu()
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("score_metrics expects probabilities in [0, 1]; pass logits to classification_metrics")
    num_classes = probs.shape[1]
    if multilabel:
        t = (targets > 0.5).long().cpu()
        present = t.sum(0) > 0
        if not present.any():
            raise ValueError("no positive label in the evaluation targets: mAP is undefined")
        p = probs[:, present]
        t = t[:, present]
        n = int(present.sum())
        mauc = multilabel_auroc(p, t, num_labels=n, average="macro").item()
        return {
            "mAP": multilabel_average_precision(p, t, num_labels=n, average="macro").item(),
            "mAUC": mauc,
            "d_prime": d_prime(mauc),
            "classes_scored": float(n),
        }
    labels = targets.argmax(1) if targets.dim() == 2 else targets
    labels = labels.long().cpu()
    out = {"top1": 100.0 * multiclass_accuracy(probs, labels, num_classes=num_classes, average="micro").item()}
    if num_classes >= 5:
        out["top5"] = (
            100.0 * multiclass_accuracy(probs, labels, num_classes=num_classes, top_k=5, average="micro").item()
        )
    return out


def main_metric(multilabel: bool) -> str:
    """The number a run is judged by: mAP (multi-label, AudioSet) or top-1 accuracy (single-label, VGGSound)."""
    return "mAP" if multilabel else "top1"


@torch.no_grad()
def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy (percent) of each class [C] for single-label predictions; NaN for classes absent from `labels`."""
    num_classes = logits.shape[1]
    pred = logits.argmax(1).cpu()
    labels = labels.long().cpu()
    correct = torch.zeros(num_classes).index_add_(0, labels, (pred == labels).float())
    count = torch.zeros(num_classes).index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
    return torch.where(count > 0, 100.0 * correct / count.clamp_min(1), torch.full_like(count, float("nan")))
