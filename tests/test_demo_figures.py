"""The demo's figures on small hand-made inputs: what a reader is shown (scales, ranges, reference lines, names)."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.collections import LineCollection

from cavmae.demo.figures import (
    median_clip,
    per_class_figure,
    per_class_spread,
    recalls_figure,
    retrieval_leaves,
    similarity_figure,
    spread,
)
from cavmae.demo.heldout import RetrievalResult

NAMES = ["red circle tone 000", "turquoise ring square 004", "magenta diamond amplitude-modulated 003"]


def _leaf(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "per_seed": values}


def _errorbar_ys(ax) -> list[float]:
    """The y values of every error bar (vertical segments) drawn on ax."""
    return [y for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments() for _, y in seg]


def test_similarity_panels_share_one_colour_scale_and_show_full_names():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    g = torch.Generator().manual_seed(0)
    pre = torch.rand(6, 6, generator=g) * 0.8 - 0.1  # cosines spanning [-0.1, 0.7]
    rnd = torch.rand(6, 6, generator=g) * 0.1 + 0.05  # a narrow range: must not be stretched to the full colour map
    retrieval = {"pretrained": RetrievalResult({}, pre), "random_init": RetrievalResult({}, rnd)}
    fig = similarity_figure(retrieval, labels, NAMES)
    panels = [ax for ax in fig.axes if ax.get_xlabel().startswith("video clip")]
    assert len(panels) == 2
    norms = [(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in panels]
    assert norms[0] == norms[1] == pytest.approx((float(min(pre.min(), rnd.min())), float(max(pre.max(), rnd.max()))))
    colourbars = [ax for ax in fig.axes if ax not in panels]
    assert len(colourbars) == 1 and "both panels" in colourbars[0].get_ylabel()
    assert colourbars[0].get_ylim() == pytest.approx(norms[0])  # the one colourbar spans the shared range
    # every class name in full on the x axes and (once) on the shared y axis, in a readable size
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
        assert all(t.get_fontsize() >= 8 for t in ax.get_xticklabels())
    assert [t.get_text() for t in panels[0].get_yticklabels()] == NAMES


def _classification_metrics(per_seed: dict[str, list[list[float | None]]]) -> dict:
    """metrics.json's classification part for per-class top-1 of each seed ({name: [seed][class]})."""
    seeds = len(next(iter(per_seed.values())))
    out = {
        "seeds": list(range(seeds)),
        "classification": {},
        "per_seed": [{"classification": {}} for _ in range(seeds)],
    }
    for name, runs in per_seed.items():
        means, sds = [], []
        for k in range(len(runs[0])):
            values = [r[k] for r in runs if r[k] is not None]
            leaf = _leaf(values) if values else {"mean": None, "sd": None}
            means.append(leaf["mean"])
            sds.append(leaf["sd"])
        out["classification"][name] = {"per_class_top1": means, "per_class_top1_sd": sds}
        for s, r in enumerate(runs):
            out["per_seed"][s]["classification"][name] = {"per_class_top1": r}
    return out


def test_per_class_error_bars_stay_inside_0_to_100():
    # mean +- sd of (100, 100, 60) runs past 100 (86.7 + 23.1) and of (0, 0, 40) below 0: the old bars did
    metrics = _classification_metrics(
        {
            "pretrained": [[100.0, 0.0, 50.0], [100.0, 0.0, 50.0], [60.0, 40.0, 50.0]],
            "scratch": [[100.0, 100.0, None], [90.0, 100.0, None], [100.0, 0.0, None]],
        }
    )
    means, lows, highs, points = per_class_spread(metrics, "pretrained")
    assert means == pytest.approx([260 / 3, 40 / 3, 50.0])
    assert lows == [60.0, 0.0, 50.0] and highs == [100.0, 40.0, 50.0]
    assert points[0] == [100.0, 100.0, 60.0]
    _, lows, highs, _ = per_class_spread(metrics, "scratch")
    assert math.isnan(lows[2]) and math.isnan(highs[2])  # a class without held-out clips
    fig = per_class_figure(metrics, NAMES)
    ax = fig.axes[0]
    ys = _errorbar_ys(ax)
    assert ys and min(ys) >= 0.0 and max(ys) <= 100.0
    assert max(ys) == 100.0 and min(ys) == 0.0  # the whiskers reach the seeds' extremes
    dots = [tuple(p) for c in ax.collections if not isinstance(c, LineCollection) for p in c.get_offsets()]
    assert len(dots) == 3 * 3 + 2 * 3  # every seed of every class with held-out clips
    assert "lowest to highest seed" in ax.get_title()


def test_per_class_without_per_seed_values_clips_the_sd():
    metrics = {
        "seeds": [0, 1],
        "classification": {"pretrained": {"per_class_top1": [95.0, 5.0], "per_class_top1_sd": [10.0, 10.0]}},
    }
    _, lows, highs, _ = per_class_spread(metrics, "pretrained")
    assert lows == [85.0, 0.0] and highs == [100.0, 15.0]


def _retrieval_metrics(methods: tuple[str, ...]) -> dict:
    inst = {d: {"r1": _leaf([8.0, 10.0, 12.0]), "r5": _leaf([90.0, 99.0, 100.0]), "r10": _leaf([100.0] * 3)}
            for d in ("v2a", "a2v")}  # fmt: skip
    cls = {d: {"p1": _leaf([95.0, 100.0, 100.0]), "p5": _leaf([80.0] * 3), "p10": _leaf([70.0] * 3),
               "map": _leaf([60.0, 65.0, 70.0])} for d in ("v2a", "a2v")}  # fmt: skip
    retrieval = {m: {"instance": inst, "class": cls} for m in methods}
    if "event_times" in retrieval:
        del retrieval["event_times"]["class"]  # a baseline with instance level only
    return {
        "seeds": [0, 1, 2],
        "retrieval": retrieval,
        "chance": {"instance": {"r1": 0.7, "r5": 3.4, "r10": 6.8}, "class": {"p1": 6.25, "p5": 6.25, "p10": 6.25}},
        "class_only_ceiling": {"instance": {d: {"r1": 11.1, "r5": 55.5, "r10": 100.0} for d in ("v2a", "a2v")}},
    }


def _hlines(ax, label_colour: str) -> list[float]:
    return sorted(
        float(seg[0][1])
        for c in ax.collections
        if isinstance(c, LineCollection) and c.get_linestyle()[0][1] is not None
        for seg in c.get_segments()
        if tuple(c.get_color()[0][:3]) == label_colour and seg[0][1] == seg[1][1]
    )


def test_recalls_figure_draws_each_method_with_chance_and_ceiling():
    from matplotlib.colors import to_rgb

    metrics = _retrieval_metrics(("pretrained", "random_init", "event_times"))
    fig = recalls_figure(metrics, 148)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(",")[1].strip().split(":")[0] for ax in panels] == ["instance level"] * 2 + [
        "class level"
    ] * 2
    inst, cls = panels[0], panels[2]
    assert len(inst.patches) == 3 * 3 and len(cls.patches) == 2 * 4  # methods x metrics (event_times: instance only)
    for ax in panels:
        ys = _errorbar_ys(ax)
        assert min(ys) >= 0.0 and max(ys) <= 100.0
    assert _hlines(inst, to_rgb("black")) == pytest.approx([0.7, 3.4, 6.8])  # chance
    assert _hlines(inst, to_rgb("tab:red")) == pytest.approx([11.1, 55.5, 100.0])  # class-only ceiling
    assert _hlines(cls, to_rgb("black")) == pytest.approx([6.25] * 3)  # chance where metrics hold it (no mAP)
    assert _hlines(cls, to_rgb("tab:red")) == []
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == sorted(
        ["pre-trained", "random init", "event times (solvability check)", "chance", "class-only ceiling"]
    )


def test_recalls_tolerates_missing_methods_and_reads_the_old_schema():
    fig = recalls_figure(_retrieval_metrics(("pretrained",)), 148)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4
    old = {
        "seeds": [0],
        "retrieval": {"pretrained": {"video_to_audio": {"R@1": 10.0, "R@5": 40.0, "R@10": 60.0}}},
        "retrieval_sd": {"pretrained": {"video_to_audio": {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0}}},
        "per_seed": [{"retrieval": {"pretrained": {"video_to_audio": {"R@1": 10.0, "R@5": 40.0, "R@10": 60.0}}}}],
    }
    leaves = retrieval_leaves(old)
    assert leaves["pretrained"]["instance"]["v2a"]["r5"] == {"mean": 40.0, "sd": 0.0, "per_seed": [40.0]}
    fig = recalls_figure(old, 20)
    inst = [ax for ax in fig.axes if ax.get_title()][0]
    assert _hlines(inst, (0.0, 0.0, 0.0)) == pytest.approx([5.0, 25.0, 50.0])  # chance k / N without metrics' own


def test_spread_is_clipped():
    assert spread({"mean": 95.0, "sd": 10.0, "per_seed": [95.0]}) == (95.0, 85.0, 100.0)
    assert spread({"mean": 2.0, "sd": 5.0}) == (2.0, 0.0, 7.0)
    assert spread({"mean": 50.0, "sd": 30.0, "per_seed": [20.0, 50.0, 80.0]}) == (50.0, 20.0, 80.0)


def test_median_clip_is_nearest_both_medians():
    losses = torch.tensor([[0.2, 0.9], [0.5, 0.5], [0.9, 0.1], [0.55, 0.45], [1.5, 1.4]])
    assert median_clip(losses) == 1  # medians 0.55 / 0.5: clip 1 is 0.09 + 0 off, clip 3 0 + 0.1 off


def test_finetune_accuracy_bars_stay_inside_0_to_100(tmp_path):
    import json
    from types import SimpleNamespace

    from cavmae.demo.figures import finetune_figure

    for name in ("pretrained", "scratch"):
        run = tmp_path / f"finetune_{name}"
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 / s}) + "\n" for s in (1, 2)))
    curve = {"curve": [[0, 5.0], [10, 96.0]], "curve_sd": [[0, 8.0], [10, 6.0]]}  # mean +- sd: -3 .. 102
    metrics = {"classification": {"pretrained": curve, "scratch": curve}}
    fig = finetune_figure([SimpleNamespace(runs_dir=tmp_path)] * 2, metrics)
    ys = _errorbar_ys(fig.axes[0])
    assert ys and min(ys) == 0.0 and max(ys) == 100.0
