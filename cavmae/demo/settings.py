"""The demo's sizes (:data:`FULL` is ``cavmae demo``, :data:`QUICK` is ``cavmae demo --quick``) and the config of
each of its training runs: a shipped tiny recipe with the demo's own settings (:func:`demo_config`). Nothing here
imports torch: the command checks the configs before loading it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cavmae.config import Config, ConfigError, load_config, merge, recipe_path, validate

if TYPE_CHECKING:
    from cavmae.demo.heldout import DemoData


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run. :data:`FULL` is ``cavmae demo``, :data:`QUICK` is ``cavmae demo --quick`` (CI)."""

    num_clips: int  # synthetic clips; ~20 % land in the held-out split (the generator's split column)
    num_classes: int
    duration: float  # seconds per clip: 2.6 s covers the 256 fbank frames (2.575 s) of the model's audio input
    frame_size: int  # px: frames are rendered, stored and fed at this size
    object_size: tuple[float, float]  # object radius range as a fraction of the frame (generator default 0.08-0.16)
    audio_length: int  # fbank frames (10 ms each)
    num_mel_bins: int
    pretrain_steps: int
    pretrain_batch: int
    contrast_weight: float  # configs/tiny.yaml's 0.1 is too weak to align the modalities in ~1000 steps
    finetune_steps: int
    finetune_batch: int
    finetune_eval_every: int  # held-out accuracy every N fine-tuning steps (the curves)
    # CAV-MAE Sync (--recipe sync): frames per clip in the shards (Sync's 16) and the audio window of each frame
    # (model.audio_length = data.audio_window), in fbank frames: about the share of the clip that Sync's 416 frames
    # are of its padded 10.24 s (41 %), rounded to a multiple of the 16-frame patch: 112 of the 2.6 s clip's 260
    sync_frames: int = 16
    sync_window: int = 112
    samples_per_shard: int = 64
    workers: int = 2  # processes that render the clips and decode them into shards
    # torch threads while the demo runs. One: on a machine whose cores are busy with other work, two OpenMP threads
    # per op made a tiny-model step many times slower, while one thread costs little on an idle machine (measured:
    # scripts/results/README.md); a fixed count also keeps results identical across machines.
    threads: int = 1


FULL = DemoSettings(
    num_clips=800,
    num_classes=16,
    duration=2.6,
    frame_size=64,
    object_size=(0.2, 0.35),
    audio_length=256,
    num_mel_bins=64,
    pretrain_steps=1200,
    pretrain_batch=32,
    contrast_weight=1.0,
    finetune_steps=60,
    finetune_batch=16,
    finetune_eval_every=10,
)

QUICK = dataclasses.replace(FULL, num_clips=300, num_classes=8, pretrain_steps=250, finetune_steps=30)


def model_recipe(backbone: str, recipe: bool = True) -> tuple[Path, list[str]]:
    """The shipped recipe that pre-trains ``backbone`` at the tiny size, with the override that names the block:
    ``tiny_<backbone>.yaml`` where one is shipped (tiny_mamba: the Mamba recipe), else tiny.yaml (the ViT's, and
    the starting point of a block of one's own; ``recipe=False`` always, as the backbone ablation starts)."""
    if recipe and backbone != "vit":
        try:
            return recipe_path(f"tiny_{backbone}"), []
        except ConfigError:
            pass
    return recipe_path("tiny"), [f"model.backbone={backbone}"]


RECIPES = ("cavmae", "sync")  # cavmae demo --recipe: what pre-training trains
SYNC_MODEL_OPTIONS = ("global_tokens", "registers", "contrastive_heads")  # taken from configs/tiny_sync.yaml


def check_recipes(backbone: str, recipe: str = "cavmae") -> None:
    """Load the shipped recipes the demo's runs start from (a missing or broken one is a ConfigError naming it),
    before any clip is written; an unknown ``recipe`` is a ConfigError too."""
    if recipe not in RECIPES:
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    path, backbone_override = model_recipe(backbone)
    load_config(path, backbone_override, task="pretrain")
    if recipe == "sync":
        load_config(recipe_path("tiny_sync"), task="pretrain")
    load_config(recipe_path("tiny_finetune"), task="finetune")


def clip_fbank_frames(s: DemoSettings) -> int:
    """Fbank frames (10 ms) of one of the demo's clips: the span Sync's windows are placed in."""
    return round(s.duration * 100)


def frames_for(recipe: str, s: DemoSettings) -> int:
    """Frames per clip the demo's shards hold for ``recipe`` (10 for CAV-MAE, as ``cavmae prepare``)."""
    return s.sync_frames if recipe == "sync" else 10


def demo_config(
    s: DemoSettings,
    data: DemoData,
    run_dir: Path,
    *,
    seed: int,
    backbone: str,
    task: str,
    init: str = "",
    recipe: bool = True,
    method: str = "cavmae",
) -> Config:
    """The config of one training run of the demo (``task`` = pretrain or finetune): the shipped recipes, then
    the demo's own settings (its clips, input sizes, batch, steps, seed and logging).

    Pre-training runs the backbone's tiny recipe (:func:`model_recipe`); fine-tuning runs configs/tiny_finetune.yaml
    on the model of that same recipe (the network pre-training built, with its own head). ``method="sync"``
    (``--recipe sync``) adds CAV-MAE Sync's model options of configs/tiny_sync.yaml (:data:`SYNC_MODEL_OPTIONS`) to
    that recipe, and trains on pairs of one frame and its audio window (``s.sync_window`` fbank frames, centred on
    the frame's time in the clip); the model's size and the demo's contrastive weight stay those of the CAV-MAE run,
    so the two compare at equal size. The shards must hold ``data.num_frames`` frames per clip."""
    if method not in RECIPES:
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got {method!r}")
    pretrain = task == "pretrain"
    path, backbone_override = model_recipe(backbone, recipe)
    cfg = load_config(path, backbone_override, task="pretrain")
    sync = method == "sync"
    if sync:
        sync_model = load_config(recipe_path("tiny_sync"), task="pretrain").model
        for name in SYNC_MODEL_OPTIONS:
            setattr(cfg.model, name, getattr(sync_model, name))
    if not pretrain:
        model = cfg.model
        cfg = load_config(recipe_path("tiny_finetune"), task="finetune")
        cfg.model = model
    updates: dict[str, Any] = {
        "model": {
            "audio_length": s.sync_window if sync else s.audio_length,
            "num_mel_bins": s.num_mel_bins,
            "image_size": s.frame_size,
            "contrast_weight": s.contrast_weight,
            "num_classes": s.num_classes,
        },
        "data": {
            "synthetic": False,
            "num_frames": data.num_frames,
            "audio_window": s.sync_window if sync else 0,
            "clip_fbank_frames": clip_fbank_frames(s),
            "train_shards": [data.train_shards],
            # pre-training is judged by the retrieval evaluation afterwards; fine-tuning validates on held-out clips
            "val_shards": [] if pretrain else [data.heldout_shards],
            "batch_size": s.pretrain_batch if pretrain else s.finetune_batch,
            "num_workers": 0,  # one process: deterministic, and no worker start-up on a 2-core machine
            "shuffle_buffer": 256,
        },
        "eval": {"batch_size": 64},
        "train": {
            "init": init,
            "seed": seed,
            "max_steps": s.pretrain_steps if pretrain else s.finetune_steps,  # ends the run, whatever train.epochs
            "out_dir": str(run_dir),
            "ckpt_every": 0,
            "keep_last": 1,
            "log_every": 1,  # every step: the report smooths the curves itself
            "image_every": 0,  # the report draws its own reconstruction of a held-out clip
            "val_every": 0 if pretrain else s.finetune_eval_every,
            "val_at_start": not pretrain,  # both fine-tuning curves start from their initial accuracy
            "wandb_mode": "disabled",
        },
    }
    if not pretrain:
        updates["finetune"] = {"average_epochs": None}  # same number of steps, no averaging: like for like
        if sync:
            # the demo scores its classifiers itself (one frame and its window); the run's own ten-frame ensemble
            # would pair every frame with the clip's audio, which a windowed model does not take
            updates["finetune"]["ten_frame"] = False
    merge(cfg, updates)
    validate(cfg)
    return cfg
