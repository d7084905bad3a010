"""A batch sampler for map-style datasets whose order is a pure function of (seed, epoch): restorable, shardable.

Global batch i of an epoch holds positions [i*b*W, (i+1)*b*W) of a permutation seeded by (seed, epoch); rank r
takes rows [r*b, (r+1)*b) of it. So W ranks with batch b see exactly the clips of one process with batch W*b, in
the same order, and resuming at batch k of an epoch only needs (epoch, k): no sampler state, no RNG to restore.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def batches_per_rank(num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Batches each of ``world_size`` ranks yields from an epoch of ``num_samples`` clips in batches of
    ``batch_size``: the last incomplete global batch is dropped (``drop_last``) or kept. The one count of an epoch's
    batches: the sampler, the shard loader (resampled mode) and the training loop all use it."""
    per_step = batch_size * world_size
    return num_samples // per_step if drop_last else -(-num_samples // per_step)


class ShardedBatchSampler(Sampler[list[int]]):
    """Per-rank index batches. ``drop_last`` drops the last incomplete GLOBAL batch (training: every step has
    W*b clips, so the contrastive batch never changes size); without it the tail is split over the ranks as far
    as it goes (evaluation: every clip once; some ranks may get a smaller or no last batch). ``start`` skips that
    many batches (exact resume)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        start: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.epoch, self.shuffle, self.drop_last, self.start = seed, epoch, shuffle, drop_last, start

    def num_batches(self) -> int:
        """Batches in a whole epoch on every rank (with drop_last) or on rank 0 (without)."""
        return batches_per_rank(self.num_samples, self.batch_size, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return max(self.num_batches() - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        per_step = self.batch_size * self.world_size
        for i in range(self.start, self.num_batches()):
            chunk = order[i * per_step : (i + 1) * per_step]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            if mine:
                yield mine
