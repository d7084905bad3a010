"""scripts/compare_sync.py at a tiny size: the table of finished runs, then the probe pass (``--probe``) that adds
each model's frozen-encoder probe to those runs without redoing them."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_sync.py"


@pytest.mark.slow
def test_probe_pass_adds_each_models_probe_to_the_finished_runs_without_redoing_them(tmp_path, keep_logging):
    spec = importlib.util.spec_from_file_location("compare_sync", SCRIPT)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    work, results = tmp_path / "w", tmp_path / "r"
    args = ["--seeds", "0", "--clips", "40", "--classes", "4", "--pretrain-steps", "2", "--finetune-steps", "2",
            "--backbones", "vit", "--jobs", "1", "--work", str(work), "--results", str(results)]  # fmt: skip
    table, md = results / "compare_sync.json", results / "compare_sync.md"
    threads = torch.get_num_threads()
    assert compare.main(args) == 0
    assert torch.get_num_threads() == threads  # the suite's later in-process runs keep their thread count
    first = json.loads(table.read_text())
    assert [r["model"] for r in first["runs"]] == ["sync", "cavmae"]
    assert not any("probe_top1" in r for r in first["runs"]) and "probe" not in first
    assert "| probe top-1 |" in md.read_text() and "Probe: not measured" in md.read_text()
    pretrained = {m: work / f"{m}_vit" / "runs" / "seed0" / "pretrain" / "model" / "model.safetensors"
                  for m in ("cavmae", "sync")}  # fmt: skip
    stamps = {m: p.stat().st_mtime_ns for m, p in pretrained.items()}

    assert compare.main([*args, "--probe"]) == 0
    second = json.loads(table.read_text())
    # the runs were not redone: their numbers, timings and pre-trained models are those of the first call
    assert [{k: v for k, v in r.items() if not k.startswith("probe_")} for r in second["runs"]] == first["runs"]
    assert second["wall_min"] == first["wall_min"]
    assert {m: p.stat().st_mtime_ns for m, p in pretrained.items()} == stamps
    assert second["probe"]["lr"] == compare.PROBE_LR and second["probe"]["heads"] == compare.PROBE_HEADS

    from cavmae.demo.heldout import HeldOut, evaluate_classifier, load_heldout

    cli = compare.parse_args(args)
    s = compare.settings_for(cli)
    data = compare.prepare_data(work, s)
    for run in second["runs"]:
        model = run["model"]
        cfg = compare.probe_config(work, s, data, model, "vit", 0, compare.PROBE_LR)
        head = {"cavmae": "linear", "sync": "attention"}[model]
        assert cfg.finetune.freeze_base and cfg.finetune.head == head and cfg.optim.lr == compare.PROBE_LR[head]
        before, after = (
            load_file(str(pretrained[model])),
            load_file(str(Path(cfg.train.out_dir) / "model" / "model.safetensors")),
        )
        for name in ("blocks_a.0.attn.qkv.weight", "blocks_v.0.attn.qkv.weight", "patch_embed_a.proj.weight"):
            assert torch.equal(before[name], after[name]), name  # the frozen encoder
        assert ("probe_blocks.0.attn.qkv.weight" in after) == (model == "sync")
        # scored as the demo scores classifiers; the attention probe on every frame with its audio window
        held = load_heldout(cfg, data.heldout_shards)
        if model == "sync":
            assert held.frame_audio is not None and held.frame_audio.shape[1] == 16
            held = HeldOut(held.frame_audio, held.all_frames, held.labels, held.keys)
        assert run["probe_top1"] == round(evaluate_classifier(Path(cfg.train.out_dir), held).top1, 2)
    rows = [r for r in second["rows"] if "finetune_top1" in r]
    assert [r["probe_top1"]["mean"] for r in rows] == [
        next(r["probe_top1"] for r in second["runs"] if r["model"] == row["model"]) for row in rows
    ]
    text = md.read_text()
    assert "(one frame, the clip's audio) at optim.lr 0.003 (the head at 10x: 0.03)" in text
    assert "own CLS) at optim.lr 0.0001 (the head at 10x: 0.001)" in text and re.search(
        r"\d+\.\d min wall for the probes", text
    )
    table_rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| CAV-MAE")]
    assert [cells[2] for cells in table_rows] == ["clip", "diagonal_mean", "clip"]
    # the probe column: filled once per model (its own scoring's row), empty in Sync's second row
    assert [cells[12] for cells in table_rows] == [f"{r['probe_top1']['mean']:.1f}" for r in rows] + [""]

    assert compare.main([*args, "--probe"]) == 0  # nothing left to do: every run keeps its probe
    assert json.loads(table.read_text())["runs"] == second["runs"]


def test_probe_lr_is_one_number_or_one_per_head():
    spec = importlib.util.spec_from_file_location("compare_sync", SCRIPT)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    assert compare.parse_args([]).probe_lr == compare.PROBE_LR
    assert compare.probe_lrs("2e-3") == {"linear": 2e-3, "attention": 2e-3}
    assert compare.probe_lrs("attention=1e-5,linear=1e-2") == {"linear": 1e-2, "attention": 1e-5}
    for bad in ("fast", "linear=1e-3", "linear=1e-3,attention=x", "linear=1,attention=1,mlp=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            compare.probe_lrs(bad)
