"""Fine-tuning: initialisation from pre-training helps, public layout in and out, weight averaging, lr groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_SMALL_INPUTS

import cavmae
from cavmae.config import load_config
from cavmae.models.weights import save_official, to_official
from cavmae.train import train
from cavmae.train.finetune import FinetuneTask, layer_id, weight_average

FT = Path(__file__).resolve().parents[1] / "configs" / "tiny_finetune.yaml"


def ft_config(out: Path, *extra: str):
    return load_config(
        FT,
        [
            f"train.out_dir={out}",
            *PRETRAIN_SMALL_INPUTS,
            "data.synthetic_size=64",  # few labelled clips and 12 steps: where pre-training should show
            "data.synthetic_noise=1.0",
            "train.epochs=3",
            "finetune.average_epochs=null",
            "train.progress_bar=false",
            *extra,
        ],
    )


def final_top1(run: Path) -> float:
    return json.loads((run / "val_metrics.jsonl").read_text().splitlines()[-1])["val/top1"]


def test_pretrained_init_beats_random_init(pretrained_tiny, tmp_path):
    pre = final_top1(train(ft_config(tmp_path / "pre", f"train.init={pretrained_tiny / 'model'}")))
    scratch = final_top1(train(ft_config(tmp_path / "scratch")))
    # measured on 2 CPU cores: about 75 vs 40 (8 classes, chance 12.5)
    assert pre >= scratch + 15.0, (pre, scratch)


def test_public_finetuned_layout_loads_into_finetune_and_exports(tmp_path):
    cfg = ft_config(tmp_path / "x").model
    torch.manual_seed(0)
    clf = cavmae.create_model(cfg, kind="classifier")
    public = tmp_path / "public_ft.pth"
    save_official(clf, public)  # module. prefix, mlp_head.0 / mlp_head.1
    keys = torch.load(public, weights_only=True).keys()
    assert "module.mlp_head.0.weight" in keys and "module.mlp_head.1.bias" in keys
    run = train(ft_config(tmp_path / "ft", f"train.init={public}", "train.max_steps=1"))
    model = cavmae.load_model(run / "model")
    assert isinstance(model, cavmae.CAVMAEClassifier)
    assert to_official(model).keys() == keys


def test_weight_average_and_epoch_snapshots(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0])}
    b = {"w": torch.tensor([3.0, 6.0])}
    assert torch.equal(weight_average([a, b])["w"], torch.tensor([2.0, 4.0]))
    run = train(ft_config(tmp_path / "avg", "finetune.average_epochs=[2,3]", "data.synthetic_size=32"))
    snaps = sorted(p.name for p in (run / "epoch_weights").iterdir())
    assert snaps == ["epoch_002.safetensors", "epoch_003.safetensors"]
    from safetensors.torch import load_file

    expected = weight_average([load_file(str(run / "epoch_weights" / s)) for s in snaps])
    final = load_file(str(run / "model" / "model.safetensors"))
    assert all(torch.allclose(final[k], expected[k]) for k in expected)


def test_head_multiplier_and_layer_decay():
    cfg = load_config(FT, ["finetune.head_lr_mult=50", "finetune.layer_decay=0.5"])
    task = FinetuneTask()
    assert task.lr_scale("mlp_head.1.weight", cfg) == 50
    d, s = cfg.model.modality_depth, cfg.model.shared_depth
    assert layer_id("pos_embed_a", d, s) == 0 and layer_id("blocks_a.1.attn.qkv.weight", d, s) == 2
    assert layer_id("blocks_u.0.mlp.fc1.weight", d, s) == d + 1 and layer_id("norm.weight", d, s) == d + s + 1
    assert task.lr_scale("norm.weight", cfg) == 1.0
    assert task.lr_scale("blocks_u.0.attn.qkv.weight", cfg) == 0.5
    assert task.lr_scale("patch_embed_a.proj.weight", cfg) == 0.5 ** (d + s + 1)


@pytest.mark.parametrize("mode", ["audiovisual", "audio"])
def test_frame_logits_run_one_forward_per_frame(mode):
    from cavmae.eval.classify import classify, frame_logits

    cfg = load_config(FT, PRETRAIN_SMALL_INPUTS)
    model = cavmae.create_model(cfg.model, kind="classifier").eval()
    audio = torch.randn(2, 256, 64)
    frames = torch.randn(2, 10, 3, 64, 64)
    with torch.no_grad():
        got = frame_logits(model, {"audio": audio, "frames": frames}, mode)  # [B, F, C]
        want = torch.stack([model(audio, frames[:, i], mode=mode) for i in range(10)], dim=1)
    if mode == "audio":  # the frames are not looked at: one pass
        assert got.shape == (2, 1, cfg.model.num_classes) and torch.allclose(got[:, 0], want[:, 0], atol=1e-6)
    else:
        assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="frame_logits"):
        classify(model, {"audio": audio, "frames": frames}, mode)
