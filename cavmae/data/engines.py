"""Decoding engines for ``cavmae prepare`` beyond one machine: Ray (``pip install "cavmae[ray]"``).

:func:`cavmae.data.prepare.prepare_shards` packs decoded clips into shards in input order and records each finished
shard in its progress file (its "done" marker); an engine only decodes. :class:`RayEngine` sends one Ray task per
shard-sized block of inputs (``samples_per_shard`` clips: exactly one output shard's inputs when no clip fails)
to a local cluster (started by ``ray.init``) or an existing one (``address``), keeps about two tasks per CPU of
the cluster in flight and hands the results back in input order. The driver writes every shard, so the output
folder needs to be on the driver's disk only, and the shards and manifest are byte for byte those of the local
engine (the same packer sees the same results in the same order).

Failures: Ray reruns a task whose worker died (``max_retries``) or that raised (``retry_exceptions``); a block
that still fails is split into one task per clip (each retried the same way) so one bad file does not lose its
neighbours, and a clip whose task keeps failing lands in the manifest's ``failed`` list with the reason. A killed
driver loses only the shard being packed: the rerun resumes from the progress file, with either engine.

Ray is imported only when a RayEngine is used.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cavmae.data.prepare import PrepareOptions, process_clip
from cavmae.data.sources import ClipInput

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError('--engine ray needs the ray extra: pip install "cavmae[ray]"') from None
    return ray


def _decode_block(clip_fn: Callable, inputs: list[ClipInput], opts: PrepareOptions) -> list[tuple[bool, object]]:
    """The Ray task: process_clip's result for each input of a block (runs on a Ray worker)."""
    return [clip_fn(inp, opts) for inp in inputs]


class RayEngine:
    """``engine`` for :func:`cavmae.data.prepare.prepare_shards` that decodes on a Ray cluster.

    address: None starts a local cluster (``num_cpus`` CPUs, default all) unless Ray is already initialised in
    this process; "auto" or "host:port" joins an existing cluster. block_size: inputs per task (set to the
    prepare job's samples_per_shard by ``cavmae prepare``). max_retries: extra tries of a failed task.
    clip_fn: the per-clip function (process_clip; tests substitute one that fails).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        block_size: int = 1000,
        max_retries: int = 3,
        max_in_flight: int | None = None,
        clip_fn: Callable = process_clip,
        progress_every: float = 10.0,
    ):
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.address, self.num_cpus = address, num_cpus
        self.block_size, self.max_retries, self.max_in_flight = block_size, max_retries, max_in_flight
        self.clip_fn = clip_fn
        self.progress_every = progress_every
        self.ray = import_ray()

    def _init(self) -> int:
        """Connect (or start a local cluster); returns the cluster's CPU count."""
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                # workers of a cluster started here import this very cavmae (a source checkout need not be installed)
                root = str(Path(__file__).resolve().parents[2])
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
                ray.init(num_cpus=self.num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        log.info("ray: %d CPU(s) in the cluster", cpus)
        return cpus

    def __call__(self, inputs: list[ClipInput], opts: PrepareOptions) -> Iterator[tuple[bool, object]]:
        ray = self.ray
        cpus = self._init()
        task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=True)(_decode_block)
        blocks = [inputs[i : i + self.block_size] for i in range(0, len(inputs), self.block_size)]
        in_flight = self.max_in_flight or 2 * cpus
        pending: collections.deque = collections.deque()
        submitted = done = clips = 0
        start = last_report = time.perf_counter()
        while done < len(blocks):
            while submitted < len(blocks) and len(pending) < in_flight:
                pending.append(task.remote(self.clip_fn, blocks[submitted], opts))
                submitted += 1
            ref = pending.popleft()
            try:
                results = ray.get(ref)
            except Exception as e:  # RayTaskError / WorkerCrashedError / ... after max_retries
                log.warning(
                    "ray: a task over %d clip(s) failed after %d tries (%s); retrying its clips one by one",
                    len(blocks[done]),
                    self.max_retries + 1,
                    _reason(e),
                )
                results = self._one_by_one(task, blocks[done], opts)
            done += 1
            clips += len(results)
            now = time.perf_counter()
            if now - last_report >= self.progress_every or done == len(blocks):
                last_report = now
                log.info(
                    "ray: %d/%d shard tasks done, %d clips decoded, %.2f clips/s",
                    done,
                    len(blocks),
                    clips,
                    clips / max(now - start, 1e-9),
                )
            yield from results

    def _one_by_one(self, task, block: list[ClipInput], opts: PrepareOptions) -> list[tuple[bool, object]]:
        refs = [task.remote(self.clip_fn, [inp], opts) for inp in block]
        out = []
        for inp, ref in zip(block, refs):
            try:
                out.extend(self.ray.get(ref))
            except Exception as e:
                reason = f"ray task failed after {self.max_retries + 1} tries: {_reason(e)}"
                log.warning("%s: %s", inp.rel, reason)
                out.append((False, reason))
        return out


def _reason(e: BaseException) -> str:
    """One line for a Ray failure: the cause's type and message, without Ray's traceback."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
