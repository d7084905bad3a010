"""`cavmae evaluate` and the paper's end of fine-tuning: the three numbers, the averaged model, ten-frame
ensembles of probabilities; checked against hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_SMALL_INPUTS
from safetensors.torch import load_file
from test_checkpoint import spec_state_dict

import cavmae
from cavmae.cli import main
from cavmae.config import Config, ConfigError, load_config
from cavmae.data.loader import build_loader
from cavmae.eval.evaluate import Predictions, classification_report
from cavmae.train import train
from cavmae.train.finetune import weight_average

FT = Path(__file__).resolve().parents[1] / "configs" / "tiny_finetune.yaml"


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """AP of one class by hand: mean over positives of the precision at their rank (scores without ties)."""
    order = torch.argsort(scores, descending=True)
    hits = positives[order].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def mean_ap(probs: torch.Tensor, labels: torch.Tensor) -> float:
    present = [c for c in range(labels.shape[1]) if labels[:, c].sum() > 0]
    return sum(average_precision(probs[:, c], labels[:, c] > 0.5) for c in present) / len(present)


def small_model_cfg(**kw) -> cavmae.ModelConfig:
    # public files do not record head counts: 64 dims per head (ViT convention), 32 in the decoder
    base = dict(
        embed_dim=64,
        num_heads=1,
        modality_depth=1,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=1,
        audio_length=256,
        image_size=64,
        num_classes=4,
    )
    return cavmae.ModelConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------------------------
# the ensemble arithmetic


@pytest.mark.parametrize("multilabel", [True, False])
def test_ten_frame_report_averages_probabilities_not_logits(multilabel):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(40, 10, 6, generator=g)
    labels = torch.nn.functional.one_hot(torch.arange(40) % 6, 6).float()
    if multilabel:
        labels[::3, 0] = 1.0
    report = classification_report(Predictions(logits, labels, [str(i) for i in range(40)]), multilabel)
    probs = logits.sigmoid() if multilabel else logits.softmax(-1)
    if multilabel:
        assert report["ten_frame"]["mAP"] == pytest.approx(mean_ap(probs.mean(1), labels), abs=1e-5)
        assert report["single_frame"]["mAP"] == pytest.approx(mean_ap(probs[:, 5], labels), abs=1e-5)
        # averaging logits instead would score differently on this data
        assert mean_ap(logits.mean(1).sigmoid(), labels) != pytest.approx(report["ten_frame"]["mAP"], abs=1e-6)
    else:
        want = 100.0 * float((probs.mean(1).argmax(1) == labels.argmax(1)).float().mean())
        assert report["ten_frame"]["top1"] == pytest.approx(want)
        assert report["single_frame"]["top1"] == pytest.approx(
            100.0 * float((probs[:, 5].argmax(1) == labels.argmax(1)).float().mean())
        )


# ---------------------------------------------------------------------------------------------------------------
# the end of fine-tuning


def test_finetune_writes_the_three_numbers_of_the_averaged_ten_frame_model(tmp_path):
    out = tmp_path / "ft"
    cfg = load_config(
        FT,
        [
            f"train.out_dir={out}",
            *PRETRAIN_SMALL_INPUTS,
            "data.synthetic_size=32",
            "data.synthetic_val_size=24",
            "train.epochs=3",
            "finetune.average_epochs=[2,3]",
            "train.progress_bar=false",
        ],
    )
    run = train(cfg)
    final = json.loads((run / "final_metrics.json").read_text())
    s = final["summary"]
    assert set(s) == {"final/last_epoch_top1", "final/averaged_top1", "final/averaged_ten_frame_top1"}
    assert final["averaged_epochs"] == [2, 3]

    # the last epoch's number is the last validation of the run (before averaging)
    last_val = json.loads((run / "val_metrics.jsonl").read_text().splitlines()[-1])
    assert s["final/last_epoch_top1"] == last_val["val/top1"]

    # the final model is the mean of the epoch-2 and epoch-3 weights
    snaps = [load_file(str(run / "epoch_weights" / f"epoch_{e:03d}.safetensors")) for e in (2, 3)]
    final_weights = load_file(str(run / "model" / "model.safetensors"))
    for k in final_weights:
        assert torch.allclose(final_weights[k], (snaps[0][k].double() + snaps[1][k].double()).float() / 2, atol=1e-6)
    assert all(torch.equal(final_weights[k], v) for k, v in weight_average(snaps).items())

    # the reported numbers, recomputed by hand: per-frame softmax, averaged over the ten frames
    from cavmae.data.random_batches import TenFrames, synthetic_dataset

    model = cavmae.load_model(run / "model")
    ds = TenFrames(synthetic_dataset(cfg, "val"))
    audio = torch.stack([ds[i]["audio"] for i in range(len(ds))])
    frames = torch.stack([ds[i]["frames"] for i in range(len(ds))])  # [N, 10, 3, H, W]
    labels = torch.stack([ds[i]["labels"] for i in range(len(ds))]).argmax(1)
    with torch.no_grad():
        probs = torch.stack([model(audio, frames[:, k]).softmax(-1) for k in range(10)], dim=1)  # [N, 10, C]
    assert not torch.allclose(probs[:, 0], probs[:, 5])  # the frames differ, so the ensemble is not trivial
    ten = 100.0 * float((probs.mean(1).argmax(1) == labels).float().mean())
    mid = 100.0 * float((probs[:, 5].argmax(1) == labels).float().mean())
    assert s["final/averaged_ten_frame_top1"] == pytest.approx(ten)
    assert s["final/averaged_top1"] == pytest.approx(mid)


def test_linear_probe_trains_only_the_head(tmp_path):
    cfg = load_config(
        FT,
        [
            f"train.out_dir={tmp_path / 'probe'}",
            *PRETRAIN_SMALL_INPUTS,
            "data.synthetic_size=32",
            "data.synthetic_val_size=0",
            "train.epochs=1",
            "finetune.freeze_base=true",
            "finetune.average_epochs=null",
            "train.progress_bar=false",
        ],
    )
    torch.manual_seed(cfg.train.seed)
    from cavmae.train.finetune import FinetuneTask

    before = FinetuneTask().build_model(cfg).state_dict()
    run = train(cfg)
    after = load_file(str(run / "model" / "model.safetensors"))
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("mlp_head.") for k in changed), sorted(changed)[:5]
    with pytest.raises(ConfigError, match="pre-training was given fine-tuning settings: finetune.freeze_base=True"):
        load_config(None, ["finetune.freeze_base=true"], task="pretrain")


def test_bad_frame_and_balance_settings_are_config_errors():
    with pytest.raises(ConfigError, match="frame_mode"):
        load_config(FT, ["data.frame_mode=all"])
    with pytest.raises(ConfigError, match="balance_mode"):
        load_config(None, ["data.class_balanced=true", "data.balance_mode=weights"])


def test_balance_weights_weight_the_loss_per_clip():
    from cavmae.train.finetune import classification_loss

    logits = torch.randn(4, 3)
    labels = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    w = torch.tensor([2.0, 0.5, 1.0, 0.5])
    for kind in ("bce", "ce"):
        per = torch.stack([classification_loss(logits[i : i + 1], labels[i : i + 1], kind) for i in range(4)])
        assert classification_loss(logits, labels, kind, w) == pytest.approx(float((per * w).mean()), rel=1e-6)
        assert classification_loss(logits, labels, kind) == pytest.approx(float(per.mean()), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# cavmae evaluate


def test_evaluate_public_finetuned_pth_gives_the_hand_computed_map(tiny_shards, tmp_path, capsys):
    cfg = small_model_cfg()
    pth = tmp_path / "public_ft.pth"
    spec = spec_state_dict(cfg, "classifier")
    spec["module.mlp_head.1.weight"] *= 50  # spread the scores
    torch.save(spec, pth)
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(pth), "--shards", tiny_shards.pattern, "--label-kind", "multi"]
    assert main([*args, "--num-workers", "0", "--batch-size", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "mAP" in capsys.readouterr().out

    # by hand: the same file loaded on its own, every frame of every clip, sigmoid, mean over frames
    model = cavmae.load_model(pth)
    loader = build_loader(
        Config(model=cfg).data,
        tiny_shards.pattern,
        audio_length=256,
        image_size=64,
        num_classes=4,
        train=False,
        frame_mode="all",
        batch_size=4,
        num_workers=0,
    )
    probs, labels = [], []
    with torch.no_grad():
        for b in loader:
            f = b["frames"]
            probs.append(torch.stack([model(b["audio"], f[:, k]).sigmoid() for k in range(f.shape[1])], 1))
            labels.append(b["labels"])
    probs, labels = torch.cat(probs), torch.cat(labels)
    assert result["clips"] == len(labels) == 8 and result["frames"] == probs.shape[1] == 10
    assert result["ten_frame"]["mAP"] == pytest.approx(mean_ap(probs.mean(1), labels), abs=1e-5)
    assert result["single_frame"]["mAP"] == pytest.approx(mean_ap(probs[:, 5], labels), abs=1e-5)
    assert not torch.allclose(probs[:, 0], probs[:, 5])  # the frames differ: the ensemble is not the middle frame
    for mode in ("audio", "missing_audio"):  # the other modality modes run on the same file
        assert main([*args, "--num-workers", "0", "--mode", mode, "--out", str(out)]) == 0
        assert json.loads(out.read_text())["mode"] == mode


def test_evaluate_pretrained_model_gives_the_retrieve_numbers(tiny_shards, tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = tmp_path / "pre"
    cavmae.save_pretrained(cavmae.create_model(small_model_cfg()), model_dir)
    common = ["--model", str(model_dir), "--shards", tiny_shards.pattern, "--num-workers", "0"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "ev.json")]) == 0
    assert main(["retrieve", *common, "--out", str(tmp_path / "ret.safetensors")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    ret = json.loads((tmp_path / "ret.json").read_text())
    assert ev["kind"] == "retrieval" and ev["clips"] == ret["clips"] == 8
    for direction in ("video_to_audio", "audio_to_video"):
        assert ev[direction] == ret[direction]
        assert set(ev[direction]) >= {"R@1", "R@5", "R@10", "median_rank"}
