"""Retrieval ranks against brute force; classification metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from cavmae.eval.metrics import (
    class_chance,
    class_only_ceiling,
    class_retrieval_metrics,
    classification_metrics,
    instance_chance,
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


# A small fixed example, every number below worked out by hand. Six clips: 0, 1, 2 of class 0, 3 and 4 of class 1,
# 5 alone in class 2. Row i of SCORES ranks the other clips in the order of ORDER[i] (0.9, 0.8, ...); the own pair
# scores highest (1.0) and must not count at the class level.
LABELS = torch.tensor([0, 0, 0, 1, 1, 2])
ORDER = [[3, 1, 5, 2, 4], [0, 2, 3, 4, 5], [4, 0, 1, 3, 5], [4, 0, 1, 2, 5], [0, 1, 2, 5, 3], [0, 1, 2, 3, 4]]


def fixed_scores() -> torch.Tensor:
    s = torch.eye(6)
    for i, others in enumerate(ORDER):
        for place, j in enumerate(others):
            s[i, j] = 0.9 - 0.1 * place
    return s


def test_class_level_retrieval_by_hand():
    # relevant (same class) down each row: 0: -+-+- (AP (1/2 + 2/4) / 2 = 1/2), 1: ++--- (AP 1), 2: -++-- (AP
    # (1/2 + 2/3) / 2 = 7/12), 3: +---- (AP 1), 4: ----+ (AP 1/5), 5: none (no AP: left out of the mean)
    m = class_retrieval_metrics(torch.eye(6), fixed_scores().t(), LABELS)  # query @ gallery.T = the scores
    assert m["P@1"] == pytest.approx(100 * 2 / 6)
    assert m["P@5"] == pytest.approx(100 * (2 + 2 + 2 + 1 + 1 + 0) / 5 / 6)
    assert m["P@10"] == pytest.approx(m["P@5"])  # only five others: k is cut to N - 1
    assert m["mAP"] == pytest.approx(100 * (1 / 2 + 1 + 7 / 12 + 1 + 1 / 5) / 5)


def test_class_level_ties_by_index():
    # every score equal: each row keeps the others in index order, so rows 0, 1, 2 find their two classmates at
    # places 1 and 2 (AP 1), rows 3 and 4 theirs at place 4 (AP 1/4), row 5 has none
    m = class_retrieval_metrics(torch.ones(6, 2), torch.ones(6, 2), LABELS)
    assert m["P@1"] == pytest.approx(100 * 3 / 6)
    assert m["mAP"] == pytest.approx(100 * (1 + 1 + 1 + 1 / 4 + 1 / 4) / 5)


def test_chance_levels_by_hand():
    assert instance_chance(6) == pytest.approx({"R@1": 100 / 6, "R@5": 500 / 6, "R@10": 100.0, "median_rank": 3.5})
    c = class_chance(LABELS)
    # relevant others m = 2, 2, 2, 1, 1, 0 of M = 5: P@k = mean m / 5 = 8 / 30; E[AP] for m = 2 of 5, enumerated
    # over the 10 placements: mean of (1 / p1 + 2 / p2) / 2 = 11.85 / 20 = 0.5925; for m = 1: E[1 / p] = H_5 / 5
    assert c["P@1"] == c["P@5"] == c["P@10"] == pytest.approx(100 * 8 / 30)
    assert c["mAP"] == pytest.approx(100 * (3 * 0.5925 + 2 * (137 / 60) / 5) / 5)


def test_class_only_ceiling_by_hand():
    # label-set sizes c = 3, 3, 3, 2, 2, 1: R@1 = mean(1/3, 1/3, 1/3, 1/2, 1/2, 1) = 1/2; P(rank 1) is exactly
    # 1/2, so the median is the midpoint 1.5
    assert class_only_ceiling(LABELS) == pytest.approx({"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "median_rank": 1.5})
    # c = 4, 4, 4, 4, 2, 2: P(rank 1) = P(rank 2) = (4 / 4 + 2 / 2) / 6 = 1/3, CDF(2) = 2/3: median 2
    ceiling = class_only_ceiling(torch.tensor([0, 0, 0, 0, 1, 1]))
    assert ceiling["R@1"] == pytest.approx(100 / 3) and ceiling["median_rank"] == 2.0


def test_multi_label_rules():
    # clips 0 and 2 hold labels {a, b}, clip 1 {a}, clip 3 {c}: "same class" = share a label (0, 1, 2 all relate);
    # the ceiling's blocks are identical label sets ({0, 2}, {1}, {3})
    labels = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert class_only_ceiling(labels)["R@1"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2 + 1) / 4)
    assert class_chance(labels)["P@1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 2 / 3 + 0) / 4)
    # scores that put clip 3 first for everyone: rows 0, 1, 2 miss at P@1, row 3 has nothing relevant
    s = torch.full((4, 4), 0.1)
    s[:, 3] = 0.9
    assert class_retrieval_metrics(torch.eye(4), s.t(), labels)["P@1"] == 0.0
