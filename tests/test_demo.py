"""``cavmae demo``: the quick demo end to end (report, figures, metrics; pre-training beats random init on
retrieval), the output-folder rules and the backbone plumbing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from cavmae.cli import main
from cavmae.demo.pipeline import FULL, MARKER, DemoData, DemoError, demo_config, prepare_out_dir, run_demo

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
def quick_demo(tmp_path_factory) -> tuple[Path, str]:
    """The quick demo through the command line: (output folder, what it printed)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--out", str(out), "--seed", "0"]) == 0
    return out, printed.getvalue()


@pytest.mark.slow
def test_quick_demo_writes_the_report_and_pretraining_beats_random_init(quick_demo):
    out, printed = quick_demo
    report = (out / "report.md").read_text()
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert f"(figures/{name}.png)" in report, name
        with Image.open(png) as img:
            assert img.format == "PNG" and min(img.size) >= 200, (name, img.size)
    assert set(re.findall(r"\]\((figures/[^)]+)\)", report)) == {f"figures/{n}.png" for n in FIGURES}

    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["heldout_clips"] >= 30 and m["data"]["train_clips"] >= 150
    for run in ("pretrain", "finetune_pretrained", "finetune_scratch"):
        assert (out / "runs" / run / "model" / "model.safetensors").is_file()
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
    assert m["timings_s"]["total"] > 0

    assert f"report: {(out / 'report.md').resolve()}" in printed
    assert "R@5: pre-trained" in printed and "fine-tuned" in printed


@pytest.mark.slow
def test_demo_replaces_an_earlier_demo_but_no_other_folder(quick_demo, tmp_path):
    out, _ = quick_demo
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


def test_backbone_reaches_every_training_config(tmp_path):
    data = DemoData(tmp_path, "train-{000000..000001}.tar", "heldout-000000.tar", 100, 20, ["a", "b"])
    for task in ("pretrain", "finetune"):
        cfg = demo_config(FULL, data, tmp_path / task, seed=3, backbone="mamba", task=task)
        assert cfg.model.backbone == "mamba" and cfg.train.task == task and cfg.train.seed == 3
    pre = demo_config(FULL, data, tmp_path, seed=0, backbone="vit", task="pretrain")
    ft = demo_config(FULL, data, tmp_path, seed=0, backbone="vit", task="finetune", init="x")
    assert pre.data.val_shards == [] and ft.data.val_shards == ["heldout-000000.tar"] and ft.train.init == "x"
    assert ft.train.max_steps == FULL.finetune_steps and ft.train.avg_weights_from == 0


def test_unknown_backbone_fails_before_any_work(tmp_path, caplog):
    with pytest.raises(DemoError, match="unknown backbone 'no-such-block'"):
        run_demo(tmp_path / "out", backbone="no-such-block", quick=True)
    assert not (tmp_path / "out").exists()
    assert main(["demo", "--backbone", "no-such-block", "--out", str(tmp_path / "cli")]) == 2
    assert "unknown backbone" in caplog.text
