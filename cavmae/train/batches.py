"""Where training and validation batches come from: learnable synthetic clips or the shard loader, with exactly
the same number of training batches on every process (collectives need lockstep) and an order that is a function
of (train.seed, epoch), so a resumed run lands on the same batch."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from cavmae.config import Config, ConfigError
from cavmae.data.loader import LoadErrors, loader_for
from cavmae.data.random_batches import TenFrames, collate, synthetic_dataset
from cavmae.data.sampler import ShardedBatchSampler

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
    clip is seen once over all processes. ``frame_mode="all"`` (evaluation) gives frames [B, 10, 3, H, W].
    ``errors`` counts the samples the shard loader skips, by cause.
    """
    train = split == "train"
    if cfg.data.synthetic:
        ds = synthetic_dataset(cfg, split)
        if frame_mode == "all":
            ds = TenFrames(ds)
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
        )
    except ConfigError:
        raise
    except ValueError as e:  # what the loader finds wrong in the data's set-up (class counts, missing manifests)
        raise ConfigError(f"data.{split}_shards: {e}") from e
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
        before = produced
        for batch in loader:
            if produced >= skip:
                yield batch
            produced += 1
            if produced >= want:
                return
        if produced == before:  # a whole pass gave nothing: no later pass will, say why now
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


def batches_per_epoch(cfg: Config, world_size: int) -> int:
    """Training batches per process and epoch (the same on every process)."""
    if cfg.data.synthetic:
        return ShardedBatchSampler(cfg.data.synthetic_size, cfg.data.batch_size, 0, world_size).num_batches()
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
    return samples // (cfg.data.batch_size * world_size)


def has_split(cfg: Config, split: str) -> bool:
    if cfg.data.synthetic:
        return split == "train" or cfg.data.synthetic_val_size > 0
    return bool(cfg.data.train_shards if split == "train" else cfg.data.val_shards)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
