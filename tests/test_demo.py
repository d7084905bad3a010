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
from cavmae.config import load_config, recipe_path
from cavmae.data.clips import colour_name, make_classes
from cavmae.demo.figures import block_similarity, class_pair_similarity, confusable_class_pairs
from cavmae.demo.pipeline import FULL, MARKER, DemoData, DemoError, demo_config, mean_sd, prepare_out_dir, run_demo
from cavmae.demo.report import pm, similarity_caption
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
    assert m["retrieval"] == m["per_seed"][0]["retrieval"] and m["classification"]["pretrained"]["top1_sd"] == 0
    own, same, other = m["similarity_blocks"]["pretrained"]
    assert f"pre-trained {own:.2f} / {same:.2f} / {other:.2f}" in report  # the caption quotes the matrix
    start, end = m["pretraining"]["start"], m["pretraining"]["end"]
    assert end["loss_c"] < start["loss_c"] and end["loss_rec_a"] < start["loss_rec_a"], (start, end)
    chance = m["retrieval_chance_R@5"]
    for direction in ("video_to_audio", "audio_to_video"):
        pre, rnd = m["retrieval"]["pretrained"][direction], m["retrieval"]["random_init"][direction]
        # measured (seed 0, 45 held-out clips, chance 11 %): pre-trained R@5 ~50 / ~35, random init ~13 / ~11
        assert pre["R@5"] >= 1.5 * rnd["R@5"] and pre["R@5"] >= chance + 10, (direction, pre, rnd, chance)
        assert pre["median_rank"] < rnd["median_rank"], direction
    for name in ("pretrained", "scratch"):
        c = m["classification"][name]
        assert c["curve"][0][0] == 0 and c["curve"][-1][0] == c["steps"]
        assert len(c["per_class_top1"]) == len(m["data"]["classes"])
    # the timings add up (each is rounded to 0.1 s): the phases make the total, and with one seed (trained in this
    # process) the training phase is that replica's four phases
    t, seed_t = m["timings_s"], m["per_seed"][0]["timings_s"]
    assert set(t) == {"data", "training", "total_before_report", "gallery", "report", "total"}
    replica = seed_t["pretrain"] + seed_t["retrieval"] + seed_t["finetune_pretrained"] + seed_t["finetune_scratch"]
    assert t["training"] == pytest.approx(replica, abs=0.5), t
    assert t["total_before_report"] == pytest.approx(t["data"] + t["training"], abs=0.2), t
    assert t["total"] == pytest.approx(t["total_before_report"] + t["gallery"] + t["report"], abs=1.0), t
    assert t["total"] <= wall_s + 0.1

    assert f"report: {(out / 'report.md').resolve()}" in printed
    assert "R@5: pre-trained" in printed and "fine-tuned" in printed


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
