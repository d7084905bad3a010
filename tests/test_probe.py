"""Probes during pre-training (train.probe_every): retrieval both ways and k-NN accuracy of frozen embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_SMALL_INPUTS

import cavmae
from cavmae.config import ConfigError, load_config
from cavmae.eval.metrics import retrieval_metrics
from cavmae.eval.probe import knn_accuracy
from cavmae.train import train

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def test_knn_accuracy_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]])
    labels = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 1]), 2).float()
    # k=1: clip 4's nearest other clip is clip 1 (class 0) -> wrong; all others right
    assert knn_accuracy(emb, labels, 1) == pytest.approx(80.0)
    # k=3 for clip 0: neighbours 1, 4, 3 -> votes class 0: 1, class 1: 2 -> wrong
    assert knn_accuracy(emb, labels, 3) < 100.0


def test_probes_are_logged_every_epoch_and_match_the_model(tmp_path):
    out = tmp_path / "pre"
    cfg = load_config(
        TINY,
        [
            f"train.out_dir={out}",
            *PRETRAIN_SMALL_INPUTS,
            "data.synthetic_size=64",
            "data.synthetic_val_size=48",
            "train.epochs=2",
            "train.probe_every=1",
            "eval.probe_clips=40",
            "eval.knn_k=5",
            "train.val_at_start=false",
            "train.image_every=0",
            "train.progress_bar=false",
        ],
    )
    run = train(cfg)
    records = [json.loads(x) for x in (run / "val_metrics.jsonl").read_text().splitlines()]
    probes = [r for r in records if "probe/v2a_R@1" in r]
    assert [r["epoch"] for r in probes] == [1, 2]
    last = probes[-1]
    assert last["probe/clips"] == 40  # a fixed small set
    for key in ("v2a_R@1", "v2a_R@5", "v2a_R@10", "a2v_R@1", "a2v_R@10", "v2a_median_rank", "knn_a", "knn_v"):
        assert f"probe/{key}" in last

    # the last probe, recomputed from the saved model on the first 40 validation clips
    from cavmae.data.random_batches import synthetic_dataset

    model = cavmae.load_model(run / "model")
    ds = synthetic_dataset(cfg, "val")
    audio, frames = ds.audio[:40], ds.frames[:40]
    with torch.no_grad():
        a, v = model.embed(audio, frames)
    want = retrieval_metrics(a, v)
    assert last["probe/v2a_R@1"] == pytest.approx(want["video_to_audio"]["R@1"])
    assert last["probe/a2v_R@5"] == pytest.approx(want["audio_to_video"]["R@5"])
    assert last["probe/knn_v"] == pytest.approx(knn_accuracy(v, ds.labels[:40], 5))
    # 8 classes (chance 12.5 %): the pre-trained embeddings carry the class
    assert last["probe/knn_av"] > 25.0


def test_probes_need_held_out_clips():
    with pytest.raises(ConfigError, match="probe_shards"):
        load_config(None, ["train.probe_every=1"])
