"""Retrieval ranks against brute force; classification metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from cavmae.eval.metrics import (
    classification_metrics,
    per_class_accuracy,
    rank_summary,
    retrieval_metrics,
    top_k,
    true_match_ranks,
)


def brute_force_ranks(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Sort every row by (score descending, index ascending) and find the true match: the reference."""
    s = (q @ g.t()).tolist()
    ranks = []
    for i, row in enumerate(s):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        ranks.append(order.index(i) + 1)
    return torch.tensor(ranks)


@pytest.mark.parametrize("n,d", [(1, 4), (37, 8), (300, 16)])
def test_ranks_equal_brute_force_and_chunking(n, d):
    torch.manual_seed(n)
    q, g = torch.randn(n, d), torch.randn(n, d)
    g[: n // 2] = q[: n // 2] + 0.3 * torch.randn(n // 2, d)  # some real matches so ranks spread out
    ref = brute_force_ranks(q, g)
    assert torch.equal(true_match_ranks(q, g, chunk=n + 5), ref)
    for chunk in (1, 7, 64):
        assert torch.equal(true_match_ranks(q, g, chunk=chunk), ref)


def test_ties_resolved_by_index():
    g = torch.ones(5, 2)  # every gallery item scores the same for every query
    q = torch.ones(5, 2)
    assert true_match_ranks(q, g).tolist() == [1, 2, 3, 4, 5]
    assert torch.equal(true_match_ranks(q, g, chunk=2), brute_force_ranks(q, g))
    scores, idx = top_k(q[:1], g, k=3)
    assert idx.tolist() == [[0, 1, 2]]


def test_summary_values():
    s = rank_summary(torch.tensor([1, 2, 6, 11]))
    assert s["R@1"] == 25.0 and s["R@5"] == 50.0 and s["R@10"] == 75.0
    assert s["median_rank"] == 4.0 and s["mean_rank"] == 5.0
    assert rank_summary(torch.tensor([3, 1, 2]))["median_rank"] == 2.0


def test_retrieval_metrics_perfect_and_directions():
    torch.manual_seed(0)
    a = torch.randn(50, 8)
    m = retrieval_metrics(a, a * 3.0)  # scale does not matter: cosine similarity
    assert m["video_to_audio"]["R@1"] == 100.0 and m["audio_to_video"]["median_rank"] == 1.0
    v = torch.randn(50, 8)
    m = retrieval_metrics(a, v)
    assert m["video_to_audio"]["R@1"] < 20.0


def test_map_and_auc_equal_sklearn():
    rng = np.random.default_rng(0)
    n, c = 200, 12
    targets = (rng.random((n, c)) < 0.2).astype(np.int64)
    targets[0] = 1  # every class has a positive
    logits = rng.normal(size=(n, c)) + 1.5 * targets
    m = classification_metrics(torch.tensor(logits), torch.tensor(targets), multilabel=True)
    probs = 1 / (1 + np.exp(-logits))
    assert abs(m["mAP"] - average_precision_score(targets, probs, average="macro")) < 1e-5
    assert abs(m["mAUC"] - roc_auc_score(targets, probs, average="macro")) < 1e-5


def test_single_label_accuracy():
    logits = torch.tensor([[3.0, 1, 0, 0, 0, 0], [0, 3.0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 3.0]])
    labels = torch.tensor([0, 2, 0])
    m = classification_metrics(logits, labels, multilabel=False)
    assert abs(m["top1"] - 100 / 3) < 1e-4 and m["top5"] == 100.0
    one_hot = torch.nn.functional.one_hot(labels, 6).float()
    assert classification_metrics(logits, one_hot, multilabel=False)["top1"] == m["top1"]
    acc = per_class_accuracy(logits, labels)
    assert acc[0].item() == 50.0 and acc[2].item() == 0.0 and torch.isnan(acc[1])
