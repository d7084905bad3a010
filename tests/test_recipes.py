"""Every shipped recipe loads, and the recipes of the paper hold the values the public scripts fix.

The table below is read off the public CAV-MAE scripts (egs/audioset/run_cavmae_*.sh, egs/vggsound/run_cavmae_*.sh;
4 GPUs each). Their ``batch_size`` is the global batch: ours is per process, so a recipe's data.batch_size x 4 must
equal it, and contrast_group is the paper's per-GPU share (global batch / 4). ``noise=True`` in the public loader
means uniform noise AND a random time roll of the fbank, so both must be on. Learning-rate steps: the public
MultiStepLR milestones range(lrscheduler_start, 1000, lrscheduler_step) are our lr_decay_start / lr_decay_every.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cavmae.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GPUS = 4  # every public script runs on 4 GPUs (DataParallel)

PRETRAIN = {"data.noise": True, "data.time_roll": True, "model.mask_ratio_a": 0.75, "model.mask_ratio_v": 0.75,
            "model.contrast_weight": 0.01, "model.rec_weight": 1.0, "model.norm_pix_loss": True,
            "optim.lr_decay_start": 10, "optim.lr_decay_every": 5, "optim.lr_decay_factor": 0.5, "data.mixup": 0.0,
            "task": "pretrain"}  # fmt: skip
FINETUNE = {"data.noise": True, "data.time_roll": True, "data.freqm": 48, "data.timem": 192, "data.mixup": 0.5,
            "data.label_smoothing": 0.1, "optim.lr_decay_factor": 0.5, "optim.lr_decay_every": 1,
            "task": "finetune", "finetune.freeze_base": False, "data.fbank_mean": -5.081,
            "data.fbank_std": 4.4849, "model.audio_length": 1024}  # fmt: skip
AS20K = {**FINETUNE, "global_batch": 36, "optim.lr": 5e-5, "finetune.head_lr_mult": 100.0, "train.epochs": 15,
         "optim.lr_decay_start": 5, "finetune.average_epochs": (3, 15), "data.class_balanced": False,
         "finetune.loss": "bce",
         "model.num_classes": 527}  # fmt: skip
AS2M = {**FINETUNE, "global_batch": 48, "optim.lr": 1e-5, "finetune.head_lr_mult": 50.0, "train.epochs": 10,
        "optim.lr_decay_start": 2, "finetune.average_epochs": (1, 10), "data.class_balanced": True,
        "finetune.loss": "bce",
        "model.num_classes": 527}  # fmt: skip
VGG = {**FINETUNE, "global_batch": 48, "optim.lr": 1e-4, "finetune.head_lr_mult": 10.0, "train.epochs": 10,
       "optim.lr_decay_start": 2, "finetune.average_epochs": (3, 10), "data.class_balanced": True,
       "finetune.loss": "ce",
       "model.num_classes": 309}  # fmt: skip

# CAV-MAE Sync: the authors' development runs (design.md section 5; they released no training script)
SYNC = {"model.global_tokens": True, "model.registers": 8, "model.contrastive_heads": False,
        "model.audio_length": 416, "data.audio_window": 416, "data.num_frames": 16, "model.mask_ratio_a": 0.75,
        "model.mask_ratio_v": 0.75, "model.contrast_mask_ratio": 0.75, "model.contrast_weight": 0.1,
        "model.rec_weight": 1.0, "global_batch": 512, "optim.lr": 2e-4, "train.epochs": 25, "optim.name": "adam",
        "optim.betas": (0.95, 0.999), "optim.weight_decay": 5e-7, "optim.schedule": "cosine", "optim.min_lr": 2e-5,
        "data.fbank_mean": -5.081, "data.fbank_std": 4.4849, "train.init_format": "mae",
        "task": "pretrain"}  # fmt: skip

PUBLIC = {
    # recipe: values of its public script
    "pretrain_base": {**PRETRAIN, "global_batch": 48, "optim.lr": 5e-5, "train.epochs": 25, "contrast_group": 12},
    "pretrain_scale_plus": {
        **PRETRAIN,
        "global_batch": 120,
        "optim.lr": 1e-4,
        "train.epochs": 25,
        "contrast_group": 30,
    },  # fmt: skip
    "pretrain_scale_plus_plus": {
        **PRETRAIN,
        "global_batch": 256,
        "optim.lr": 2e-4,
        "train.epochs": 25,
        "contrast_group": 64,
    },  # fmt: skip
    "pretrain_vggsound": {
        **PRETRAIN,
        "global_batch": 120,
        "optim.lr": 1e-4,
        "train.epochs": 25,
        "contrast_group": 30,
    },  # fmt: skip
    "pretrain_vggsound_from_as": {
        **PRETRAIN,
        "global_batch": 120,
        "optim.lr": 5e-5,
        "train.epochs": 10,
        "contrast_group": 30,
        "train.init_format": "cavmae",
    },  # fmt: skip
    "pretrain_sync": SYNC,
    "finetune_as20k": {**AS20K, "finetune.inputs": "audiovisual"},
    "finetune_as20k_audio": {**AS20K, "finetune.inputs": "audio"},
    "finetune_as20k_video": {**AS20K, "finetune.inputs": "video"},
    "finetune_as2m": {**AS2M, "finetune.inputs": "audiovisual"},
    "finetune_vggsound": {**VGG, "finetune.inputs": "audiovisual"},
    # AST's ESC-50 recipe for AudioSet-pretrained models (YuanGongND/ast egs/esc50/run_esc.sh); batch 48 on one GPU
    "finetune_esc50": {
        "task": "finetune",
        "data.batch_size": 48,
        "optim.lr": 1e-5,
        "train.epochs": 25,
        "model.audio_length": 512,
        "model.num_classes": 50,
        "finetune.loss": "ce",
        "finetune.inputs": "audio",
        "data.freqm": 24,
        "data.timem": 96,
        "data.mixup": 0.0,
        "data.noise": False,
        "optim.lr_decay_start": 5,
        "optim.lr_decay_every": 1,
        "optim.lr_decay_factor": 0.85,
        "data.fbank_mean": -6.6268077,
        "data.fbank_std": 5.358466,
        "finetune.head_lr_mult": 1.0,
        "finetune.average_epochs": None,
    },  # fmt: skip
}
# recipes derived from a public one by one documented change (the rest must still match the table)
DERIVED = {
    "finetune_as20k_linear": ("finetune_as20k", {"finetune.freeze_base": True}),
    "finetune_as2m_audio": ("finetune_as2m", {"finetune.inputs": "audio"}),
    "finetune_as2m_video": ("finetune_as2m", {"finetune.inputs": "video"}),
    "finetune_vggsound_audio": ("finetune_vggsound", {"finetune.inputs": "audio"}),
    "finetune_vggsound_video": ("finetune_vggsound", {"finetune.inputs": "video"}),
    "pretrain_mamba_base": ("pretrain_base", {"model.contrast_mask_ratio": 0.0}),
    "pretrain_sync_mamba": ("pretrain_sync", {"model.backbone": "mamba", "model.contrast_mask_ratio": 0.0}),
}
for _name in ("pretrain_base", "pretrain_scale_plus", "pretrain_scale_plus_plus", "pretrain_vggsound",
              "pretrain_vggsound_from_as"):  # fmt: skip
    DERIVED[f"{_name}_global"] = (_name, {"contrast_group": 0, "train.global_contrast": True})


def get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check(cfg, want: dict) -> list[str]:
    bad = []
    for key, value in want.items():
        if key == "global_batch":
            got = cfg.data.batch_size * GPUS
        elif key == "contrast_group":
            got = cfg.train.contrast_group
        else:
            got = get(cfg, key)
        if got != (pytest.approx(value) if isinstance(value, float) else value):
            bad.append(f"{key}: recipe {got!r}, public {value!r}")
    return bad


def test_every_shipped_recipe_loads_and_is_in_the_table():
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    for name in names:
        load_config(CONFIGS / f"{name}.yaml")
    paper = [n for n in names if n.startswith(("pretrain_", "finetune_"))]
    assert sorted(set(PUBLIC) | set(DERIVED)) == paper, "a paper recipe without its row in the table (or vice versa)"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_recipe_holds_the_public_values(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert check(cfg, PUBLIC[name]) == []


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_derived_recipe_differs_only_as_documented(name):
    parent, changes = DERIVED[name]
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert check(cfg, {**PUBLIC[parent], **changes}) == []


def test_noise_always_comes_with_the_time_roll():
    for path in CONFIGS.glob("*.yaml"):
        cfg = load_config(path)
        assert cfg.data.noise == cfg.data.time_roll, path.name


def test_sync_probe_recipe_holds_the_design_values():
    # design.md section 5 (CAV-MAE Sync probe): lr 1e-5, batch 48, 10 epochs, cosine, weights averaged over 2-10,
    # frozen encoder, attention head, 16 frames, window 416
    cfg = load_config(CONFIGS / "probe_sync.yaml")
    want = {"optim.lr": 1e-5, "data.batch_size": 48, "train.epochs": 10, "optim.schedule": "cosine",
            "finetune.average_epochs": (2, 10), "finetune.freeze_base": True, "finetune.head": "attention",
            "data.num_frames": 16, "data.audio_window": 416, "model.global_tokens": True,
            "task": "finetune"}  # fmt: skip
    assert check(cfg, want) == []
