"""The training loop: CPU (one or several gloo processes), one GPU, many GPUs and nodes, through Accelerate.

``train(cfg)`` reads top to bottom, each phase a short function: :func:`check_resume`, :func:`build_run`
(model, optimizer, schedule, restored state, logger), then one loop of :func:`train_step` (grad_accum
micro-batches and one update), :func:`log_step`, :func:`end_of_step` (epoch end, validation, checkpoint, the
stop on non-finite steps) and :func:`finish`. It is generic over a :class:`~cavmae.train.tasks.Task`
(pre-training and fine-tuning register their own).

Distributed contrastive loss: each process holds b clips; with ``train.global_contrast`` the model gathers the
embeddings of all processes with an autograd all-gather (cavmae/models/losses.py), so N processes x b compute
the loss and gradients of one process with N*b clips. DDP averages the gradients, the logged metrics are averaged
over processes. Gradient accumulation multiplies the clips per update, NOT the contrastive batch: each
micro-batch takes its negatives from its own N*b clips.

Exact resume: the data order is a function of (seed, epoch) and the position is (epoch, micro-batch), RNG states
are saved per process, and nothing off the training path (validation, figures, checkpoints) draws from the
training RNG streams. On CPU a resumed run logs bit-identical losses.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cavmae.config import Config, ConfigError, check_task
from cavmae.data.loader import ERROR_KINDS, LoadErrors
from cavmae.data.verify import require_valid_shards
from cavmae.models.weights import save_pretrained
from cavmae.train.batches import batches_per_epoch, has_split, make_batches, to_device
from cavmae.train.logs import RunLogger, Throughput
from cavmae.train.optim import build_optimizer, build_scheduler
from cavmae.train.setup import (
    freeze_unused,
    initialise,
    release_accelerator,
    seed_everything,
    setup_accelerator,
)
from cavmae.train.state import (
    TrainState,
    list_checkpoints,
    list_incomplete,
    load_newest_readable,
    resume_candidates,
    rng_devices,
    save_checkpoint,
)
from cavmae.train.tasks import Task, get_task

log = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """The run stopped itself (too many non-finite steps in a row); a good checkpoint was written first."""


@dataclass
class Run:
    """Everything one training run holds while it runs (the model and optimizer as prepared by Accelerate)."""

    cfg: Config
    task: Task
    accelerator: Any
    out_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState
    logger: RunLogger
    steps_per_epoch: int
    total_steps: int
    meter: Throughput = field(default_factory=Throughput)
    last_val: dict[str, float] = field(default_factory=dict)  # the latest validation's metrics
    probe_set: list[dict] | None = None  # the probe clips' batches (CPU), read once
    skips: LoadErrors | None = None  # samples the shard loader skipped this epoch, by cause (None: synthetic data)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def module(self) -> nn.Module:
        """The unwrapped model (no DDP, no compile wrapper): what evaluation, figures and saving use."""
        return self.accelerator.unwrap_model(self.model)


def train(cfg: Config, task: str | Task | None = None, resume: str = "") -> Path:
    """Train according to ``cfg``; returns the run directory. The final model is saved with save_pretrained in
    ``<out_dir>/model``. Raises :class:`TrainingStopped` after ``train.max_bad_steps`` non-finite steps in a row
    (after writing a checkpoint of the last good weights).

    ``task``: ``"pretrain"`` / ``"finetune"`` (which ``cfg`` must describe: a finetune section exactly for
    fine-tuning), a :class:`Task` of one's own, or None for the task ``cfg`` describes. ``resume``: ``""`` (a fresh
    run), ``"auto"`` (the newest readable checkpoint of train.out_dir, or a fresh run if it holds none) or a
    checkpoint directory."""
    if task is None or isinstance(task, str):
        check_task(cfg, task or cfg.task)
        task = get_task(task or cfg.task)
    out_dir = Path(cfg.train.out_dir)
    fresh = not out_dir.exists()
    accelerator = setup_accelerator(cfg)
    main = accelerator.is_main_process
    stepped = False
    run: Run | None = None
    try:
        try:
            if cfg.data.verify and not cfg.data.synthetic:
                for split in ("train", "val"):
                    if getattr(cfg.data, f"{split}_shards"):
                        require_valid_shards(getattr(cfg.data, f"{split}_shards"), f"data.{split}_shards")
            candidates = check_resume(cfg, resume)
            run = build_run(cfg, task, accelerator, candidates)
            run.model.train()
            if cfg.train.val_at_start and run.state.step == 0:
                validate(run)
            batches: Iterator[dict] | None = None
            while run.state.step < run.total_steps:
                if batches is None:
                    skip = run.state.batch_in_epoch
                    run.skips = None if cfg.data.synthetic else LoadErrors()
                    batches = iter(
                        make_batches(cfg, "train", run.state.epoch, run.rank, run.world, skip=skip, errors=run.skips)
                    )
                metrics, last_batch, bad = train_step(run, batches)
                stepped = True
                log_step(run, metrics, last_batch, bad)
                if end_of_step(run):
                    batches = None  # the next epoch
            return finish(run)
        finally:
            if run is not None:
                run.logger.close()  # the progress bar, before an error is printed
            release_accelerator(accelerator)
    except Exception:
        if fresh and not stepped and main:
            remove_unstarted_run(out_dir)
        raise


def remove_unstarted_run(out_dir: Path) -> None:
    """A run that failed before its first step leaves no half-made run directory (a config.yaml, empty logs)
    behind, so the next attempt starts clean instead of meeting an 'earlier run'."""
    if out_dir.is_dir():
        shutil.rmtree(out_dir, ignore_errors=True)
        log.info("removed %s: the run stopped before its first step", out_dir)


def check_resume(cfg: Config, resume: str = "") -> list[Path]:
    """The checkpoints to resume from (``resume``: "", "auto" or a checkpoint directory), newest first (empty for
    a fresh start); refuses a fresh start over an earlier run."""
    out_dir = Path(cfg.train.out_dir)
    candidates = resume_candidates(resume, out_dir)
    if not candidates and (list_checkpoints(out_dir) or list_incomplete(out_dir)):
        raise ConfigError(
            f"train.out_dir={str(out_dir)!r} already holds checkpoints; continue that run with --resume auto "
            "or choose another train.out_dir"
        )
    return candidates


def build_run(cfg: Config, task: Task, accelerator, candidates: list[Path]) -> Run:
    """Model (initialised, frozen where unused), optimizer and schedule, prepared by Accelerate; the state of
    newest readable of the resume ``candidates`` restored; the run directory, its resolved config and the logger."""
    t = cfg.train
    out_dir = Path(t.out_dir)
    world, device = accelerator.num_processes, accelerator.device
    seed_everything(t.seed, t.deterministic)  # the same on every process: identical initial weights
    model = task.build_model(cfg)
    initialise(model, cfg)
    model.to(device)
    freeze_unused(model, task, cfg)
    if t.activation_checkpointing:
        if not hasattr(model, "set_activation_checkpointing"):
            raise ConfigError(f"train.activation_checkpointing: the {task.name} model does not support it")
        model.set_activation_checkpointing(True)
    optimizer = build_optimizer(model, cfg.optim, lambda name: task.lr_scale(name, cfg))
    epoch_batches = batches_per_epoch(cfg, world)
    steps_per_epoch = epoch_batches // t.grad_accum
    if steps_per_epoch < 1:
        raise ConfigError(
            f"an epoch holds {epoch_batches} batches of {world} x data.batch_size={cfg.data.batch_size} clips, "
            f"fewer than train.grad_accum={t.grad_accum}: more data or a smaller batch"
        )
    total = t.max_steps or t.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, total)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, optimizer = accelerator.prepare(model, optimizer)
    seed_everything(t.seed + accelerator.process_index, t.deterministic)  # different random masks per process

    state = TrainState()
    ckpt = None
    if candidates:
        state, ckpt = load_newest_readable(candidates, accelerator, model, optimizer, scheduler, cfg)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    logger = RunLogger(accelerator, cfg, out_dir, total, state.step, resumed=ckpt is not None)
    contrast = cfg.data.batch_size * (world if t.global_contrast else 1)
    if t.contrast_group:
        if (cfg.data.batch_size * world) % t.contrast_group:
            raise ConfigError(
                f"train.contrast_group={t.contrast_group} must divide the global batch ({world} process(es) x "
                f"data.batch_size={cfg.data.batch_size})"
            )
        contrast = f"{t.contrast_group} (groups of the global batch, losses averaged)"
    logger.message(
        f"run directory: {out_dir.resolve()} | {task.name}, {n_params / 1e6:.2f}M trainable parameters, "
        f"{world} process(es) on {device}, {total} steps ({steps_per_epoch}/epoch), "
        f"{cfg.data.batch_size * world * t.grad_accum} clips per update, contrastive batch {contrast}"
    )
    if not has_split(cfg, "val"):
        logger.message("no validation data (data.val_shards is empty / data.synthetic_val_size=0): no validation")
    return Run(cfg, task, accelerator, out_dir, model, optimizer, scheduler, state, logger, steps_per_epoch, total)


def train_step(run: Run, batches: Iterator[dict]) -> tuple[dict[str, float], dict, bool]:
    """One optimizer step: grad_accum micro-batches, gradients synchronised on the last one, then clip, check
    and update. Returns (metrics averaged over processes, the last micro-batch, whether the step was skipped)."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    accum = cfg.train.grad_accum
    wait = 0.0
    sums: dict[str, torch.Tensor] = {}
    batch: dict = {}
    for micro in range(accum):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            raise RuntimeError(
                f"the training data of epoch {state.epoch} ended after {state.batch_in_epoch + micro} batches on "
                f"process {run.rank}, {run.steps_per_epoch * accum} expected: check data.samples_per_epoch"
            )
        batch = to_device(batch, accelerator.device)
        wait += time.perf_counter() - t0
        sync = micro == accum - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(run.model):
            out = run.task.step(run.model, batch, cfg)
            accelerator.backward(out["loss"] / accum)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() / accum
    # With clipping off the norm is still computed: it is logged and catches non-finite gradients.
    grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip or math.inf)
    # One all-reduce: metrics averaged over processes; "nonfinite" > 0 if any process saw a bad loss.
    keys = sorted(sums)
    local = torch.stack([sums[k] for k in keys] + [(~torch.isfinite(sums["loss"])).float()])
    reduced = accelerator.reduce(local, reduction="mean").tolist()
    metrics = dict(zip(keys, reduced[:-1]))
    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    # A non-finite loss (or gradient, without a loss scaler) skips the update; fp16's scaler skips its own.
    bad = reduced[-1] > 0 or (accelerator.scaler is None and not math.isfinite(grad_norm))
    group = run.optimizer.param_groups[0]
    lr = group["lr"] / group["lr_scale"]
    if not bad or accelerator.scaler is not None:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()

    clips = accum * cfg.data.batch_size * run.world
    state.step += 1
    state.batch_in_epoch += accum
    state.samples += clips
    state.bad_in_row = state.bad_in_row + 1 if bad else 0
    state.bad_total += int(bad)
    run.meter.add(clips, wait)
    metrics.update(lr=lr, grad_norm=grad_norm, bad_steps=state.bad_total)
    return metrics, batch, bad


def log_step(run: Run, metrics: dict[str, float], batch: dict, bad: bool) -> None:
    """Metrics every ``train.log_every`` steps (and on a skipped step), progress, the reconstruction figure."""
    t, step = run.cfg.train, run.state.step
    if bad:
        run.logger.message(
            f"step {step}: non-finite loss or gradient, update skipped ({run.state.bad_in_row} in a row)"
        )
    # The last step of an epoch on shards is always logged, with the epoch's skipped samples by cause.
    epoch_end = run.skips is not None and run.state.batch_in_epoch + t.grad_accum > run.steps_per_epoch * t.grad_accum
    if step % t.log_every == 0 or step == run.total_steps or bad or epoch_end:
        metrics["samples_per_s"], metrics["data_wait"] = run.meter.read()
        if run.skips is not None:
            metrics.update(epoch_skips(run))
            if epoch_end and metrics["skipped"]:
                causes = ", ".join(
                    f"{k} {int(metrics[f'skipped/{k}'])}" for k in ERROR_KINDS if metrics[f"skipped/{k}"]
                )
                run.logger.message(f"epoch {run.state.epoch}: skipped {int(metrics['skipped'])} sample(s) ({causes})")
        run.logger.train(step, run.state.epoch, metrics)
    run.logger.progress(step, metrics)
    if run.main and t.image_every and step % t.image_every == 0:
        fig = run.task.figure(run.module, batch, run.out_dir / "images" / f"step_{step:08d}.png", run.cfg)
        if fig is not None:
            run.logger.image(step, fig)


def epoch_skips(run: Run) -> dict[str, float]:
    """Samples skipped so far this epoch, summed over processes: ``skipped`` and ``skipped/<cause>``."""
    counts = run.skips.counts()
    local = torch.tensor([float(counts[k]) for k in ERROR_KINDS], device=run.accelerator.device)
    total = run.accelerator.reduce(local, reduction="sum").tolist()
    out = {f"skipped/{k}": float(v) for k, v in zip(ERROR_KINDS, total)}
    out["skipped"] = float(sum(total))
    return out


def end_of_step(run: Run) -> bool:
    """Epoch end, validation and checkpoint as scheduled; stops the run after too many non-finite steps in a
    row. Returns True when an epoch ended (the caller starts the next epoch's batches)."""
    t, state = run.cfg.train, run.state
    epoch_done = state.batch_in_epoch + t.grad_accum > run.steps_per_epoch * t.grad_accum
    if epoch_done:
        if run.main:
            run.task.end_of_epoch(run.module, state.epoch, run.out_dir, run.cfg)
        state.epoch += 1
        state.batch_in_epoch = 0
    last = state.step == run.total_steps
    if epoch_done or last or (t.val_every and state.step % t.val_every == 0):
        validate(run)
    if epoch_done and t.probe_every and state.epoch % t.probe_every == 0:
        probe(run)
    if last or (t.ckpt_every and state.step % t.ckpt_every == 0):
        checkpoint(run)
    if t.max_bad_steps and state.bad_in_row >= t.max_bad_steps:
        # Skipped steps never touched the weights: they are the last good ones. Save them, then stop.
        path = checkpoint(run)
        run.logger.close()
        raise TrainingStopped(
            f"stopping at step {state.step}: {state.bad_in_row} steps in a row had a non-finite loss or "
            f"gradient (train.max_bad_steps={t.max_bad_steps}); the last good weights are in {path}. Lower "
            "optim.lr, enable optim.grad_clip, or check the data."
        )
    return epoch_done


def val_batches(run: Run, frame_mode: str | None = None) -> Iterator[dict]:
    """This process's validation batches on its device (at most ``train.val_batches`` of them)."""
    cfg, device = run.cfg, run.accelerator.device
    batches: Iterator[dict] = (
        to_device(b, device) for b in make_batches(cfg, "val", 0, run.rank, run.world, frame_mode=frame_mode)
    )
    if cfg.train.val_batches:
        batches = itertools.islice(batches, cfg.train.val_batches)
    return batches


def validate(run: Run) -> None:
    """The task's evaluation on the validation split, with the same masks every time (a forked RNG)."""
    cfg = run.cfg
    if not has_split(cfg, "val"):
        return
    batches = val_batches(run, "middle")
    run.model.eval()
    with torch.random.fork_rng(devices=rng_devices(run.accelerator.device)):
        torch.manual_seed(cfg.train.seed)  # the same masks at every validation: curves compare like with like
        metrics = run.task.evaluate(run.module, batches, run.accelerator, cfg)
    run.model.train()
    run.last_val = metrics
    run.logger.val(run.state.step, run.state.epoch, metrics)


def probe_batches(cfg: Config) -> list[dict]:
    """The first eval.probe_clips held-out clips (data.probe_shards, or the synthetic validation split), batched."""
    from cavmae.eval.scoring import resolve_scoring

    want = cfg.eval.probe_clips
    # a per-frame scoring needs every frame of a clip (with its audio window when data.audio_window > 0)
    frames = "middle" if resolve_scoring(cfg.eval.scoring, cfg.model, cfg.data) == "clip" else "all"
    if cfg.data.probe_shards:
        from cavmae.data.loader import loader_for

        source = loader_for(cfg, cfg.data.probe_shards, train=False, frame_mode=frames, rank=0, world_size=1)
    else:
        source = make_batches(cfg, "val", 0, 0, 1, frame_mode=frames)
    out, have = [], 0
    for b in source:
        take = min(want - have, len(b["keys"]))
        out.append({k: v[:take] for k, v in b.items()})
        have += take
        if have >= want:
            break
    return out


def probe(run: Run) -> None:
    """Retrieval and k-NN of the frozen embeddings of the probe set (main process; cavmae/eval/probe.py)."""
    from cavmae.eval.probe import probe_metrics
    from cavmae.eval.scoring import resolve_scoring
    from cavmae.train.tasks import local_contrast

    if run.main:
        if run.probe_set is None:
            run.probe_set = probe_batches(run.cfg)
        with torch.random.fork_rng(devices=rng_devices(run.accelerator.device)), local_contrast(run.module):
            cfg = run.cfg
            scoring = resolve_scoring(cfg.eval.scoring, cfg.model, cfg.data)  # eval.scoring: per-frame for Sync
            metrics = probe_metrics(run.module, run.probe_set, cfg.eval.knn_k, scoring, cfg.data.audio_window > 0)
        run.logger.probe(run.state.step, run.state.epoch, metrics)
    run.accelerator.wait_for_everyone()


def checkpoint(run: Run) -> Path:
    return save_checkpoint(
        run.accelerator,
        run.out_dir,
        run.state,
        run.model,
        run.optimizer,
        run.scheduler,
        run.cfg,
        run.cfg.train.keep_last,
    )


def finish(run: Run) -> Path:
    """The task's last word (e.g. weight averaging) and final evaluation, the final model in ``<out_dir>/model``;
    returns out_dir."""
    averaged: list[int] = run.task.finish(run.module, run.out_dir, run.cfg) if run.main else []
    if run.world > 1:  # the main process's final weights (averaged) to every process, for the final evaluation
        from accelerate.utils import broadcast_object_list

        averaged = broadcast_object_list([averaged])[0]
        for tensor in run.module.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    if has_split(run.cfg, "val"):
        run.model.eval()
        summary, details = run.task.final_evaluation(
            run.module, lambda mode: val_batches(run, mode), run.accelerator, run.cfg, run.last_val, averaged
        )
        run.logger.final(summary, details)
    run.logger.close()
    if run.main:
        save_pretrained(run.module, run.out_dir / "model", run.cfg)
    run.accelerator.wait_for_everyone()
    log.info(
        "finished %d steps; run directory %s (model: %s, metrics: %s)",
        run.state.step,
        run.out_dir.resolve(),
        (run.out_dir / "model").resolve(),
        (run.out_dir / "metrics.jsonl").resolve(),
    )
    return run.out_dir
