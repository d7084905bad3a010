"""The bidirectional Mamba backbone: its scan directions, init, no-decay marks, and the jobs with backbone=mamba."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

import cavmae
from cavmae.config import MambaConfig, load_config
from cavmae.models.mamba import BiMambaMixer
from cavmae.train.optim import param_groups

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_backward_direction_is_the_forward_scan_of_the_reversed_sequence():
    """mixer(x) with (fwd, bwd) parameters == flip(mixer(flip(x))) with the two directions' parameters swapped."""
    torch.manual_seed(0)
    mixer = BiMambaMixer(16, MambaConfig(d_state=4))
    mixer.reset_backbone_parameters()
    swapped = BiMambaMixer(16, MambaConfig(d_state=4))
    swapped.load_state_dict(mixer.state_dict())
    swapped.fwd, swapped.bwd = swapped.bwd, swapped.fwd
    x = torch.randn(2, 13, 16)
    assert torch.allclose(mixer(x), swapped(x.flip(1)).flip(1), atol=1e-5)
    # and the two directions really differ: a token sees context from both sides
    y = mixer(x)
    x2 = x.clone()
    x2[:, 0] += 1.0
    x3 = x.clone()
    x3[:, -1] += 1.0
    assert not torch.allclose(mixer(x2)[:, -1], y[:, -1]) and not torch.allclose(mixer(x3)[:, 0], y[:, 0])


def test_mixer_matches_the_sequential_reference():
    torch.manual_seed(1)
    fast = BiMambaMixer(12, MambaConfig(d_state=4, scan_impl="torch"))
    fast.reset_backbone_parameters()
    ref = BiMambaMixer(12, MambaConfig(d_state=4, scan_impl="reference"))
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 37, 12)
    assert torch.allclose(fast(x), ref(x), atol=1e-5)


def test_init_and_no_weight_decay_marks():
    cfg = load_config(CONFIGS / "tiny_mamba.yaml").model
    model = cavmae.create_model(cfg)
    mixer = model.blocks_a[0].mixer
    dt = F.softplus(mixer.fwd.dt_proj.bias)
    assert dt.min() >= 0.001 - 1e-6 and dt.max() <= 0.1 + 1e-6
    assert torch.allclose(-torch.exp(mixer.bwd.A_log[0]), -torch.arange(1.0, cfg.mamba.d_state + 1))
    assert torch.all(mixer.fwd.D == 1)
    groups = param_groups(model, weight_decay=0.05, lr=1e-3)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if name.endswith(("A_log", ".D", "dt_proj.bias")):
            assert id(p) in no_decay, name
    assert id(mixer.in_proj.weight) not in no_decay


def test_mamba_recipes_pool_the_contrastive_embeddings_from_the_unmasked_streams():
    for name in ("tiny_mamba", "pretrain_mamba_base"):
        cfg = load_config(CONFIGS / f"{name}.yaml").model
        assert cfg.contrast_mask_ratio == 0 and cfg.mamba.expand == 1, name
    for name in ("tiny", "pretrain_base"):  # the ViT recipes stay CAV-MAE's
        assert load_config(CONFIGS / f"{name}.yaml").model.contrast_mask_ratio == 0.75, name


def test_mamba_base_recipe_is_close_to_vit_base():
    mamba = sum(
        p.numel() for p in cavmae.create_model(load_config(CONFIGS / "pretrain_mamba_base.yaml").model).parameters()
    )
    assert 0.9 < mamba / 191_036_160 < 1.1


def test_save_load_roundtrip(tmp_path):
    cfg = load_config(CONFIGS / "tiny_mamba.yaml").model
    model = cavmae.create_model(cfg).eval()
    cavmae.save_pretrained(model, tmp_path / "m")
    loaded = cavmae.load_model(tmp_path / "m")
    audio, frames = torch.randn(2, 512, 128), torch.randn(2, 3, 112, 112)
    for x, y in zip(model.embed(audio, frames), loaded.embed(audio, frames)):
        assert torch.equal(x, y)


def test_pretrain_finetune_retrieve_with_mamba(tiny_shards, tmp_path, capsys):
    from cavmae.cli import main

    common = [
        "model.backbone=mamba",
        "train.max_steps=2",
        "train.progress_bar=false",
        "train.val_at_start=false",
        "data.batch_size=4",
        "data.synthetic_size=16",
        "data.synthetic_val_size=8",
        "train.image_every=0",
    ]
    assert main(["pretrain", "--config", str(CONFIGS / "tiny.yaml"), f"train.out_dir={tmp_path / 'pre'}", *common]) == 0
    assert (
        main(
            [
                "finetune",
                "--config",
                str(CONFIGS / "tiny_finetune.yaml"),
                f"train.out_dir={tmp_path / 'ft'}",
                f"train.init={tmp_path / 'pre' / 'model'}",
                *common,
            ]
        )
        == 0
    )
    ft = cavmae.load_model(tmp_path / "ft" / "model")
    assert ft.cfg.backbone == "mamba" and isinstance(ft, cavmae.CAVMAEClassifier)
    capsys.readouterr()
    assert (
        main(
            [
                "retrieve",
                "--model",
                str(tmp_path / "pre" / "model"),
                "--shards",
                tiny_shards.pattern,
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["clips"] == len(tiny_shards.keys)
