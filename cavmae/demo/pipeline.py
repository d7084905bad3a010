"""``cavmae demo``: the whole pipeline on a CPU, ending in a report that shows that it learns.

Every stage is the library call a user would make on real data:

1. data: synthetic clips written as real H.264 + AAC files (:mod:`cavmae.data.clips`, VGGSound layout whose CSV
   has a train / test split column), prepared into WebDataset shards (:mod:`cavmae.data.prepare`): ``train`` and
   ``heldout``;
2. pre-training: a tiny CAV-MAE (:func:`cavmae.train.train`) on the train shards, without labels; every run is a
   shipped recipe (configs/tiny.yaml, tiny_mamba.yaml, tiny_finetune.yaml) with the demo's own settings
   (:func:`cavmae.demo.settings.demo_config`);
3. retrieval on the held-out clips, at the instance level (a clip's own pair) and the class level: the pre-trained
   model vs the same network at its random initialisation and two baselines without training
   (:mod:`cavmae.demo.baselines`: hand-made features matched by a linear map, and the event times), against chance
   and the class-only ceiling;
4. classification: fine-tuning from the pre-trained model vs training from scratch, for the same number of steps,
   scored on the held-out clips;
5. the report (:mod:`cavmae.demo.report`): ``report.md``, ``figures/*.png`` and ``metrics.json``.

Why the sizes (:data:`FULL`): each class pairs a sound (pitch, timbre) with a picture (colour, shape), so a model
that aligns audio with video at the class level ranks clips of the right class first; telling a clip from the others
of its class needs what differs within the class. With K = 16 classes and ~160 held-out clips (~10 per class) the
class-only ceiling of instance retrieval (R@1 ~10 %, R@5 ~50 %) sits well apart from chance (~0.6 % / ~3 %) and
from a solved instance match, so the report can say which one the model reaches. Frames are 64 px (4 x 4 patches),
so the objects are drawn larger than the generator's default, or 75 % masking would usually hide them. The
contrastive weight is 1 (the paper's 0.01 suits ViT-B with a 48-clip batch; the tiny model needs the stronger signal
to align within ~1000 steps). Fine-tuning is short (60 steps of 16 clips) because the classes are easy once seen
often enough: the demo measures how much faster a pre-trained encoder gets there, and the curves in the report show
both runs over every step.

``--recipe sync`` pre-trains CAV-MAE Sync instead, at the same size (:func:`cavmae.demo.settings.demo_config`):
the shards hold 16 frames per clip, a training pair is one random frame and the audio window around it
(``DemoSettings.sync_window`` fbank frames), and retrieval is scored per frame (diagonal_mean: the methods
``pretrained`` / ``random_init``) and by the middle frame's pair (``pretrained_clip`` / ``random_init_clip``);
fine-tuning classifies the middle frame and its window.

Training is repeated with three seeds on the same clips (``--seeds``; quick: one), each replica single-threaded in
its own process, as many at a time as there are cores; the report gives mean ± sd, and ``metrics.json`` the
seconds of each phase (``timings_s``; what the demo took on our machine: scripts/results/README.md).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cavmae.config import Config
from cavmae.demo.heldout import (
    DemoData,
    HeldOut,
    RetrievalResult,
    SeedResult,
    evaluate_classifier,
    evaluate_frame_retrieval,
    evaluate_retrieval,
    load_heldout,
)
from cavmae.demo.progress import forward_logs, listen, phase
from cavmae.demo.settings import (  # noqa: F401  (FULL / QUICK: the demo's sizes)
    FULL,
    QUICK,
    DemoSettings,
    check_recipes,
    demo_config,
    frames_for,
)
from cavmae.demo.summary import mean_sd, summarise  # noqa: F401  (mean_sd: also used by callers of the demo)

log = logging.getLogger(__name__)

MARKER = ".cavmae-demo"  # written into the output folder: a later demo may replace a folder that holds it


class DemoError(RuntimeError):
    """The demo cannot start (output folder in the way, unknown backbone)."""


# ---------------------------------------------------------------------------------------------------------------
# stage 1: clips and shards


def _bar(total: int, desc: str, unit: str):
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def make_data(out: Path, s: DemoSettings, seed: int, num_frames: int = 10) -> DemoData:
    """Synthetic clips in ``out/clips`` -> shards ``out/shards/{train,heldout}-NNNNNN.tar`` holding ``num_frames``
    frames per clip (``cavmae prepare --frames``)."""
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
                options=PrepareOptions(frame_size=s.frame_size, clip_seconds=s.duration, num_frames=num_frames),
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
        num_frames,
    )


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
    seeds: int | None = None,
    jobs: int | None = None,
    settings: DemoSettings | None = None,
    recipe: str = "cavmae",
) -> DemoResult:
    """Run every stage into ``out_dir`` and write the report; see the module docstring.

    `seed` seeds the clips and the first training replica; `seeds` replicas (default: 3, quick: 1) train with
    seeds seed, seed + 1, ... on the same clips, `jobs` of them at a time in separate processes (default: as many
    as there are CPU cores, at most `seeds`; each trains on one thread). ``recipe="sync"`` pre-trains CAV-MAE Sync
    instead of CAV-MAE (:func:`cavmae.demo.settings.demo_config`) on 16-frame shards, and scores retrieval per
    frame (diagonal_mean) as well as by one pair per clip."""
    s = settings or (QUICK if quick else FULL)
    n_seeds = seeds if seeds is not None else (1 if quick else 3)
    if n_seeds < 1:
        raise DemoError(f"--seeds must be at least 1, got {n_seeds}")
    n_jobs = jobs if jobs is not None else min(n_seeds, os.cpu_count() or 1)
    check_recipes(backbone, recipe)
    check_backbone(backbone)
    out = Path(out_dir)
    prepare_out_dir(out)
    with _torch_threads(s.threads):
        return _run(out, s, backbone, quick, [seed + i for i in range(n_seeds)], max(1, n_jobs), recipe)


def run_seed(
    out: Path,
    s: DemoSettings,
    data: DemoData,
    backbone: str,
    seed: int,
    progress: bool = True,
    recipe: str = "cavmae",
) -> SeedResult:
    """Pre-train, evaluate retrieval and fine-tune twice with one seed (a process of its own when run in parallel),
    on ``s.threads`` torch threads (the caller's count is restored after).

    Retrieval methods: ``pretrained`` and ``random_init``, scored by one pair per clip (CAV-MAE) or, with
    ``recipe="sync"``, per frame (diagonal_mean), and then also by the middle frame's pair as ``*_clip``."""
    with _torch_threads(s.threads):
        return _run_seed(out, s, data, backbone, seed, progress, recipe)


def retrieval_methods(name: str, model: torch.nn.Module, held: HeldOut, desc: str) -> dict[str, RetrievalResult]:
    """One model's retrieval results under metrics.json's method names: ``name`` for the model's own scoring (per
    frame when ``held`` has every frame with its window, CAV-MAE Sync), and then ``name_clip`` for one pair per clip
    beside it."""
    clip = evaluate_retrieval(model, held, desc)
    if held.frame_audio is None:
        return {name: clip}
    return {name: evaluate_frame_retrieval(model, held, desc), f"{name}_clip": clip}


def _run_seed(
    out: Path, s: DemoSettings, data: DemoData, backbone: str, seed: int, progress: bool, recipe: str = "cavmae"
) -> SeedResult:
    from cavmae import create_model
    from cavmae.models.weights import load_model
    from cavmae.train import seed_everything, train

    timings: dict[str, float] = {}
    cpu_start = time.process_time()  # CPU seconds of this replica: its wall time on an idle core (one thread)
    runs = out / "runs" / f"seed{seed}"

    def config(task: str, run: str, init: str = "") -> Config:
        cfg = demo_config(s, data, runs / run, seed=seed, backbone=backbone, task=task, init=init, method=recipe)
        cfg.train.progress_bar = progress
        return cfg

    with (
        _timed(timings, "pretrain"),
        phase(f"seed {seed}: pre-training", runs / "pretrain" / "metrics.jsonl", s.pretrain_steps),
    ):
        pre_cfg = config("pretrain", "pretrain")
        pre_run = train(pre_cfg)
    with _timed(timings, "retrieval"), phase(f"seed {seed}: embedding the held-out clips for retrieval"):
        held = load_heldout(pre_cfg, data.heldout_shards)
        pretrained = load_model(pre_run / "model")
        # the pre-training run's own starting point: train() seeds with train.seed, then builds the model
        seed_everything(seed)
        random_init = create_model(pre_cfg.model)
        retrieval = retrieval_methods("pretrained", pretrained, held, "pre-trained")
        retrieval |= retrieval_methods("random_init", random_init, held, "random init")
    classification = {}
    for name, init in (("pretrained", str(pre_run / "model")), ("scratch", "")):
        with (
            _timed(timings, f"finetune_{name}"),
            phase(
                f"seed {seed}: fine-tuning {'the pre-trained model' if init else 'from scratch'}",
                runs / f"finetune_{name}" / "metrics.jsonl",
                s.finetune_steps,
            ),
        ):
            classification[name] = evaluate_classifier(train(config("finetune", f"finetune_{name}", init)), held)
    timings["cpu"] = round(time.process_time() - cpu_start, 1)
    return SeedResult(seed, runs, retrieval, classification, timings)


def run_baselines(
    out: Path, s: DemoSettings, data: DemoData, backbone: str, seed: int
) -> tuple[dict[str, dict | None], dict[str, str], torch.Tensor]:
    """The baselines that need no training (:mod:`cavmae.demo.baselines`) on the held-out clips, the reasons of
    those that cannot run, and the held-out labels [N] (chance levels and the class-only ceiling follow from them)."""
    from cavmae.demo.baselines import evaluate_baselines

    cfg = demo_config(s, data, out, seed=seed, backbone=backbone, task="pretrain")
    with phase("baselines: hand-made features and event times"):
        held, train = load_heldout(cfg, data.heldout_shards), load_heldout(cfg, data.train_shards)
        results, unavailable = evaluate_baselines(held, train, data.clips_dir, duration=s.duration)
    for name, reason in unavailable.items():
        log.warning("baseline %s unavailable: %s", name, reason)
    return results, unavailable, held.labels


def _run_seeds(
    out: Path, s: DemoSettings, data: DemoData, backbone: str, seeds: list[int], jobs: int, recipe: str = "cavmae"
):
    if jobs == 1:
        return [run_seed(out, s, data, backbone, seed, recipe=recipe) for seed in seeds]
    # one process per replica (spawned: no forked OpenMP state), each on one thread; progress bars would interleave
    log.info("demo: %d training replicas (seeds %s), %d at a time", len(seeds), seeds, jobs)
    context = multiprocessing.get_context("spawn")
    records = context.Queue()  # the replicas' log lines (progress included), logged here
    listener = listen(records)
    level = logging.getLogger().getEffectiveLevel()
    try:
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=forward_logs, initargs=(records, level)
        ) as pool:
            futures = [pool.submit(run_seed, out, s, data, backbone, seed, False, recipe) for seed in seeds]
            results = []
            for future in futures:
                results.append(future.result())
                log.info("demo: seed %d done (%s)", results[-1].seed, results[-1].timings)
            return results
    finally:
        listener.stop()


def _run(
    out: Path, s: DemoSettings, backbone: str, quick: bool, seeds: list[int], jobs: int, recipe: str = "cavmae"
) -> DemoResult:
    from cavmae.demo.report import write_report
    from cavmae.eval.gallery import write_gallery
    from cavmae.eval.search import SearchSpace
    from cavmae.models.weights import load_model

    timings: dict[str, float] = {}
    start = time.perf_counter()

    with _timed(timings, "data"):
        data = make_data(out, s, seeds[0], frames_for(recipe, s))
    with _timed(timings, "baselines"):
        baselines, unavailable, labels = run_baselines(out, s, data, backbone, seeds[0])
    with _timed(timings, "training"):
        results = _run_seeds(out, s, data, backbone, seeds, jobs, recipe)
    timings["total_before_report"] = round(time.perf_counter() - start, 1)

    metrics = summarise(s, data, backbone, quick, results, timings, baselines, unavailable, labels)
    metrics["recipe"] = recipe
    metrics["scoring"] = "diagonal_mean" if recipe == "sync" else "clip"  # of the pretrained / random_init methods
    first = results[0]
    with _timed(timings, "gallery"):
        # listen to and look at what the first seed's pre-trained model retrieves (linked from the report)
        write_gallery(
            out / "gallery",
            SearchSpace(first.retrieval["pretrained"].embeddings),
            [data.heldout_shards],
            k=5,
            seed=seeds[0],
            title=f"cavmae demo{' --recipe ' + recipe if recipe != 'cavmae' else ''}: held-out retrieval with the "
            "pre-trained model",
            model=f"pre-trained, seed {first.seed} (runs/seed{first.seed}/pretrain/model)",
        )
    with _timed(timings, "report"):
        held = load_heldout(
            demo_config(s, data, out, seed=seeds[0], backbone=backbone, task="pretrain", method=recipe),
            data.heldout_shards,
        )
        pretrained = load_model(first.runs_dir / "pretrain" / "model")
        torch.manual_seed(seeds[0])  # the reconstruction figure draws its masks from the global generator
        report = write_report(out, metrics, data, held, pretrained, results)
    timings["total"] = round(time.perf_counter() - start, 1)
    metrics["timings_s"] = timings
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return DemoResult(out, report, metrics, timings)
