"""Where training and validation batches come from: learnable synthetic clips or the shard loader, with exactly
the same number of training batches on every process (collectives need lockstep) and an order that is a function
of (train.seed, epoch), so a resumed run lands on the same batch."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from cavmae.config import Config, ConfigError
from cavmae.data.loader import LoadErrors, SkipPastEnd, loader_for
from cavmae.data.random_batches import TenFrames, collate, synthetic_dataset
from cavmae.data.sampler import ShardedBatchSampler, batches_per_rank

log = logging.getLogger(__name__)


def make_batches(
    cfg: Config,
    split: str,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    skip: int = 0,
    frame_mode: str | None = None,
    errors: LoadErrors | None = None,
) -> Iterable[dict]:
    """This process's batches of ``split`` ("train" or "val") for ``epoch``, skipping the first ``skip``.

    Batches are dicts: ``audio`` [B, T, F], ``frames`` [B, 3, H, W], ``labels`` [B, C], ``keys`` (list[str]), on
    the CPU; the loop moves them to the device. Training batches hold data.batch_size clips and their order is a
    function of (train.seed, epoch); validation batches hold eval.batch_size clips in a fixed order, and every
    clip is seen once over all processes. ``frame_mode="all"`` (evaluation) gives frames [B, N, 3, H, W]
    (N = data.num_frames) and, with data.audio_window > 0, audio [B, N, T, F] (frame k's window at [:, k]);
    fine-tuning with ``finetune.head=attention`` gets that layout in training and validation alike.
    ``errors`` counts the samples the shard loader skips, by cause.
    """
    train = split == "train"
    if cfg.finetune is not None and cfg.finetune.head == "attention":
        frame_mode = "all"  # the attention head classifies whole clips: every frame with its window, in every pass
    if cfg.data.synthetic:
        ds = synthetic_dataset(cfg, split)
        if frame_mode == "all":
            ds = TenFrames(ds, cfg.data.num_frames, per_frame_audio=cfg.data.audio_window > 0)
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
    try:
        loader = loader_for(
            cfg,
            shards,
            train=train,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            frame_mode=frame_mode,
            errors=errors,
            skip=skip if train else 0,
        )
    except ConfigError:
        raise
    except ValueError as e:  # what the loader finds wrong in the data's set-up (class counts, missing manifests)
        raise ConfigError(f"data.{split}_shards: {e}") from e
    if not train:
        return loader
    return _exact_epoch(cfg, shards, loader, epoch, rank, world_size, skip)


def _exact_epoch(cfg: Config, shards, loader, epoch: int, rank: int, world: int, skip: int) -> Iterator[dict]:
    """Exactly ``batches_per_epoch`` training batches on every process (collectives need lockstep), after the
    first ``skip``.

    A process whose shards run out first (shards of unequal size, corrupt samples skipped) tops up from another
    pass over its shards, seeded by (epoch, pass), and says so; the order stays a function of (seed, epoch), so
    skipping ``skip`` batches on resume lands on the same batch. ``loader`` already leaves out the first ``skip``
    batches, undecoded (cavmae/data/loader.py); when this process's first pass holds fewer than ``skip`` batches
    the skipped batches are read and dropped instead, pass by pass.
    """
    want = batches_per_epoch(cfg, world)
    batches = _after_skip(loader, cfg.data.num_workers) if skip else iter(loader)
    if batches is None:
        log.warning(
            "process %d: its first pass of epoch %d holds fewer than the %d batches to skip; reading them to find "
            "the resume position",
            rank,
            epoch,
            skip,
        )
        loader = loader_for(cfg, shards, train=True, epoch=epoch, rank=rank, world_size=world, errors=loader.errors)
        batches, produced = iter(loader), 0
    else:
        produced = skip  # left out by the loader, undecoded
    pass_batches = produced  # batches of the current pass, skipped ones included
    passes = 0
    while produced < want:
        for batch in batches:
            if produced >= skip:
                yield batch
            produced += 1
            pass_batches += 1
            if produced >= want:
                return
        if pass_batches == 0:  # a whole pass gave nothing: no later pass will, say why now
            skipped = {cause: n for cause, n in loader.errors.counts().items() if n} or "none"
            raise ConfigError(
                f"data.train_shards: process {rank} read no batch of data.batch_size={cfg.data.batch_size} clips "
                f"from its shards in a whole pass (skipped samples by cause: {skipped}); check them with "
                "`cavmae verify-shards` or lower data.batch_size"
            )
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
        seed_epoch = epoch + 1_000_003 * passes
        loader = loader_for(
            cfg, shards, train=True, epoch=seed_epoch, rank=rank, world_size=world, errors=loader.errors
        )
        batches, pass_batches = iter(loader), 0


def _after_skip(loader, workers: int) -> Iterator[dict] | None:
    """The batches of ``loader`` (built with a skip), or None when one of its workers holds fewer samples than its
    share of the skip. Every worker makes one of the first ``workers`` batches (or ends), so whether one ran out
    while skipping is known once they have arrived, before any batch is handed on."""
    it = iter(loader)
    head = []
    try:
        for _ in range(max(1, workers)):
            batch = next(it, None)
            if batch is None:
                break
            head.append(batch)
    except SkipPastEnd:
        return None
    return itertools.chain(head, it)


def batches_per_epoch(cfg: Config, world_size: int) -> int:
    """Training batches per process and epoch (the same on every process): :func:`batches_per_rank` of the epoch's
    clips (synthetic training data always drops its last incomplete global batch)."""
    if cfg.data.synthetic:
        return batches_per_rank(cfg.data.synthetic_size, cfg.data.batch_size, world_size, drop_last=True)
    if not cfg.data.train_shards:
        raise ConfigError("data.train_shards is empty and data.synthetic is false: no training data")
    samples = cfg.data.samples_per_epoch
    if samples <= 0:
        from cavmae.data.loader import expand_shards, shard_counts

        try:
            urls = expand_shards(cfg.data.train_shards)
        except ValueError as e:  # a pattern that matches no file
            raise ConfigError(f"data.train_shards: {e}") from e
        counts = shard_counts(urls)
        if not counts:
            raise ConfigError("data.samples_per_epoch must be set (> 0): the training shards have no manifest")
        samples = sum(counts.values())
    return batches_per_rank(samples, cfg.data.batch_size, world_size, cfg.data.drop_last)


def has_split(cfg: Config, split: str) -> bool:
    if cfg.data.synthetic:
        return split == "train" or cfg.data.synthetic_val_size > 0
    return bool(cfg.data.train_shards if split == "train" else cfg.data.val_shards)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
