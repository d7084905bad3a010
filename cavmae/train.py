"""The training loop: CPU (one or several gloo processes), one GPU, many GPUs and nodes, through Accelerate.

``train(cfg)`` reads top to bottom: data source, model, optimizer, resume, then one loop over optimizer steps.
It is generic over a :class:`~cavmae.tasks.Task` (pre-training here; fine-tuning registers its own).

Distributed contrastive loss: each process holds b clips; with ``train.global_contrast`` the model gathers the
embeddings of all processes with an autograd all-gather (cavmae/losses.py), so N processes x b compute the loss and
gradients of one process with N*b clips. DDP averages the gradients, the logged metrics are averaged over
processes. Gradient accumulation multiplies the clips per update, NOT the contrastive batch: each micro-batch
takes its negatives from its own N*b clips.

Exact resume: the data order is a function of (seed, epoch) and the position is (epoch, micro-batch), RNG states
are saved per process, and nothing off the training path (validation, figures, checkpoints) draws from the
training RNG streams. On CPU a resumed run logs bit-identical losses.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from cavmae.checkpoint import init_from_cavmae, init_from_mae, read_torch_file, save_pretrained, strip_prefix
from cavmae.checkpointing import (
    TrainState,
    fault_point,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from cavmae.config import Config, ConfigError
from cavmae.data.loader import loader_for
from cavmae.data.sampler import ShardedBatchSampler
from cavmae.data.synthetic import collate, synthetic_dataset
from cavmae.logging_utils import RunLogger, Throughput
from cavmae.optim import build_optimizer, build_scheduler
from cavmae.tasks import Task, get_task, local_contrast

log = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """The run stopped itself (too many non-finite steps in a row); a good checkpoint was written first."""


# ---------------------------------------------------------------------------------------------------------------
# the data source: the one place that decides where batches come from


def make_batches(
    cfg: Config, split: str, epoch: int = 0, rank: int = 0, world_size: int = 1, skip: int = 0
) -> Iterable[dict]:
    """This process's batches of ``split`` ("train" or "val") for ``epoch``, skipping the first ``skip``.

    Batches are dicts: ``audio`` [B, T, F], ``frames`` [B, 3, H, W], ``labels`` [B, C], ``keys`` (list[str]), on
    the CPU; the loop moves them to the device. Training batches hold data.batch_size clips and their order is a
    function of (train.seed, epoch); validation batches hold eval.batch_size clips in a fixed order, and every
    clip is seen once over all processes.
    """
    train = split == "train"
    if cfg.data.synthetic:
        ds = synthetic_dataset(cfg, split)
        sampler = ShardedBatchSampler(
            len(ds),
            cfg.data.batch_size if train else cfg.eval.batch_size,
            rank,
            world_size,
            seed=cfg.train.seed,
            epoch=epoch,
            shuffle=train,
            drop_last=train,
            start=skip,
        )
        # The loader gets its own generator: creating an iterator must not draw from the global RNG (exact resume).
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.data.num_workers,
            generator=torch.Generator().manual_seed(cfg.train.seed * 1009 + epoch),
        )
    shards = cfg.data.train_shards if train else cfg.data.val_shards
    if not shards:
        raise ConfigError(f"data.{split}_shards is empty and data.synthetic is false: no {split} data")
    # The shard loader splits shards by node and worker itself; it must not go through accelerator.prepare.
    loader = loader_for(cfg, shards, train=train, epoch=epoch, rank=rank, world_size=world_size)
    if not train:
        return loader
    return _exact_epoch(cfg, shards, loader, epoch, rank, world_size, skip)


def _exact_epoch(cfg: Config, shards, loader, epoch: int, rank: int, world: int, skip: int) -> Iterator[dict]:
    """Exactly ``batches_per_epoch`` training batches on every process (collectives need lockstep).

    A process whose shards run out first (shards of unequal size, corrupt samples skipped) tops up from another
    pass over its shards, seeded by (epoch, pass), and says so; the order stays a function of (seed, epoch), so
    skipping ``skip`` batches on resume lands on the same batch.
    """
    want = batches_per_epoch(cfg, world)
    passes = 0
    produced = 0
    while produced < want:
        for batch in loader:
            if produced >= skip:
                yield batch
            produced += 1
            if produced >= want:
                return
        passes += 1
        log.warning(
            "process %d: the shards ran out after %d of %d batches in epoch %d; topping up from pass %d "
            "(uneven shards or skipped samples; resampled shards avoid this)",
            rank,
            produced,
            want,
            epoch,
            passes,
        )
        loader = loader_for(cfg, shards, train=True, epoch=epoch + 1_000_003 * passes, rank=rank, world_size=world)
        if passes > 100:
            raise RuntimeError(f"process {rank}: the training shards yield no batch ({loader.errors.counts()})")


def batches_per_epoch(cfg: Config, world_size: int) -> int:
    """Training batches per process and epoch (the same on every process)."""
    if cfg.data.synthetic:
        return ShardedBatchSampler(cfg.data.synthetic_size, cfg.data.batch_size, 0, world_size).num_batches()
    samples = cfg.data.samples_per_epoch
    if samples <= 0:
        from cavmae.data.loader import expand_shards, shard_counts

        counts = shard_counts(expand_shards(cfg.data.train_shards))
        if not counts:
            raise ConfigError("data.samples_per_epoch must be set (> 0): the training shards have no manifest")
        samples = sum(counts.values())
    return samples // (cfg.data.batch_size * world_size)


def has_split(cfg: Config, split: str) -> bool:
    if cfg.data.synthetic:
        return split == "train" or cfg.data.synthetic_val_size > 0
    return bool(cfg.data.train_shards if split == "train" else cfg.data.val_shards)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------------
# setup helpers


def setup_accelerator(cfg: Config):
    """An Accelerator for this config. Under torchrun / accelerate launch it joins the process group (gloo on
    CPU with ACCELERATE_USE_CPU=1, NCCL on GPUs)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, TorchDynamoPlugin

    os.environ["WANDB_MODE"] = cfg.train.wandb_mode
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision=fp16 needs a CUDA device; use bf16 or no on the CPU")
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with="wandb" if cfg.train.wandb_mode != "disabled" else None,
        project_dir=cfg.train.out_dir,
        # Parameters that never receive a gradient are frozen before wrapping (freeze_unused), so DDP can skip
        # its per-step search for unused parameters.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        # Static shapes: every training batch has the same size (drop_last), and the masking code draws random
        # numbers with shapes that dynamic-shape tracing cannot handle.
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if cfg.train.compile else "no", dynamic=False),
        step_scheduler_with_optimizer=False,
    )


def release_accelerator(accelerator) -> None:
    """Finish trackers, destroy the process group (without it torchrun workers abort at exit) and forget
    Accelerate's process-wide state, so ``train`` can run again in the same process."""
    from accelerate.state import AcceleratorState, GradientState

    accelerator.end_training()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)  # python, numpy, torch, cuda
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def initialise(model: nn.Module, cfg: Config) -> None:
    """Load ``train.init`` (ImageNet MAE or any CAV-MAE checkpoint / model directory) into a fresh model."""
    path, fmt = cfg.train.init, cfg.train.init_format
    if not path:
        return
    if not Path(path).exists():
        raise ConfigError(f"train.init={path!r} does not exist")
    if fmt == "auto":
        if Path(path).is_dir():
            fmt = "cavmae"
        else:
            state = read_torch_file(path)
            state = strip_prefix(state.get("model", state))
            fmt = "mae" if "patch_embed.proj.weight" in state else "cavmae"
        log.info("train.init_format=auto: %s looks like a %s checkpoint", path, fmt)
    if fmt == "mae":
        init_from_mae(model, path)
    else:
        init_from_cavmae(model, path)


def rng_devices() -> list[int]:
    return [torch.cuda.current_device()] if torch.cuda.is_available() else []


def freeze_unused(model: nn.Module, task: Task, cfg: Config, device: torch.device) -> list[str]:
    """Freeze parameters that get no gradient from a task step (in CAV-MAE the audio / video norm pairs of the
    modality-specific and decoder blocks), so DDP needs no unused-parameter search. Returns their names."""
    with torch.random.fork_rng(devices=rng_devices()), local_contrast(model):
        out = task.step(model, task.example_batch(cfg, 2, device), cfg)
        out["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    if unused:
        log.info(
            "%d parameter tensors get no gradient in %s and are frozen (e.g. %s)", len(unused), task.name, unused[0]
        )
    return unused


# ---------------------------------------------------------------------------------------------------------------
# the loop


def train(cfg: Config, task: Task | None = None) -> Path:
    """Train (or resume) according to ``cfg``; returns the run directory. The final model is saved with
    save_pretrained in ``<out_dir>/model``. Raises :class:`TrainingStopped` after ``train.max_bad_steps``
    non-finite steps in a row (after writing a checkpoint of the last good weights)."""
    task = task or get_task(cfg.train.task)
    accelerator = setup_accelerator(cfg)
    try:
        return _train(cfg, task, accelerator)
    finally:
        release_accelerator(accelerator)


def _train(cfg: Config, task: Task, accelerator) -> Path:
    out_dir = Path(cfg.train.out_dir)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    t = cfg.train

    # -- resume or fresh start -------------------------------------------------------------------------------
    ckpt = resolve_resume(t.resume, out_dir)
    if ckpt is None and list_checkpoints(out_dir):
        raise ConfigError(
            f"train.out_dir={str(out_dir)!r} already holds checkpoints; continue that run with --resume auto "
            "(train.resume=auto) or choose another train.out_dir"
        )

    # -- model and optimizer ---------------------------------------------------------------------------------
    seed_everything(t.seed, t.deterministic)  # the same on every process: identical initial weights
    model = task.build_model(cfg)
    initialise(model, cfg)
    model.to(device)
    freeze_unused(model, task, cfg, device)
    if t.activation_checkpointing:
        if not hasattr(model, "set_activation_checkpointing"):
            raise ConfigError(f"train.activation_checkpointing: the {task.name} model does not support it")
        model.set_activation_checkpointing(True)
    optimizer = build_optimizer(model, cfg.optim, lambda name: task.lr_scale(name, cfg))
    accum = t.grad_accum
    epoch_batches = batches_per_epoch(cfg, world)
    steps_per_epoch = epoch_batches // accum
    if steps_per_epoch < 1:
        raise ConfigError(
            f"an epoch holds {epoch_batches} batches of {world} x data.batch_size={cfg.data.batch_size} clips, "
            f"fewer than train.grad_accum={accum}: more data or a smaller batch"
        )
    total = t.max_steps or t.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, total)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, optimizer = accelerator.prepare(model, optimizer)
    seed_everything(t.seed + rank, t.deterministic)  # different random masks on every process

    state = TrainState()
    if ckpt is not None:
        state = load_checkpoint(ckpt, accelerator, model, optimizer, scheduler, cfg)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    logger = RunLogger(accelerator, cfg, out_dir, total, state.step, resumed=ckpt is not None)
    contrast = cfg.data.batch_size * (world if t.global_contrast else 1)
    logger.message(
        f"run directory: {out_dir.resolve()} | {task.name}, {n_params / 1e6:.2f}M trainable parameters, "
        f"{world} process(es) on {device}, {total} steps ({steps_per_epoch}/epoch), "
        f"{cfg.data.batch_size * world * accum} clips per update, contrastive batch {contrast}"
    )

    def validate() -> None:
        if not has_split(cfg, "val"):
            return
        batches: Iterator[dict] = (to_device(b, device) for b in make_batches(cfg, "val", 0, rank, world))
        if t.val_batches:
            batches = itertools.islice(batches, t.val_batches)
        model.eval()
        with torch.random.fork_rng(devices=rng_devices()):
            torch.manual_seed(t.seed)  # the same masks at every validation: curves compare like with like
            metrics = task.evaluate(accelerator.unwrap_model(model), batches, accelerator, cfg)
        model.train()
        logger.val(state.step, state.epoch, metrics)

    def checkpoint() -> Path:
        return save_checkpoint(accelerator, out_dir, state, model, optimizer, scheduler, cfg, t.keep_last)

    if not has_split(cfg, "val"):
        logger.message("no validation data (data.val_shards is empty / data.synthetic_val_size=0): no validation")
    model.train()
    if t.val_at_start and state.step == 0:
        validate()
    meter = Throughput()
    batches: Iterator[dict] | None = None
    while state.step < total:
        if batches is None:
            batches = iter(make_batches(cfg, "train", state.epoch, rank, world, skip=state.batch_in_epoch))

        # -- one optimizer step: grad_accum micro-batches, gradients synchronised on the last one ----------------
        wait = 0.0
        sums: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                raise RuntimeError(
                    f"the training data of epoch {state.epoch} ended after {state.batch_in_epoch + micro} batches on "
                    f"process {rank}, {epoch_batches} expected: check data.samples_per_epoch"
                )
            batch = to_device(batch, device)
            wait += time.perf_counter() - t0
            sync = micro == accum - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                out = task.step(model, batch, cfg)
                accelerator.backward(out["loss"] / accum)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / accum
        # With clipping off the norm is still computed: it is logged and catches non-finite gradients.
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf)
        # One all-reduce: metrics averaged over processes; "nonfinite" > 0 if any process saw a bad loss.
        keys = sorted(sums)
        local = torch.stack([sums[k] for k in keys] + [(~torch.isfinite(sums["loss"])).float()])
        reduced = accelerator.reduce(local, reduction="mean").tolist()
        metrics = dict(zip(keys, reduced[:-1]))
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        # A non-finite loss (or gradient, without a loss scaler) skips the update; fp16's scaler skips its own.
        bad = reduced[-1] > 0 or (accelerator.scaler is None and not math.isfinite(grad_norm))
        lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["lr_scale"]
        if not bad or accelerator.scaler is not None:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        # -- bookkeeping ---------------------------------------------------------------------------------------
        state.step += 1
        state.batch_in_epoch += accum
        state.samples += accum * cfg.data.batch_size * world
        state.bad_in_row = state.bad_in_row + 1 if bad else 0
        state.bad_total += int(bad)
        meter.add(accum * cfg.data.batch_size * world, wait)
        metrics.update(lr=lr, grad_norm=grad_norm, bad_steps=state.bad_total)
        if bad:
            logger.message(
                f"step {state.step}: non-finite loss or gradient, update skipped ({state.bad_in_row} in a row)"
            )
        if state.step % t.log_every == 0 or state.step == total or bad:
            metrics["samples_per_s"], metrics["data_wait"] = meter.read()
            logger.train(state.step, state.epoch, metrics)
        logger.progress(state.step, metrics)
        if main and t.image_every and state.step % t.image_every == 0:
            fig = task.figure(
                accelerator.unwrap_model(model), batch, out_dir / "images" / f"step_{state.step:08d}.png", cfg
            )
            if fig is not None:
                logger.image(state.step, fig)

        epoch_done = state.batch_in_epoch + accum > steps_per_epoch * accum
        if epoch_done:
            if main:
                task.end_of_epoch(accelerator.unwrap_model(model), state.epoch, out_dir, cfg)
            state.epoch += 1
            state.batch_in_epoch = 0
            batches = None
        if epoch_done or state.step == total or (t.val_every and state.step % t.val_every == 0):
            validate()
        if state.step == total or (t.ckpt_every and state.step % t.ckpt_every == 0):
            checkpoint()
        fault_point("kill_after_step", state.step)
        if t.max_bad_steps and state.bad_in_row >= t.max_bad_steps:
            # Skipped steps never touched the weights: they are the last good ones. Save them, then stop.
            path = checkpoint()
            logger.close()
            raise TrainingStopped(
                f"stopping at step {state.step}: {state.bad_in_row} steps in a row had a non-finite loss or "
                f"gradient (train.max_bad_steps={t.max_bad_steps}); the last good weights are in {path}. Lower "
                "optim.lr, enable optim.grad_clip, or check the data."
            )

    logger.close()
    if main:
        task.finish(accelerator.unwrap_model(model), out_dir, cfg)
        save_pretrained(accelerator.unwrap_model(model), out_dir / "model", cfg)
    accelerator.wait_for_everyone()
    log.info(
        "finished %d steps; run directory %s (model: %s, metrics: %s)",
        state.step,
        out_dir.resolve(),
        (out_dir / "model").resolve(),
        (out_dir / "metrics.jsonl").resolve(),
    )
    return out_dir
