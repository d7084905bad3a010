"""``cavmae demo``: the whole pipeline on a CPU in minutes, ending in a report that shows that it learns.

Every stage is the library call a user would make on real data:

1. data: synthetic clips written as real H.264 + AAC files (:mod:`cavmae.data.clips`, VGGSound layout whose CSV
   has a train / test split column), prepared into WebDataset shards (:mod:`cavmae.data.prepare`): ``train`` and
   ``heldout``;
2. pre-training: a tiny CAV-MAE (:func:`cavmae.train.train`) on the train shards, without labels;
3. retrieval on the held-out clips: the pre-trained model vs the same network at its random initialisation;
4. classification: fine-tuning from the pre-trained model vs training from scratch, for the same number of steps,
   scored on the held-out clips;
5. the report (:mod:`cavmae.demo.report`): ``report.md``, ``figures/*.png`` and ``metrics.json``.

Why the sizes (:data:`FULL`): each class pairs a sound (pitch, timbre) with a picture (colour, shape), and within a
class the object's height sets the pitch, so a model that aligns audio with video ranks clips of the right class
first: with K classes and class-level alignment alone, R@5 is about K times chance. K = 16 and ~160 held-out clips
make chance R@5 small (~3 %) and stable. Frames are 64 px (4 x 4 patches), so the objects are drawn larger than the
generator's default, or 75 % masking would usually hide them. The contrastive weight is 1 (the paper's 0.01 suits
ViT-B with a 48-clip batch; the tiny model needs the stronger signal to align within ~1000 steps). Fine-tuning is
short (60 steps of 16 clips) because the classes are easy once seen often enough: the demo measures how much faster
a pre-trained encoder gets there, and the curves in the report show both runs over every step.

Measured on 2 shared CPU cores: the full demo takes about 2.5 minutes, the quick one under a minute.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cavmae.config import Config, merge, validate
from cavmae.demo.heldout import (
    ClassificationResult,
    DemoData,
    RetrievalResult,
    evaluate_classifier,
    evaluate_retrieval,
    load_heldout,
)

log = logging.getLogger(__name__)

MARKER = ".cavmae-demo"  # written into the output folder: a later demo may replace a folder that holds it


class DemoError(RuntimeError):
    """The demo cannot start (output folder in the way, unknown backbone)."""


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
    pretrain_lr: float
    contrast_weight: float
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    finetune_eval_every: int  # held-out accuracy every N fine-tuning steps (the curves)
    samples_per_shard: int = 64
    workers: int = 2  # processes that render the clips and decode them into shards
    # torch threads while the demo runs. One: on a machine whose cores are busy with other work, two OpenMP threads
    # per op made a tiny-model step up to 60x slower (measured: 0.05 s -> 3.6 s on 2 shared cores), while one
    # thread costs at most ~1.4x on an idle machine; a fixed count also keeps results identical across machines.
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
    pretrain_lr=1e-3,
    contrast_weight=1.0,
    finetune_steps=60,
    finetune_batch=16,
    finetune_lr=1e-3,
    finetune_eval_every=10,
)

QUICK = dataclasses.replace(FULL, num_clips=300, num_classes=8, pretrain_steps=250, finetune_steps=30)


# ---------------------------------------------------------------------------------------------------------------
# stage 1: clips and shards


def _bar(total: int, desc: str, unit: str):
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def make_data(out: Path, s: DemoSettings, seed: int) -> DemoData:
    """Synthetic clips in ``out/clips`` -> shards ``out/shards/{train,heldout}-NNNNNN.tar``."""
    from cavmae.data.clips import make_synthetic_dataset
    from cavmae.data.prepare import PrepareOptions, prepare_shards
    from cavmae.data.sources import plan_inputs

    with _bar(s.num_clips, "writing clips", "clip") as bar:
        synth = make_synthetic_dataset(
            out / "clips",
            num_clips=s.num_clips,
            num_classes=s.num_classes,
            duration=s.duration,
            size=s.frame_size,
            fps=8.0,
            seed=seed,
            layout="vggsound",
            object_size=s.object_size,
            workers=s.workers,
            progress=lambda n: bar.update(n - bar.n),
        )
    patterns, counts = {}, {}
    for split, name in (("train", "train"), ("test", "heldout")):
        plan = plan_inputs(
            videos=synth.videos, csv=synth.csv, label_csv=synth.label_csv, split=split, clip_seconds=s.duration
        )
        with _bar(len(plan.inputs), f"preparing {name} shards", "clip") as bar:
            manifest = prepare_shards(
                plan,
                out / "shards",
                name=name,
                samples_per_shard=s.samples_per_shard,
                workers=s.workers,
                options=PrepareOptions(frame_size=s.frame_size, clip_seconds=s.duration),
                progress=lambda event, shard, n: bar.update(1) if event == "sample" else None,
            )
        if manifest["failed"]:
            log.warning("%d %s clips could not be prepared: %s", len(manifest["failed"]), name, manifest["failed"][0])
        last = len(manifest["shards"]) - 1
        patterns[name] = str(out / "shards" / f"{name}-{{000000..{last:06d}}}.tar")
        counts[name] = manifest["num_samples"]
    return DemoData(
        synth.root,
        patterns["train"],
        patterns["heldout"],
        counts["train"],
        counts["heldout"],
        [c.name for c in synth.classes],
    )


# ---------------------------------------------------------------------------------------------------------------
# configs: the tiny recipe (configs/tiny.yaml) on smaller inputs, kept here so the demo needs no recipe file


def demo_config(
    s: DemoSettings, data: DemoData, run_dir: Path, *, seed: int, backbone: str, task: str, init: str = ""
) -> Config:
    """The config of one training run of the demo (``task`` = pretrain or finetune)."""
    pretrain = task == "pretrain"
    updates: dict[str, Any] = {
        "model": {
            "backbone": backbone,
            "embed_dim": 64,
            "num_heads": 4,
            "modality_depth": 2,
            "shared_depth": 1,
            "decoder_embed_dim": 32,
            "decoder_depth": 2,
            "decoder_num_heads": 4,
            "audio_length": s.audio_length,
            "num_mel_bins": s.num_mel_bins,
            "image_size": s.frame_size,
            "contrast_weight": s.contrast_weight,
            "num_classes": s.num_classes,
        },
        "data": {
            "train_shards": [data.train_shards],
            # pre-training is judged by the retrieval evaluation afterwards; fine-tuning validates on held-out clips
            "val_shards": [] if pretrain else [data.heldout_shards],
            "batch_size": s.pretrain_batch if pretrain else s.finetune_batch,
            "num_workers": 0,  # one process: deterministic, and no worker start-up on a 2-core machine
            "shuffle_buffer": 256,
        },
        "eval": {"batch_size": 64},
        "optim": {
            "name": "adamw",
            "lr": s.pretrain_lr if pretrain else s.finetune_lr,
            "schedule": "cosine",
            "warmup_steps": 10 if pretrain else 5,
            "weight_decay": 0.01,
            "head_lr_mult": 1.0 if pretrain else 10.0,
        },
        "train": {
            "task": task,
            "init": init,
            "seed": seed,
            "max_steps": s.pretrain_steps if pretrain else s.finetune_steps,
            "epochs": 1000,  # max_steps ends the run
            "out_dir": str(run_dir),
            "ckpt_every": 0,
            "keep_last": 1,
            "log_every": 1,  # every step: the report smooths the curves itself
            "image_every": 0,  # the report draws its own reconstruction of a held-out clip
            "val_every": 0 if pretrain else s.finetune_eval_every,
            "val_at_start": not pretrain,  # both fine-tuning curves start from their initial accuracy
            "wandb_mode": "disabled",
            "ft_loss": "ce",
            "avg_weights_from": 0,  # same number of steps, no weight averaging: a like-for-like comparison
        },
    }
    cfg = Config()
    merge(cfg, updates)
    validate(cfg)
    return cfg


def check_backbone(backbone: str) -> None:
    """Fail before writing any data if the block registry cannot build ``backbone`` (its own message)."""
    from cavmae.config import ModelConfig
    from cavmae.models.blocks import create_block

    try:
        create_block(backbone, 64, 4, ModelConfig(backbone=backbone))
    except ValueError as e:
        raise DemoError(str(e)) from e


# ---------------------------------------------------------------------------------------------------------------
# the whole demo


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    log.info("demo: %s", stage)
    yield
    timings[stage] = round(time.perf_counter() - start, 1)


def prepare_out_dir(out: Path) -> None:
    """An empty ``out``: a folder from an earlier demo (it holds the marker) is replaced, anything else refused."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out} is a file: choose another --out")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoError(f"{out} is not empty and does not hold an earlier demo: choose another --out")
        log.info("replacing the earlier demo in %s", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by cavmae demo; a later demo replaces this folder\n")


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    backbone: str = "vit",
    quick: bool = False,
    seed: int = 0,
    settings: DemoSettings | None = None,
) -> DemoResult:
    """Run every stage into ``out_dir`` and write the report; see the module docstring."""
    s = settings or (QUICK if quick else FULL)
    check_backbone(backbone)
    out = Path(out_dir)
    prepare_out_dir(out)
    with _torch_threads(s.threads):
        return _run(out, s, backbone, quick, seed)


def _run(out: Path, s: DemoSettings, backbone: str, quick: bool, seed: int) -> DemoResult:
    from cavmae import create_model
    from cavmae.demo.report import write_report
    from cavmae.models.weights import load_model
    from cavmae.train import seed_everything, train

    timings: dict[str, float] = {}
    start = time.perf_counter()

    with _timed(timings, "data"):
        data = make_data(out, s, seed)
    runs = out / "runs"
    with _timed(timings, "pretrain"):
        pre_cfg = demo_config(s, data, runs / "pretrain", seed=seed, backbone=backbone, task="pretrain")
        pre_run = train(pre_cfg)
    with _timed(timings, "retrieval"):
        held = load_heldout(pre_cfg, data.heldout_shards)
        pretrained = load_model(pre_run / "model")
        # the pre-training run's own starting point: train() seeds with train.seed, then builds the model
        seed_everything(seed)
        random_init = create_model(pre_cfg.model)
        retrieval = {
            "pretrained": evaluate_retrieval(pretrained, held, "pre-trained"),
            "random_init": evaluate_retrieval(random_init, held, "random init"),
        }
    classification = {}
    for name, init in (("pretrained", str(pre_run / "model")), ("scratch", "")):
        with _timed(timings, f"finetune_{name}"):
            cfg = demo_config(
                s, data, runs / f"finetune_{name}", seed=seed, backbone=backbone, task="finetune", init=init
            )
            classification[name] = evaluate_classifier(train(cfg), held)
    timings["total_before_report"] = round(time.perf_counter() - start, 1)

    metrics = summarise(s, data, seed, backbone, quick, pre_run, retrieval, classification, timings)
    with _timed(timings, "report"):
        torch.manual_seed(seed)  # the reconstruction figure draws its masks from the global generator
        report = write_report(out, metrics, data, held, pretrained, pre_run, retrieval, classification)
    timings["total"] = round(time.perf_counter() - start, 1)
    metrics["timings_s"] = timings
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return DemoResult(out, report, metrics, timings)


def summarise(
    s: DemoSettings,
    data: DemoData,
    seed: int,
    backbone: str,
    quick: bool,
    pretrain_run: Path,
    retrieval: dict[str, RetrievalResult],
    classification: dict[str, ClassificationResult],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The numbers of ``metrics.json`` (plain JSON types)."""

    def finite(x: float) -> float | None:
        return None if x != x else round(float(x), 2)

    return {
        "seed": seed,
        "backbone": backbone,
        "quick": quick,
        "settings": dataclasses.asdict(s),
        "data": {
            "classes": data.class_names,
            "train_clips": data.num_train,
            "heldout_clips": data.num_heldout,
            "train_shards": data.train_shards,
            "heldout_shards": data.heldout_shards,
        },
        "pretraining": pretraining_summary(pretrain_run),
        "retrieval": {
            name: {d: {k: round(v, 2) for k, v in m.items()} for d, m in r.metrics.items()}
            for name, r in retrieval.items()
        },
        "retrieval_chance_R@5": round(100.0 * min(5, data.num_heldout) / max(data.num_heldout, 1), 2),
        "classification": {
            name: {
                "steps": s.finetune_steps,
                "top1": round(c.top1, 2),
                "per_class_top1": [finite(x) for x in c.per_class.tolist()],
                "curve": [[step, round(acc, 2)] for step, acc in c.curve],
            }
            for name, c in classification.items()
        },
        "timings_s": timings,
    }


def pretraining_summary(run_dir: Path, keys: tuple[str, ...] = ("loss_rec_a", "loss_rec_v", "loss_c", "acc_c")) -> dict:
    """Mean of each loss part over the first and the last 5 % of the logged steps (one batch per step is noisy)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    n = max(1, len(records) // 20)

    def mean(rows: list[dict]) -> dict[str, float]:
        return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in keys}

    return {"steps": records[-1]["step"] if records else 0, "start": mean(records[:n]), "end": mean(records[-n:])}
