"""``cavmae demo``: the quick demo end to end (report, figures, metrics; pre-training beats random init on
retrieval), the output-folder rules and the backbone plumbing."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from cavmae.cli import main
from cavmae.config import ConfigError, load_config, recipe_path
from cavmae.data.clips import colour_name, make_classes
from cavmae.demo.baselines import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    evaluate_baselines,
    event_embeddings,
    features_linear,
    read_events,
)
from cavmae.demo.figures import block_similarity, class_pair_similarity, confusable_class_pairs
from cavmae.demo.heldout import HeldOut, RetrievalResult, SeedResult, score_retrieval
from cavmae.demo.pipeline import FULL, MARKER, DemoData, DemoError, demo_config, mean_sd, prepare_out_dir, run_demo
from cavmae.demo.report import ceiling_statement, pm, similarity_caption
from cavmae.demo.summary import retrieval_summary
from cavmae.train.figures import _reconstruct

FIGURES = (
    "examples",
    "pretrain_losses",
    "reconstruction",
    "recalls",
    "similarity",
    "examples_v2a",
    "examples_a2v",
    "finetune_curves",
    "per_class",
)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str, float]:
    """The quick demo through the command line: (output folder, what it printed, its wall seconds)."""
    import contextlib
    import io
    import time

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--out", str(out), "--seed", "0"]) == 0
    return out, printed.getvalue(), time.perf_counter() - start


@pytest.mark.slow
def test_quick_demo_writes_the_report_and_pretraining_beats_random_init(quick_demo):
    out, printed, wall_s = quick_demo
    report = (out / "report.md").read_text()
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert f"(figures/{name}.png)" in report, name
        with Image.open(png) as img:
            assert img.format == "PNG" and min(img.size) >= 200, (name, img.size)
    assert set(re.findall(r"\]\((figures/[^)]+)\)", report)) == {f"figures/{n}.png" for n in FIGURES}
    assert "](gallery/index.html)" in report and (out / "gallery" / "index.html").is_file()  # retrieval gallery

    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["heldout_clips"] >= 30 and m["data"]["train_clips"] >= 150
    assert m["seeds"] == [0] and len(m["per_seed"]) == 1  # --quick: one seed
    for run in ("pretrain", "finetune_pretrained", "finetune_scratch"):
        assert (out / "runs" / "seed0" / run / "model" / "model.safetensors").is_file()
    assert m["classification"]["pretrained"]["top1_sd"] == 0
    own, same, other = m["similarity_blocks"]["pretrained"]
    assert f"pre-trained {own:.2f} / {same:.2f} / {other:.2f}" in report  # the caption quotes the matrix
    start, end = m["pretraining"]["start"], m["pretraining"]["end"]
    assert end["loss_c"] < start["loss_c"] and end["loss_rec_a"] < start["loss_rec_a"], (start, end)
    check_retrieval_schema(m)
    n = m["data"]["heldout_clips"]
    assert m["chance"]["instance"]["v2a"] == {
        "r1": round(100 / n, 2),
        "r5": round(500 / n, 2),
        "r10": round(1000 / n, 2),
        "median_rank": (n + 1) / 2,
    }
    assert m["retrieval"]["pretrained"]["instance"]["v2a"]["r1"]["per_seed"] == [
        m["per_seed"][0]["retrieval"]["pretrained"]["instance"]["v2a"]["r1"]
    ]
    assert "R@5 ratio" not in report and "ratio" not in json.dumps(m["retrieval"])
    assert "| class-only ceiling |" in report and "class-only ceiling at the instance level" in report
    for direction in ("v2a", "a2v"):
        pre = m["retrieval"]["pretrained"]["class"][direction]
        rnd = m["retrieval"]["random_init"]["class"][direction]
        chance = m["chance"]["class"][direction]
        # pre-training learns the classes: class-level precision well above chance and above random init
        assert pre["p1"]["mean"] >= chance["p1"] + 10 and pre["p1"]["mean"] > rnd["p1"]["mean"], (direction, pre, rnd)
        pre_i, rnd_i = (
            m["retrieval"]["pretrained"]["instance"][direction],
            m["retrieval"]["random_init"]["instance"][direction],
        )
        assert pre_i["median_rank"]["mean"] < rnd_i["median_rank"]["mean"], direction
    for name in ("pretrained", "scratch"):
        c = m["classification"][name]
        assert c["curve"][0][0] == 0 and c["curve"][-1][0] == c["steps"]
        assert len(c["per_class_top1"]) == len(m["data"]["classes"])
    # the timings add up (each is rounded to 0.1 s): the phases make the total, and with one seed (trained in this
    # process) the training phase is that replica's four phases
    t, seed_t = m["timings_s"], m["per_seed"][0]["timings_s"]
    assert set(t) == {"data", "baselines", "training", "total_before_report", "gallery", "report", "total"}
    replica = seed_t["pretrain"] + seed_t["retrieval"] + seed_t["finetune_pretrained"] + seed_t["finetune_scratch"]
    assert t["training"] == pytest.approx(replica, abs=0.5), t
    assert t["total_before_report"] == pytest.approx(t["data"] + t["baselines"] + t["training"], abs=0.3), t
    assert t["baselines"] < 60, t  # no training: seconds
    assert t["total"] == pytest.approx(t["total_before_report"] + t["gallery"] + t["report"], abs=1.0), t
    assert t["total"] <= wall_s + 0.1

    assert f"report: {(out / 'report.md').resolve()}" in printed
    assert "R@5: pre-trained" in printed and "fine-tuned" in printed


INSTANCE = ("r1", "r5", "r10", "median_rank")
CLASS = ("p1", "p5", "p10", "map")


def check_retrieval_schema(m: dict) -> None:
    """metrics.json's retrieval keys, exactly (the figures read them): every method at both levels in both
    directions, each a mean / sd / per-seed leaf; chance and the class-only ceiling as plain numbers."""
    n_seeds = len(m["seeds"])
    assert set(m["retrieval"]) == {"pretrained", "random_init", "features_linear", "event_times"}
    for method, result in m["retrieval"].items():
        if result is None:  # only a check that could not run, with its reason
            assert method in m["retrieval_unavailable"], method
            continue
        assert set(result) == {"instance", "class"}, method
        for level, keys in (("instance", INSTANCE), ("class", CLASS)):
            assert set(result[level]) == {"v2a", "a2v"}, (method, level)
            for d in ("v2a", "a2v"):
                assert set(result[level][d]) == set(keys), (method, level, d)
                for k in keys:
                    leaf = result[level][d][k]
                    assert set(leaf) == {"mean", "sd", "per_seed"} and len(leaf["per_seed"]) == n_seeds, leaf
    for level, keys in (("instance", INSTANCE), ("class", CLASS)):
        for d in ("v2a", "a2v"):
            assert set(m["chance"][level][d]) == set(keys)
            assert all(isinstance(v, float | int) for v in m["chance"][level][d].values())
    assert set(m["class_only_ceiling"]) == {"instance"}
    for d in ("v2a", "a2v"):
        assert set(m["class_only_ceiling"]["instance"][d]) == set(INSTANCE)
    assert "retrieval_sd" not in m and "retrieval_chance_R@5" not in m
    # the features baseline always runs; event times run when the generator wrote events.json
    assert m["retrieval"]["features_linear"] is not None
    events = (Path(m["data"]["heldout_shards"]).parent.parent / "clips" / "events.json").is_file()
    assert (m["retrieval"]["event_times"] is not None) == events


@pytest.mark.slow
def test_demo_replaces_an_earlier_demo_but_no_other_folder(quick_demo, tmp_path):
    out, _, _ = quick_demo
    assert (out / MARKER).is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not empty"):
        prepare_out_dir(other)
    assert (other / "notes.txt").read_text() == "keep me"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / MARKER).write_text("")
    (earlier / "old.txt").write_text("")
    prepare_out_dir(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == [MARKER]


DEMO_MODEL = ("audio_length", "num_mel_bins", "image_size", "contrast_weight", "num_classes")  # the demo's own


def test_every_demo_run_is_a_shipped_recipe_with_the_demos_settings(tmp_path):
    data = DemoData(tmp_path, "train-{000000..000001}.tar", "heldout-000000.tar", 100, 20, ["a", "b"])
    mamba, finetune = load_config(recipe_path("tiny_mamba")), load_config(recipe_path("tiny_finetune"))
    for task in ("pretrain", "finetune"):
        cfg = demo_config(FULL, data, tmp_path / task, seed=3, backbone="mamba", task=task)
        assert cfg.task == task and cfg.train.seed == 3 and cfg.model.backbone == "mamba"
        own = {k: getattr(cfg.model, k) for k in DEMO_MODEL}
        assert cfg.model == dataclasses.replace(mamba.model, **own), task  # the Mamba recipe's model, both tasks
        assert cfg.optim == (mamba if task == "pretrain" else finetune).optim, task
        bare = demo_config(FULL, data, tmp_path / task, seed=3, backbone="mamba", task=task, recipe=False)
        assert bare.model == dataclasses.replace(load_config(recipe_path("tiny")).model, backbone="mamba", **own)
    pre = demo_config(FULL, data, tmp_path, seed=0, backbone="vit", task="pretrain")
    assert pre.model.contrast_mask_ratio == pre.model.mask_ratio_a and pre.finetune is None  # the ViT: CAV-MAE's recipe
    ft = demo_config(FULL, data, tmp_path, seed=0, backbone="vit", task="finetune", init="x")
    assert pre.data.val_shards == [] and ft.data.val_shards == ["heldout-000000.tar"] and ft.train.init == "x"
    assert ft.train.max_steps == FULL.finetune_steps and ft.finetune.average_epochs is None
    assert ft.finetune == dataclasses.replace(finetune.finetune, average_epochs=None)


def test_an_edited_recipe_reaches_the_demo(tmp_path, monkeypatch):
    """The demo writes no recipe again: what configs/tiny*.yaml say is what it runs."""
    import shutil

    from cavmae.demo import settings

    edited = tmp_path / "configs"
    edited.mkdir()
    for name in ("tiny", "tiny_mamba", "tiny_finetune"):
        shutil.copy(recipe_path(name), edited / f"{name}.yaml")
    with (edited / "tiny.yaml").open("a") as f:
        f.write("model:\n  decoder_depth: 1\n")
    (edited / "tiny_mamba.yaml").write_text((edited / "tiny_mamba.yaml").read_text().replace("expand: 1", "expand: 3"))
    (edited / "tiny_finetune.yaml").write_text(
        (edited / "tiny_finetune.yaml").read_text().replace("head_lr_mult: 10.0", "head_lr_mult: 4.0")
    )
    monkeypatch.setattr(settings, "recipe_path", lambda name: edited / f"{name}.yaml")
    data = DemoData(tmp_path, "train.tar", "heldout.tar", 10, 2, ["a", "b"])
    pre = demo_config(FULL, data, tmp_path, seed=0, backbone="mamba", task="pretrain")
    ft = demo_config(FULL, data, tmp_path, seed=0, backbone="mamba", task="finetune")
    assert pre.model.decoder_depth == ft.model.decoder_depth == 1
    assert pre.model.mamba.expand == ft.model.mamba.expand == 3 and ft.finetune.head_lr_mult == 4.0


def test_unknown_backbone_fails_before_any_work(tmp_path, caplog):
    with pytest.raises(DemoError, match="unknown backbone 'no-such-block'"):
        run_demo(tmp_path / "out", backbone="no-such-block", quick=True)
    assert not (tmp_path / "out").exists()
    assert main(["demo", "--backbone", "no-such-block", "--out", str(tmp_path / "cli")]) == 2
    assert "unknown backbone" in caplog.text


def test_class_names_name_the_colours_drawn():
    # hues that equal-width bins misnamed (the drawn colour, then the old name): 222 deg was "cyan", 97 "yellow",
    # 287 "blue", 32 "red"
    assert colour_name((25, 92, 255)) == "blue" and colour_name((112, 255, 25)) == "lime"
    assert colour_name((206, 25, 255)) == "purple" and colour_name((255, 149, 25)) == "orange"
    primaries = {(255, 0, 0): "red", (0, 255, 0): "green", (0, 0, 255): "blue", (255, 255, 0): "yellow"}
    primaries |= {(0, 255, 255): "cyan", (255, 0, 255): "magenta", (255, 128, 0): "orange"}
    assert {rgb: colour_name(rgb) for rgb in primaries} == primaries
    for cls in make_classes(16):
        assert cls.name.startswith(colour_name(cls.colour) + " "), cls


def test_reconstruction_shows_only_the_masked_patches():
    target = torch.arange(12.0).view(4, 3)
    pred = target + 1.0
    mask = torch.tensor([1, 0, 1, 0])
    visible, predicted, error = _reconstruct(target, pred, mask, norm_pix=False)
    assert torch.isnan(predicted[1]).all() and torch.isnan(predicted[3]).all()  # visible patches: not shown
    assert torch.equal(predicted[0], pred[0]) and torch.equal(error[2], torch.ones(3))
    assert torch.isnan(visible[0]).all() and torch.equal(visible[1], target[1])


def test_seed_statistics_and_similarity_blocks():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_sd([4.0]) == (4.0, 0.0)
    assert pm(36.5, 2.04, 3) == "36.5 ± 2.0" and pm(36.5, 0.0, 1) == "36.5"
    labels = torch.tensor([0, 0, 1])
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.5, 0.7, 0.2], [0.1, 0.2, 0.8]])
    own, same, other = block_similarity(sim, labels)
    assert (round(own, 3), round(same, 3), round(other, 3)) == (0.8, 0.5, 0.15)


def test_confusable_class_pairs_name_bright_off_diagonal_blocks():
    # classes 0 and 1 look alike (0.6 across), class 2 stands apart; own pairs (diagonal) are ignored
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    sim = torch.full((6, 6), 0.1)
    sim[:4, :4] = 0.6
    sim[4:, 4:] = 0.7
    sim.fill_diagonal_(0.95)
    blocks = class_pair_similarity(sim, labels)
    assert torch.allclose(blocks, torch.tensor([[0.6, 0.6, 0.1], [0.6, 0.6, 0.1], [0.1, 0.1, 0.7]]))
    pairs = confusable_class_pairs(sim, labels, ["red", "orange", "blue"], top=2)
    assert pairs["same_class_block"] == round((0.6 + 0.6 + 0.7) / 3, 3)
    assert pairs["off_diagonal_blocks"] == 6 and pairs["off_diagonal_at_least_same_class"] == 0
    assert [p[:2] for p in pairs["brightest_off_diagonal"]] == [["red", "orange"], ["orange", "red"]]
    caption = similarity_caption({"pretrained": [0.95, 0.63, 0.2], "random_init": [0.1, 0.1, 0.1]}, pairs)
    assert "red / orange 0.60" in caption and "0 of the 6 pairs" in caption


def _linked_clips(n: int, seed: int) -> HeldOut:
    """n clips whose sound and picture share a random latent z [n, 16]: the frame is a 4 x 4 grid of grey cells of
    brightness z, the fbank's loudness over time a fixed linear function of z (plus a little noise), so the
    hand-made statistics of the two sides are linearly related."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, 16, generator=g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    grey = z.view(n, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3).expand(n, 3, 16, 16)
    frames = (grey - mean) / std
    mix = torch.randn(16, 32, generator=torch.Generator().manual_seed(99))
    audio = (z @ mix).unsqueeze(2).expand(n, 32, 8) + 0.01 * torch.randn(n, 32, 8, generator=g)
    return HeldOut(audio.contiguous(), frames.contiguous(), torch.arange(n) % 4, [f"clip{i}" for i in range(n)])


def test_feature_baseline_matches_linked_pairs_and_not_shuffled_ones(tmp_path):
    train, held = _linked_clips(200, 0), _linked_clips(40, 1)
    results, unavailable = evaluate_baselines(held, train, tmp_path, duration=2.6)
    inst = results["features_linear"]["instance"]
    assert inst["v2a"]["r1"] == 100.0 and inst["a2v"]["r1"] == 100.0 and inst["v2a"]["median_rank"] == 1.0
    # no events.json in tmp_path: the event-times check is reported unavailable, not faked
    assert results["event_times"] is None and "events.json" in unavailable["event_times"]
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    shuffled = HeldOut(held.audio[perm], held.frames, held.labels, held.keys)
    a, v = features_linear(train.audio, train.frames, shuffled.audio, shuffled.frames)
    s = score_retrieval(a, v, held.labels)["instance"]
    # chance R@5 is 12.5 % of 40 clips and median rank 20.5: a shuffled pair is matched like a random one
    assert s["v2a"]["r5"] <= 30.0 and s["a2v"]["r5"] <= 30.0 and s["v2a"]["median_rank"] >= 10, s


def _event(start: float, end: float, colour: str, shape: str = "circle", size: str = "small") -> dict:
    return {"start": start, "end": end, "colour": colour, "shape": shape, "size": size, "x": 0.5, "y": 0.5}


def test_event_times_check_matches_the_event_at_the_frames_time(tmp_path):
    # four clips of one class: 0 and 1 differ only in the event at the middle (1.3 s); 2 holds clip 0's red event,
    # but before the middle; 3 plays clip 0's events in the same places and differs by its size
    events = {
        "c0": [_event(0.25, 0.75, "blue"), _event(1.0, 1.5, "red")],
        "c1": [_event(0.25, 0.75, "blue"), _event(1.0, 1.5, "green")],
        "c2": [_event(0.0, 0.5, "red"), _event(1.0, 1.5, "blue")],
        "c3": [_event(0.25, 0.75, "blue"), _event(1.0, 1.5, "red", size="large")],
    }
    (tmp_path / "events.json").write_text(json.dumps(events))
    keys, labels = list(events), torch.zeros(4, dtype=torch.long)
    a, v = event_embeddings(keys, labels, read_events(tmp_path), duration=2.6, frame_time=1.3)
    scores = v @ a.t()  # [video, audio]: class (3) + attributes agreeing at 1.3 s
    # own: 3 + 3; c1 and c2 (green / blue circle, small) share shape and size, c3 (red circle, large) colour and shape
    assert scores[0].tolist() == pytest.approx([6.0, 5.0, 5.0, 5.0])
    s = score_retrieval(a, v, labels)["instance"]
    assert s["v2a"]["r1"] == 100.0 and s["a2v"]["r1"] == 100.0
    held = HeldOut(torch.zeros(4, 32, 8), torch.zeros(4, 3, 16, 16), labels, keys)
    results, unavailable = evaluate_baselines(held, _linked_clips(50, 0), tmp_path, duration=2.6)
    assert unavailable == {} and results["event_times"]["instance"]["v2a"]["r1"] == 100.0
    with pytest.raises(ValueError, match="no events for 1 held-out clips"):
        event_embeddings([*keys, "c9"], torch.zeros(5, dtype=torch.long), events, duration=2.6, frame_time=1.3)


def _leaves(values: dict[str, list[float]]) -> dict:
    return {k: {"mean": mean_sd(v)[0], "sd": mean_sd(v)[1], "per_seed": v} for k, v in values.items()}


def _statement_metrics(pre_r1: list[float]) -> dict:
    inst = _leaves({"r1": pre_r1, "r5": [x * 3 for x in pre_r1], "r10": [90.0] * 3, "median_rank": [3.0] * 3})
    cls = _leaves({"p1": [60.0] * 3, "p5": [50.0] * 3, "p10": [40.0] * 3, "map": [55.0] * 3})
    level = {"r1": 20.0, "r5": 60.0, "r10": 100.0, "median_rank": 3.0}
    return {
        "seeds": [0, 1, 2],
        "retrieval": {"pretrained": {"instance": {"v2a": inst, "a2v": inst}, "class": {"v2a": cls, "a2v": cls}}},
        "class_only_ceiling": {"instance": {"v2a": level, "a2v": level}},
        "chance": {"class": {"v2a": {"p1": 12.0}, "a2v": {"p1": 12.0}}},
    }


def test_ceiling_statement_follows_the_numbers():
    # ceiling R@1 20 / R@5 60: the pre-trained R@1 (and R@5 = 3 x R@1) above it by more than one sd, below it, level
    above = ceiling_statement(_statement_metrics([25.0, 26.0, 27.0]))
    assert "**Pre-training beats the class-only ceiling" in above and "R@1 26.0 ± 1.0 vs 20.0" in above
    below = ceiling_statement(_statement_metrics([10.0, 11.0, 12.0]))
    assert "does not beat the class-only ceiling" in below and "60 %" in below and "12 %" in below
    assert "is level with" in ceiling_statement(_statement_metrics([15.0, 21.0, 27.0]))


def test_retrieval_summary_lists_every_seed_and_repeats_seedless_baselines():
    def scores(x: float) -> dict:
        return {"instance": {"v2a": {"r1": x}}, "class": {"v2a": {"p1": 2 * x}}}

    seeds = [
        SeedResult(s, Path("."), {"pretrained": RetrievalResult(scores(x), torch.zeros(1, 1))}, {}, {})
        for s, x in ((0, 10.0), (1, 20.0))
    ]
    r = retrieval_summary(seeds, {"features_linear": scores(5.0), "event_times": None})
    assert r["pretrained"]["instance"]["v2a"]["r1"] == {"mean": 15.0, "sd": 7.07, "per_seed": [10.0, 20.0]}
    assert r["features_linear"]["class"]["v2a"]["p1"] == {"mean": 10.0, "sd": 0.0, "per_seed": [10.0, 10.0]}
    assert r["event_times"] is None


# ---------------------------------------------------------------------------------------------------------------
# --recipe sync


def test_a_short_clips_windows_are_centred_on_its_frames_times():
    """data.clip_fbank_frames: the windows of a 2.6 s clip (260 fbank frames, 16 frames, L = 112) are placed by
    its own length, not the public loader's 1024 (which puts frame 8's window at 456, past the clip's end)."""
    from cavmae.data.samples import Decoded, LoaderSettings, audio_starts

    s = LoaderSettings(
        audio_length=112, num_mel_bins=64, image_size=64, num_classes=2, train=False, frame_mode="all", seed=0,
        batch_size=1, drop_last=False, shuffle_buffer=0, resampled=False, num_frames=16, audio_window=112,
        clip_fbank_frames=260,
    )  # fmt: skip
    item = Decoded("k", torch.zeros(41600), torch.zeros(0), [0, 8, 15], [0], 1.0, None, None)
    # k=0: pos 0 -> 0; k=8: pos 130 -> 130 - 56 = 74; k=15: pos round(243.75) = 244 -> 188, moved back to 260 - 112
    assert audio_starts(item, s) == [0, 74, 148]
    data = DemoData(Path("."), "train.tar", "heldout.tar", 10, 2, ["a", "b"], num_frames=16)
    cfg = demo_config(FULL, data, Path("run"), seed=0, backbone="vit", task="pretrain", method="sync")
    assert cfg.data.clip_fbank_frames == 260 and cfg.data.audio_window == cfg.model.audio_length == 112
    from cavmae.config import validate

    cfg.data.clip_fbank_frames = 100
    with pytest.raises(ConfigError, match="data.clip_fbank_frames"):
        validate(cfg)


def test_the_sync_recipe_is_the_cavmae_run_plus_tiny_syncs_model_options(tmp_path):
    data = DemoData(tmp_path, "train.tar", "heldout.tar", 10, 2, ["a", "b"], num_frames=16)
    tiny_sync = load_config(recipe_path("tiny_sync")).model
    for backbone in ("vit", "mamba"):
        for task in ("pretrain", "finetune"):
            cav = demo_config(FULL, data, tmp_path, seed=1, backbone=backbone, task=task)
            sync = demo_config(FULL, data, tmp_path, seed=1, backbone=backbone, task=task, method="sync")
            options = {k: getattr(tiny_sync, k) for k in ("global_tokens", "registers", "contrastive_heads")}
            assert options["global_tokens"] and options["registers"] > 0
            # equal size and contrastive weight; only the Sync options and the audio input (the window) differ
            assert sync.model == dataclasses.replace(cav.model, audio_length=FULL.sync_window, **options)
            assert sync.data.num_frames == cav.data.num_frames == 16 and sync.data.audio_window == FULL.sync_window
            assert cav.data.audio_window == 0 and sync.optim == cav.optim and sync.train == cav.train
    with pytest.raises(ConfigError, match="--recipe must be one of cavmae, sync"):
        demo_config(FULL, data, tmp_path, seed=1, backbone="vit", task="pretrain", method="syncc")


def test_an_unknown_recipe_fails_before_any_work(tmp_path, caplog):
    assert main(["demo", "--recipe", "sync2", "--out", str(tmp_path / "cli")]) == 2
    assert "--recipe must be one of cavmae, sync, got 'sync2'" in caplog.text and not (tmp_path / "cli").exists()


def test_sync_retrieval_scores_every_frame_with_its_window_and_the_middle_pair(tmp_path):
    from cavmae import create_model
    from cavmae.demo.heldout import evaluate_frame_retrieval, evaluate_retrieval
    from cavmae.eval.scoring import clip_scores, retrieval_metrics_scored

    s = dataclasses.replace(FULL, frame_size=32, num_mel_bins=32, sync_frames=4, sync_window=32)
    data = DemoData(tmp_path, "train.tar", "heldout.tar", 10, 6, ["a", "b", "c"], num_frames=4)
    cfg = demo_config(s, data, tmp_path, seed=0, backbone="vit", task="pretrain", method="sync")
    torch.manual_seed(0)
    model = create_model(cfg.model).eval()
    n, k = 6, 4
    frame_audio, all_frames = torch.randn(n, k, 32, 32), torch.randn(n, k, 3, 32, 32)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    held = HeldOut(frame_audio[:, 2], all_frames[:, 2], labels, [f"c{i}" for i in range(n)], frame_audio, all_frames)
    scored = {"clip": evaluate_retrieval(model, held, "a"), "diagonal_mean": evaluate_frame_retrieval(model, held, "b")}
    with pytest.raises(ValueError, match="audio window"):  # a CAV-MAE held-out set has no per-frame audio
        evaluate_frame_retrieval(model, HeldOut(held.audio, held.frames, labels, held.keys), "c")
    per_frame = scored["diagonal_mean"].embeddings
    assert per_frame.audio.shape == (n, k, cfg.model.embed_dim) and per_frame.scoring == "diagonal_mean"
    a, v = model.embed(frame_audio[:, 1], all_frames[:, 1])  # frame 1 with its own window
    torch.testing.assert_close(per_frame.audio[:, 1], torch.nn.functional.normalize(a, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_frame.video[:, 1], torch.nn.functional.normalize(v, dim=-1), atol=1e-5, rtol=0)
    want = clip_scores(per_frame.audio, per_frame.video, "diagonal_mean")
    torch.testing.assert_close(scored["diagonal_mean"].similarity, want, atol=1e-5, rtol=0)
    ranks = retrieval_metrics_scored(per_frame.audio, per_frame.video, "diagonal_mean")
    assert scored["diagonal_mean"].metrics["instance"]["v2a"]["r1"] == pytest.approx(ranks["video_to_audio"]["R@1"])
    assert scored["diagonal_mean"].metrics["instance"]["a2v"]["r5"] == pytest.approx(ranks["audio_to_video"]["R@5"])
    middle = scored["clip"].embeddings  # one pair per clip: the middle frame and its window
    a, _ = model.embed(frame_audio[:, 2], all_frames[:, 2])
    torch.testing.assert_close(middle.audio, torch.nn.functional.normalize(a, dim=-1), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_demo_recipe_sync_runs_end_to_end_at_a_tiny_size(tmp_path):
    """--recipe sync through the whole pipeline (the quick demo's path, at a few steps): 16-frame shards, per-frame
    and per-clip retrieval of both models in metrics.json and the report, fine-tuning of the Sync model."""
    s = dataclasses.replace(
        FULL, num_clips=40, num_classes=4, pretrain_steps=3, pretrain_batch=8, finetune_steps=2, finetune_batch=8,
        finetune_eval_every=2, sync_frames=16,
    )  # fmt: skip
    result = run_demo(tmp_path / "out", seeds=1, settings=s, recipe="sync")
    m = result.metrics
    assert m["recipe"] == "sync" and m["scoring"] == "diagonal_mean"
    assert {"pretrained", "pretrained_clip", "random_init", "random_init_clip"} <= set(m["retrieval"])
    assert 0 <= m["retrieval"]["pretrained_clip"]["class"]["v2a"]["map"]["mean"] <= 100
    manifest = json.loads(next((tmp_path / "out" / "shards").glob("heldout-manifest.json")).read_text())
    assert manifest["options"]["num_frames"] == 16
    report = result.report.read_text()
    assert "--recipe sync" in report and "one pair per clip (middle frame and its window)" in report
    assert "per frame (diagonal_mean" in report
    assert 0 <= m["classification"]["pretrained"]["top1"] <= 100
