"""ESC-50 cross-validation (cavmae crossval) end to end on generated ESC-50-layout data: 2 folds, a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cavmae.cli import main
from cavmae.data.prepare import prepare_shards
from cavmae.data.sources import plan_inputs
from cavmae.data.synth_esc50 import make_esc50_dataset
from cavmae.train.crossval import gather_folds, split_by_fold

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "finetune_esc50.yaml")
TINY = [
    "model.embed_dim=64", "model.num_heads=4", "model.modality_depth=1", "model.shared_depth=1",
    "model.audio_length=96", "model.num_mel_bins=64", "model.image_size=32", "model.num_classes=3",
    "data.batch_size=4", "eval.batch_size=4", "data.num_workers=0", "data.freqm=8", "data.timem=16",
    "optim.lr=1e-3", "optim.lr_decay_start=1", "train.epochs=2", "train.mixed_precision='no'",
    "train.progress_bar=false", "train.wandb_mode=disabled",
]  # fmt: skip


@pytest.fixture(scope="module")
def esc50_shards(tmp_path_factory) -> list[str]:
    """12 clips of 1 s, 3 classes, folds 1 and 2 (6 clips each), prepared into 3 shards of 4 (folds mixed)."""
    root = tmp_path_factory.mktemp("esc50")
    ds = make_esc50_dataset(root / "esc50", num_clips=12, num_classes=3, folds=2, duration=1.0, sample_rate=16000)
    manifest = prepare_shards(
        plan_inputs(videos=ds.audio, csv=ds.csv), root / "shards", name="esc", samples_per_shard=4
    )
    return [str(root / "shards" / s["file"]) for s in manifest["shards"]]


def shard_list(urls: list[str]) -> str:
    return "data.train_shards=[" + ",".join(urls) + "]"


def test_split_by_fold_keeps_every_sample_once(esc50_shards, tmp_path):
    folds = split_by_fold(esc50_shards, tmp_path)
    assert sorted(folds) == [1, 2]
    for fold, files in folds.items():
        manifest = json.loads((tmp_path / "folds" / f"fold{fold}-manifest.json").read_text())
        assert manifest["num_samples"] == 6 and manifest["modalities"] == ["audio"]
        assert sum(manifest["label_counts"]) == 6 and len(manifest["label_index"]) == 3
        assert [Path(f).name for f in files] == [s["file"] for s in manifest["shards"]]
    # the same shards again: the finished split is reused as it is
    before = (tmp_path / "folds" / "fold1-000000.tar").stat().st_mtime_ns
    assert split_by_fold(esc50_shards, tmp_path) == folds
    assert (tmp_path / "folds" / "fold1-000000.tar").stat().st_mtime_ns == before
    with pytest.raises(Exception, match="split from other shards"):
        split_by_fold(esc50_shards[:2], tmp_path)


def test_samples_without_fold_are_named(tmp_path, esc50_shards):
    ds = make_esc50_dataset(tmp_path / "e", num_clips=4, num_classes=2, folds=2, duration=0.5, sample_rate=16000)
    manifest = prepare_shards(plan_inputs(videos=ds.audio), tmp_path / "s", name="plain")  # a folder: no folds
    url = str(tmp_path / "s" / manifest["shards"][0]["file"])
    with pytest.raises(ValueError, match="has no integer 'fold' in its json .* --csv meta/esc50.csv"):
        split_by_fold([url], tmp_path / "cv")
    assert not (tmp_path / "cv" / "folds").exists()


def test_crossval_end_to_end_all_folds_and_fold_by_fold(esc50_shards, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert main(["crossval", "--config", RECIPE, shard_list(esc50_shards), f"train.out_dir={whole}", *TINY]) == 0
    table = capsys.readouterr().out
    summary = json.loads((whole / "crossval.json").read_text())
    assert summary["metric"] == "top1" and summary["folds"] == [1, 2] and summary["epochs"] == 2
    curves = summary["per_fold"]
    assert set(curves) == {"1", "2"} and all(len(c) == 2 for c in curves.values())
    # top-1 in percent of a fold's 6 clips
    assert all(v * 6 / 100 == pytest.approx(round(v * 6 / 100)) for c in curves.values() for v in c)
    mean = [(curves["1"][e] + curves["2"][e]) / 2 for e in range(2)]
    assert summary["mean_curve"] == pytest.approx(mean)
    best = max(range(2), key=mean.__getitem__)
    assert summary["best_epoch"] == best + 1 and summary["best_mean"] == pytest.approx(mean[best])
    assert summary["per_fold_at_best_epoch"] == {k: c[best] for k, c in curves.items()}
    for k, c in curves.items():
        own = summary["per_fold_own_best"][k]
        assert own["value"] == max(c) and c[own["epoch"] - 1] == max(c)
    assert "best epoch of the mean curve: " + str(best + 1) in table and "fold 2" in table
    # each fold trained on the other fold only and was evaluated on its own clips
    cfg1 = (whole / "fold1" / "config.yaml").read_text()
    assert "fold2-000000.tar" in cfg1.split("val_shards")[0] and "fold1-000000.tar" in cfg1.split("val_shards")[1]

    # the same folds as separate processes, then gathered: the same numbers
    apart = tmp_path / "apart"
    args = ["--config", RECIPE, shard_list(esc50_shards), f"train.out_dir={apart}", *TINY]
    assert main(["crossval", "--fold", "2", *args]) == 0
    with pytest.raises(ValueError, match=r"folds \[1\] .* not finished"):
        gather_folds(apart)
    assert main(["crossval", "--gather", *args]) == 1  # a fold is missing: a one-line error, exit 1
    assert main(["crossval", "--fold", "1", *args]) == 0
    assert main(["crossval", "--gather", *args]) == 0
    assert json.loads((apart / "crossval.json").read_text())["per_fold"] == curves

    # a rerun finds every fold done and trains nothing
    done = (apart / "fold1" / "result.json").stat().st_mtime_ns
    assert main(["crossval", *args]) == 0
    assert (apart / "fold1" / "result.json").stat().st_mtime_ns == done


def test_val_shards_are_refused(esc50_shards, tmp_path):
    code = main(["crossval", "--config", RECIPE, shard_list(esc50_shards), f"data.val_shards=[{esc50_shards[0]}]",
                 f"train.out_dir={tmp_path}", *TINY])  # fmt: skip
    assert code == 2
