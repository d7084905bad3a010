"""The streaming loader: prepared shards -> batches of normalised fbank, frames and labels.

Used by pre-training, fine-tuning and retrieval through :func:`build_loader`. Each batch is a dict::

    "audio"    float32 [B, audio_length, num_mel_bins]  normalised Kaldi fbank (cavmae.data.fbank.wav_to_fbank)
               float32 [B, N, audio_length, num_mel_bins] with data.audio_window > 0 and frame_mode="all"
    "frames"   float32 [B, 3, image_size, image_size]   ImageNet-normalised RGB frame
               float32 [B, N, 3, image_size, image_size] with frame_mode="all" (N = data.num_frames, in order)
    "labels"   float32 [B, num_classes]  multi-hot (one-hot for single-label data); soft after mixup / smoothing
    "keys"     list[str]  sample keys (of the first clip when mixed)
    "weights"  float32 [B]  only with data.class_balanced and data.balance_mode="weights"

Audio-only shards and the one rule for shard sets that mix kinds: prepare writes audio-only samples (no frames)
for files without a video stream and the manifest names each shard's ``modalities`` (``["audio"]`` when a sample
in it has no frames). A loader is built with ``frames`` = whether its job looks at frames (:func:`loader_for`:
False exactly for fine-tuning with ``finetune.inputs=audio`` and for the audio-only evaluation modes).

- ``frames=True`` (pre-training, retrieval, audiovisual / video fine-tuning): every shard must hold frames; any
  shard whose manifest says ``["audio"]`` makes :func:`build_loader` raise :class:`AudioOnlyShardsError` naming
  them all, before any sample is read (a sample without frames in a shard without a manifest is skipped and
  counted under ``member``).
- ``frames=False`` (audio tasks): shards of both kinds are read, frames are never decoded, and batches hold no
  ``"frames"`` key.

Pipeline, per (rank, worker): shard list (brace patterns, several sources) -> shards of this rank and worker
(``urls[rank::world][worker::workers]``; in training the list is first shuffled identically on every rank with
(seed, epoch)) or, with ``resampled``, shards drawn with replacement until the epoch's sample count -> tar samples ->
member pruning (only the chosen frame's JPEG is kept) and class-balance resampling -> shuffle buffer (training) ->
decode (WAV/FLAC, or MP4 via cavmae.data.media; JPEG strictly via simplejpeg) -> per-batch: mixup, fbank,
SpecAugment, normalisation, noise + time roll, label smoothing -> batch.

Audio windows (CAV-MAE Sync, ``data.audio_window`` = L = audio_length > 0): the audio of a clip is the L fbank
frames centred on its chosen frame k (cavmae.data.windows.frame_audio_window: the clip padded or cut to 1024 frames,
pos = round(k * 1024 / N)), computed from the waveform samples those frames read only. Training draws k at random
(or the middle one, data.frame_mode); validation uses the middle frame N // 2; frame_mode="all" (evaluation) gives
every frame with its own window, frames[:, k] paired with audio[:, k]. Without a window (CAV-MAE) the audio is the
whole clip and stays [B, audio_length, F] in every mode.

Every random choice of a sample (frame, mixup partner and weight, masks, noise, roll) comes from a generator seeded
with (seed, epoch, sample key, copy), and the shard order and shuffle buffers from (seed, epoch, rank, worker), so a
run is reproducible for a given seed, world size and worker count.

Class balance (AudioSet-2M / VGGSound recipes): a sample's weight is the sum over its labels of 1 / label count
(counts from the shard manifests), scaled to mean 1 over the dataset; CAV-MAE draws samples with probability
proportional to it. Streaming tars cannot be sampled at random, so ``balance_mode="resample"`` (default) emits each
sample floor(w) or floor(w) + 1 times (probability frac(w)) before the shuffle buffer, which matches the sampler's
expected sample frequencies; ``"weights"`` leaves the stream alone and puts ``weights`` in the batch for a
weighted loss instead.

Bad samples are skipped and counted in :class:`LoadErrors` (``loader.errors.counts()``), shared by all worker
processes; the first error of each kind is logged once. The epoch goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cavmae.config import DataConfig
from cavmae.data.labels import LabelIndex
from cavmae.data.sampler import batches_per_rank
from cavmae.data.samples import Decoded, LoaderSettings, SampleError, collate, decode, prune, stable_seed
from cavmae.data.shards import expand_shards, iter_shard, manifest_path

log = logging.getLogger(__name__)

ERROR_KINDS = ("shard", "member", "json", "audio", "image", "video", "labels")


class AudioOnlyShardsError(ValueError):
    """Shards without frames given to a job that needs them (see the module docstring)."""


def audio_only_shards(urls: list[str]) -> list[str]:
    """The shards whose manifest says they hold audio only (``"modalities": ["audio"]``); shards without a manifest
    entry, or of a manifest written before modalities were recorded, are taken as audio-visual."""
    kinds: dict[str, list[str]] = {}
    for p, m in _manifests(urls).items():
        for sh in m.get("shards", []):
            kinds[str(p.parent / sh["file"])] = sh.get("modalities", ["audio", "video"])
    return [u for u in urls if "video" not in kinds.get(str(Path(u)), ["video"])]


class LoadErrors:
    """Skipped-sample counts per kind of error, shared by the loader's worker processes (shared memory).

    Kinds (the cause of a skip): ``shard`` (a shard that cannot be opened, is empty, cut short or has a damaged
    tar header: each one is logged with its URL), ``member`` (a sample without its json / audio / chosen frame,
    or with a repeated member), ``json``, ``audio``, ``image`` (a JPEG that does not decode strictly), ``video``
    (a raw .mp4 member), ``labels``. Counts are cumulative; :meth:`since` gives those of one epoch.
    """

    def __init__(self) -> None:
        self._counts = multiprocessing.get_context().Array("q", len(ERROR_KINDS))

    def add(self, kind: str, message: str) -> None:
        i = ERROR_KINDS.index(kind)
        with self._counts.get_lock():
            self._counts[i] += 1
            first = self._counts[i] == 1
        if kind == "shard":  # few and worth naming each: a damaged or missing file
            log.warning("bad shard: %s", message)
        elif first:
            log.warning("skipped a bad sample [%s]: %s (further [%s] errors are only counted)", kind, message, kind)
        else:
            log.debug("skipped a bad sample [%s]: %s", kind, message)

    def counts(self) -> dict[str, int]:
        with self._counts.get_lock():
            return {k: int(v) for k, v in zip(ERROR_KINDS, self._counts)}

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """Counts added after `before` (an earlier :meth:`counts`): the skips of one epoch, by cause."""
        now = self.counts()
        return {k: now[k] - before.get(k, 0) for k in ERROR_KINDS}

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def reset(self) -> None:
        with self._counts.get_lock():
            for i in range(len(ERROR_KINDS)):
                self._counts[i] = 0


# ---------------------------------------------------------------------------------------------------------------
# the stream


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def tar_samples(errors: LoadErrors) -> Callable[[Iterable[dict]], Iterator[dict]]:
    """WebDataset stage: shard dicts ``{"url": ...}`` -> samples, by :func:`cavmae.data.shards.iter_shard`.

    Our own stage rather than ``wds.tarfile_to_samples`` because it expands prepare's shards (12 members per
    sample) in less CPU time (``scripts/bench_data.py --tar``; measured: scripts/results/README.md) and counts and
    names every fault (empty shards, damaged headers with resynchronisation) in `errors`.
    """

    def stage(shards: Iterable[dict]) -> Iterator[dict]:
        for shard in shards:
            yield from iter_shard(shard["url"], errors.add)

    return stage


def prune_samples(s: LoaderSettings, epoch: int, errors: LoadErrors) -> Callable[[Iterable[dict]], Iterator]:
    """WebDataset stage: samples -> pruned items (json parsed, the chosen frame's JPEG only, balance copies)."""

    def stage(samples: Iterable[dict]) -> Iterator:
        for sample in samples:
            try:
                yield from prune(sample, s, epoch)
            except SampleError as e:
                errors.add(e.kind, str(e))

    return stage


class SkipPastEnd(RuntimeError):
    """A worker's stream ended before the batches it was asked to skip (the pass holds fewer batches than the
    resume position)."""


def skip_items(count: int) -> Callable[[Iterable], Iterator]:
    """WebDataset stage: drops the first ``count`` pruned items, undecoded (resuming inside an epoch); raises
    :class:`SkipPastEnd` when the stream ends first."""

    def stage(items: Iterable) -> Iterator:
        it = iter(items)
        for dropped in range(count):
            if next(it, None) is None:
                raise SkipPastEnd(f"the stream ended after {dropped} of the {count} samples to skip")
        yield from it

    return stage


def decode_samples(s: LoaderSettings, epoch: int, errors: LoadErrors) -> Callable[[Iterable], Iterator[Decoded]]:
    """WebDataset stage: pruned items -> decoded samples (waveform, frames); bad ones are counted and skipped."""

    def stage(items: Iterable) -> Iterator[Decoded]:
        for item in items:
            try:
                yield decode(item, s, epoch)
            except SampleError as e:
                errors.add(e.kind, str(e))

    return stage


class ShardDataset(IterableDataset):
    """Iterable over batches (dicts) of one rank's share of the shards: a ``wds.DataPipeline`` per worker.

    Stages (see :meth:`pipeline`): ``wds.SimpleShardList`` (shuffled with (seed, epoch) in training) then
    ``wds.slice(rank, None, world)`` and ``wds.slice(worker, None, workers)``, or ``wds.ResampledShards`` seeded by
    (seed, epoch, rank, worker); :func:`tar_samples`; :func:`prune_samples`; ``wds.shuffle`` seeded by (seed,
    epoch, rank, worker) (training); :func:`skip_items` (resuming); :func:`decode_samples`; ``wds.batched`` with
    :func:`collate`; in resampled mode ``wds.slice`` to this worker's share of the epoch's batches. The rank is
    resolved in the main process (``wds.split_by_node`` would look it up in the worker, which may not see the
    process group) and passed in.

    Skipping (``skip`` batches, exact resume): the DataLoader takes batches from its workers in turn, batch j from
    worker j % W, so worker w made skip // W + (w < skip % W) of the first ``skip`` batches; each drops that many
    batches' samples before decoding them, and DataLoader worker i plays worker (i + skip) % W, so the first batch
    comes from the worker whose turn it was. The batches after the skip are those an unskipped pass yields after
    its first ``skip``, provided no skipped sample fails to decode (a failure there shifts that worker's batches
    by one sample) and every worker has its share of the skipped batches (otherwise the first round raises
    :class:`SkipPastEnd`).
    """

    def __init__(
        self, urls: list[str], settings: LoaderSettings, errors: LoadErrors, rank: int | None, world_size: int | None
    ):
        super().__init__()
        self.urls = urls
        self.settings = settings
        self.errors = errors
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0  # batches of this rank's epoch to skip (resume)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_seed(self) -> int | None:
        return stable_seed(self.settings.seed, self.epoch, "shards") if self.settings.train else None

    def shards_for(self, rank: int, world: int, worker: int, workers: int) -> list[str]:
        """Non-resampled mode: the shards one (rank, worker) reads this epoch (what the pipeline's first three
        stages give; used to count the batches)."""
        urls = list(self.urls)
        seed = self._shard_seed()
        if seed is not None:
            random.Random(seed).shuffle(urls)  # what wds.SimpleShardList(urls, seed=seed) does
        return urls[rank::world][worker::workers]

    def pipeline(self, rank: int, world: int, worker: int, workers: int) -> wds.DataPipeline:
        """The stages of one (rank, worker) for the current epoch, as a ``wds.DataPipeline``."""
        s, epoch = self.settings, self.epoch
        if s.resampled:
            seed = stable_seed(s.seed, epoch, rank, worker, "resample")
            stages: list = [wds.ResampledShards(self.urls, worker_seed=lambda: seed, deterministic=True)]
        else:
            stages = [wds.SimpleShardList(self.urls, seed=self._shard_seed()), wds.slice(rank, None, world)]
            stages.append(wds.slice(worker, None, workers))  # wds.split_by_worker, for the worker given
        stages += [tar_samples(self.errors), prune_samples(s, epoch, self.errors)]
        if s.train and s.shuffle_buffer > 1:
            rng = random.Random(stable_seed(s.seed, epoch, rank, worker, "buf"))
            stages.append(wds.shuffle(s.shuffle_buffer, initial=s.shuffle_buffer, rng=rng))
        skipped = self.skip // workers + (worker < self.skip % workers)  # this worker's share of the skip
        if skipped:
            stages.append(skip_items(skipped * s.batch_size))
        stages.append(decode_samples(s, epoch, self.errors))
        stages.append(
            wds.batched(
                s.batch_size, collation_fn=functools.partial(collate, s=s), partial=not (s.train and s.drop_last)
            )
        )
        if s.resampled:  # this worker's share of the rank's batches
            share = s.batches_per_rank // workers + (worker < s.batches_per_rank % workers)
            stages.append(wds.slice(max(share - skipped, 0)))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world(self.rank, self.world_size)
        # DataLoader worker i plays worker (i + skip) % W: the batch after the skip comes first (see above)
        return iter(self.pipeline(rank, world, (loader_worker + self.skip) % workers, workers))


# ---------------------------------------------------------------------------------------------------------------
# manifests and the public entry point


def _manifests(urls: list[str]) -> dict[Path, dict]:
    found: dict[Path, dict] = {}
    for url in urls:
        p = manifest_path(url)
        if p is not None and p not in found and p.is_file():
            found[p] = json.loads(p.read_text())
    return found


def check_frame_counts(urls: list[str], num_frames: int) -> None:
    """ValueError naming the first shard whose manifest says it holds another number of frames per clip than
    `num_frames` (``options.num_frames``; 10 in manifests older than ``--frames``). Shards without a manifest are
    checked sample by sample (cavmae.data.samples.prune)."""
    for path, manifest in _manifests(urls).items():
        held = int((manifest.get("options") or {}).get("num_frames") or 10)
        if held != num_frames:
            shard = next(u for u in urls if manifest_path(u) == path)
            raise ValueError(
                f"{shard} holds {held} frames per clip ({path}) but data.num_frames is {num_frames}: prepare the "
                f"shards with --frames {num_frames}, or set data.num_frames={held}"
            )


def manifest_frame_count(urls: list[str]) -> int | None:
    """Frames per clip that the manifests of `urls` say the shards hold (``options.num_frames``; 10 in manifests
    older than ``--frames``); None when no shard has a manifest. ValueError when the manifests disagree: one
    evaluation pass embeds one frame count."""
    held = {int((m.get("options") or {}).get("num_frames") or 10): p for p, m in _manifests(urls).items()}
    if len(held) > 1:
        found = ", ".join(f"{n} ({p})" for n, p in sorted(held.items()))
        raise ValueError(f"the shards hold different numbers of frames per clip: {found}; evaluate them separately")
    return next(iter(held), None)


def shard_counts(urls: list[str]) -> dict[str, int] | None:
    """Samples per shard URL from the manifests beside the shards; None when a shard has no manifest entry."""
    manifests = _manifests(urls)
    by_file = {}
    for p, m in manifests.items():
        for sh in m.get("shards", []):
            by_file[str(p.parent / sh["file"])] = sh["count"]
    counts = {}
    for url in urls:
        key = str(Path(url))
        if key not in by_file:
            return None
        counts[url] = by_file[key]
    return counts


def class_weights(urls: list[str], num_classes: int, label_index: LabelIndex | None = None) -> np.ndarray:
    """Weight of one occurrence of each class, 1 / count scaled so that the mean sample weight is 1.

    Counts come from the manifests of the shards (summed over sources; mapped by mid through `label_index` when
    given, else the manifests must share one label index).
    """
    manifests = _manifests(urls)
    if not manifests:
        raise ValueError(f"class balancing needs the shard manifests (<name>-manifest.json beside {urls[0]})")
    counts = np.zeros(num_classes, dtype=np.float64)
    total = 0
    reference = None
    for p, m in manifests.items():
        total += m["num_samples"]
        records = m.get("label_index") or []
        if label_index is not None:
            for r, c in zip(records, m.get("label_counts", [])):
                i = label_index.get(r["mid"])
                if i is not None and i < num_classes:
                    counts[i] += c
            continue
        if reference is None:
            reference = records
        elif records != reference:
            raise ValueError(f"{p} has another label index than the other sources; set data.label_csv")
        for i, c in enumerate(m.get("label_counts", [])[:num_classes]):
            counts[i] += c
    present = counts > 0
    if not present.any():
        raise ValueError("class balancing: the manifests hold no label counts (unlabelled data?)")
    # sum over samples of sum over their labels of 1/count = number of present classes; scale to mean 1
    out = np.zeros(num_classes)
    out[present] = total / (present.sum() * counts[present])
    return out


class ShardLoader:
    """Iterable over batches; wraps a torch DataLoader over a :class:`ShardDataset`.

    ``errors``: the :class:`LoadErrors` counters; ``set_epoch(e)`` reshuffles for the next ``iter()``;
    ``len()`` is the number of batches this rank yields per epoch, skipped ones included (exact in resampled mode;
    from the manifests' counts otherwise, before skipped samples and class-balance copies); ``num_samples`` the
    samples of all shards.
    """

    def __init__(self, dataset: ShardDataset, num_workers: int, counts: dict[str, int] | None):
        self.dataset = dataset
        self.errors = dataset.errors
        self.num_workers = num_workers
        self._counts = counts
        self.num_samples = sum(counts.values()) if counts else None
        self._loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,  # workers are re-forked each epoch, so they see set_epoch()
            prefetch_factor=4 if num_workers > 0 else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._loader)

    def __len__(self) -> int:
        s = self.dataset.settings
        if s.resampled:
            return s.batches_per_rank
        if self._counts is None:
            raise TypeError("number of batches unknown: the shards have no manifest")
        rank, world = _rank_world(self.dataset.rank, self.dataset.world_size)
        workers = max(1, self.num_workers)
        total = 0
        for w in range(workers):
            n = sum(self._counts[u] for u in self.dataset.shards_for(rank, world, w, workers))
            total += batches_per_rank(n, s.batch_size, 1, drop_last=s.train and s.drop_last)
        return total


def build_loader(
    data_cfg: DataConfig,
    shards: str | Sequence[str],
    *,
    audio_length: int = 1024,
    num_mel_bins: int = 128,
    image_size: int = 224,
    num_classes: int = 527,
    train: bool,
    frame_mode: str | None = None,
    seed: int = 0,
    epoch: int = 0,
    batch_size: int | None = None,
    num_workers: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    errors: LoadErrors | None = None,
    skip: int = 0,
    frames: bool = True,
) -> ShardLoader:
    """A loader of batches (see the module docstring) over `shards` (brace patterns / lists / '::'-joined sources).

    frames: whether batches hold frames; True raises :class:`AudioOnlyShardsError` when a shard is audio only, False
    reads shards of both kinds and leaves the frames out (the rule in the module docstring).

    train: shuffling and the augmentations of `data_cfg` (noise, time_roll, freqm, timem, mixup, label_smoothing,
    class balance) are on only when True. frame_mode: "random" | "middle" | "all" (every frame, evaluation);
    default ``data_cfg.frame_mode`` ("random" | "middle") when training and "middle" otherwise. batch_size /
    num_workers default to `data_cfg`. rank / world_size default to torch.distributed's when it is initialised,
    else 0 / 1. errors: the :class:`LoadErrors` to count skips in (several loaders may share one, e.g. the passes
    of one epoch); a new one by default. skip: batches of the epoch to leave out, dropped before their samples are
    decoded (resuming; see :class:`ShardDataset`).
    """
    bs = batch_size or data_cfg.batch_size
    if data_cfg.frame_mode not in ("random", "middle"):
        raise ValueError(
            f"data.frame_mode must be 'random' or 'middle' (one training frame per clip), got {data_cfg.frame_mode!r}"
        )
    if frame_mode is None:
        frame_mode = data_cfg.frame_mode if train else "middle"
    if frame_mode not in ("random", "middle", "all"):
        raise ValueError(f"frame_mode must be 'random', 'middle' or 'all', got {frame_mode!r}")
    if data_cfg.audio_window and data_cfg.audio_window != audio_length:
        raise ValueError(
            f"data.audio_window ({data_cfg.audio_window}) must equal the model's audio length ({audio_length}) "
            "or be 0 (the whole clip)"
        )
    urls = expand_shards(shards)
    if not urls:
        raise ValueError("no shards given (data.train_shards / data.val_shards are empty)")
    check_frame_counts(urls, data_cfg.num_frames)
    if frames:
        audio_only = audio_only_shards(urls)
        if audio_only:
            shown = ", ".join(audio_only[:5]) + (" ..." if len(audio_only) > 5 else "")
            raise AudioOnlyShardsError(
                f"{len(audio_only)} shard(s) hold audio only (their manifest says modalities ['audio']) but this job "
                f"needs frames: {shown}. Audio-only shards serve audio tasks only (fine-tuning or evaluating with "
                "finetune.inputs=audio); pre-training, retrieval and audiovisual / video classification need "
                "audio-visual shards"
            )
    workers = data_cfg.num_workers if num_workers is None else num_workers
    label_index = LabelIndex.from_csv(data_cfg.label_csv) if data_cfg.label_csv else None
    if label_index is not None and len(label_index) > num_classes:
        raise ValueError(f"{data_cfg.label_csv} has {len(label_index)} classes but num_classes is {num_classes}")
    balance = (data_cfg.balance_mode if data_cfg.class_balanced else "") if train else ""
    if label_index is None:
        for path, manifest in _manifests(urls).items():
            if len(manifest.get("label_index") or []) > num_classes:
                raise ValueError(
                    f"{path} has {len(manifest['label_index'])} classes but num_classes is {num_classes} "
                    "(set model.num_classes, or data.label_csv to map the labels)"
                )
    counts = shard_counts(urls)
    r, world = _rank_world(rank, world_size)
    batches = 0
    if data_cfg.resampled:
        total = data_cfg.samples_per_epoch or (sum(counts.values()) if counts else 0)
        if not total:
            raise ValueError("resampled shards need data.samples_per_epoch (no manifests to count the samples)")
        batches = batches_per_rank(total, bs, world, drop_last=train and data_cfg.drop_last)
    elif len(urls) < world * max(1, workers):
        log.warning(
            "%d shard(s) for %d rank(s) x %d worker(s): some workers get no shard (split shards finer)",
            len(urls),
            world,
            max(1, workers),
        )
    settings = LoaderSettings(
        audio_length=audio_length,
        num_mel_bins=num_mel_bins,
        image_size=image_size,
        num_classes=num_classes,
        train=train,
        frame_mode=frame_mode,
        seed=seed,
        batch_size=bs,
        drop_last=data_cfg.drop_last,
        shuffle_buffer=data_cfg.shuffle_buffer,
        resampled=data_cfg.resampled,
        batches_per_rank=batches,
        noise=data_cfg.noise,
        time_roll=data_cfg.time_roll,
        freqm=data_cfg.freqm,
        timem=data_cfg.timem,
        mixup=data_cfg.mixup,
        mixup_alpha=data_cfg.mixup_alpha,
        label_smoothing=data_cfg.label_smoothing,
        fbank_mean=data_cfg.fbank_mean,
        fbank_std=data_cfg.fbank_std,
        balance=balance,
        class_weights=class_weights(urls, num_classes, label_index) if balance else None,
        label_lookup=label_index.lookup() if label_index is not None else None,
        audio_channel=data_cfg.audio_channel,
        num_frames=data_cfg.num_frames,
        audio_window=data_cfg.audio_window,
        clip_fbank_frames=data_cfg.clip_fbank_frames,
        frames=frames,
    )
    dataset = ShardDataset(urls, settings, errors or LoadErrors(), r, world)  # resolved here: workers may not see dist
    dataset.set_epoch(epoch)
    dataset.skip = skip
    return ShardLoader(dataset, workers, counts)


def loader_for(
    cfg,
    shards: str | Sequence[str],
    *,
    train: bool,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    frame_mode: str | None = None,
    errors: LoadErrors | None = None,
    skip: int = 0,
    frames: bool | None = None,
) -> ShardLoader:
    """:func:`build_loader` with the input sizes of ``cfg.model`` and the batch size of the job: ``data.batch_size``
    for training, ``eval.batch_size`` otherwise. ``cfg`` is a :class:`cavmae.config.Config`. ``frames`` defaults to
    what the job looks at: False for fine-tuning with ``finetune.inputs=audio``, True otherwise."""
    m = cfg.model
    if frames is None:
        frames = cfg.finetune is None or cfg.finetune.inputs != "audio"
    return build_loader(
        cfg.data,
        shards,
        audio_length=m.audio_length,
        num_mel_bins=m.num_mel_bins,
        image_size=m.image_size,
        num_classes=m.num_classes,
        train=train,
        frame_mode=frame_mode,
        seed=cfg.train.seed,
        epoch=epoch,
        batch_size=cfg.data.batch_size if train else cfg.eval.batch_size,
        rank=rank,
        world_size=world_size,
        errors=errors,
        skip=skip,
        frames=frames,
    )
