"""Per-sample and per-batch work of the loader: pruning, decoding, mixup, fbank, augmentations, collation.

Runs inside the DataLoader workers. A raw sample (tar members as bytes) is first pruned to what will be decoded (the
json, the audio member, the chosen frame's JPEG) so that the shuffle buffer stays small, then decoded (16 kHz
waveform with the DC offset of the whole clip removed, uint8 frames resized and centre-cropped), and a batch of
decoded samples becomes tensors in :func:`collate` (mixup on waveforms, fbank per sample, SpecAugment on the
unnormalised fbank, normalisation, noise and time roll, label smoothing), as CAV-MAE's dataloader orders them.
Bad data raises :class:`SampleError` with the kind under which the loader counts it.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from cavmae.data.fbank import (
    SAMPLE_RATE,
    add_noise,
    normalize_fbank,
    samples_for_frames,
    spec_augment,
    time_roll,
)
from cavmae.data.shards import AUDIO_MEMBERS
from cavmae.data.windows import CLIP_FBANK_FRAMES, frame_audio_window, window_fbank

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (x / 255 - mean) / std == x * _PIXEL_SCALE - _PIXEL_SHIFT: one multiply and one subtract per pixel, [3, 1, 1]
_PIXEL_SCALE = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(3, 1, 1))
_PIXEL_SHIFT = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


class SampleError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class LoaderSettings:
    """Everything a worker needs to turn samples into batches (picklable)."""

    audio_length: int
    num_mel_bins: int
    image_size: int
    num_classes: int
    train: bool
    frame_mode: str
    seed: int
    batch_size: int
    drop_last: bool
    shuffle_buffer: int
    resampled: bool
    batches_per_rank: int = 0  # resampled mode: batches each rank yields per epoch
    noise: bool = False
    time_roll: bool = False
    freqm: int = 0
    timem: int = 0
    mixup: float = 0.0
    mixup_alpha: float = 10.0
    label_smoothing: float = 0.0
    fbank_mean: float = -5.081
    fbank_std: float = 4.4849
    balance: str = ""  # "", "resample" or "weights"
    class_weights: np.ndarray | None = None  # [num_classes] weight of one label occurrence (mean sample weight 1)
    label_lookup: dict[str, int] | None = None  # label mid / name -> index, when a label CSV overrides the shards'
    audio_channel: str = "first"  # audio of raw .mp4 / multi-channel members: "first" or "mean" (cavmae.data.media)
    num_frames: int = 10  # frames per clip every sample must hold (data.num_frames)
    audio_window: int = 0  # data.audio_window: > 0 = audio_length fbank frames around each chosen frame (Sync)
    clip_fbank_frames: int = CLIP_FBANK_FRAMES  # data.clip_fbank_frames: the padded clip the windows are cut from
    frames: bool = True  # False: audio only, frames never decoded and no "frames" in the batch (cavmae.data.loader)


def stable_seed(*parts) -> int:
    """A stable 63-bit seed from its parts (Python's hash() is salted per process; this is not)."""
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "little") >> 1


# ---------------------------------------------------------------------------------------------------------------
# sample decoding


@dataclass
class Item:
    """A pruned sample: what the shuffle buffer holds (undecoded bytes: ~330 KB of 10 s WAV + one JPEG)."""

    key: str
    meta: dict
    audio: tuple[str, bytes] | None
    frames: list[tuple[int, bytes | None]]  # (frame index, JPEG bytes or None = decode from the mp4)
    mp4: bytes | None
    labels: list[int]
    weight: float
    copy: int = 0


def _labels(meta: dict, s: LoaderSettings) -> list[int]:
    if s.label_lookup is not None:
        names = meta.get("labels") or []
        unknown = [n for n in names if n not in s.label_lookup]
        if unknown:
            raise SampleError("labels", f"labels {unknown} are not in the label CSV")
        idx = [s.label_lookup[n] for n in names]
    else:
        idx = meta.get("label_indices") or []
    bad = [i for i in idx if not (isinstance(i, int) and 0 <= i < s.num_classes)]
    if bad:
        raise SampleError("labels", f"label indices {bad} outside [0, {s.num_classes})")
    return idx


def prune(sample: dict, s: LoaderSettings, epoch: int) -> list[Item]:
    """Parse the json, pick the frame(s), keep only the members that will be decoded; balance copies."""
    key = sample["__key__"]
    if "json" not in sample:
        raise SampleError("member", f"{sample['__url__']}: sample {key} has no .json member")
    try:
        meta = json.loads(sample["json"])
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise SampleError("json", f"{sample['__url__']}: sample {key}: bad json ({e})") from None
    audio = next(((ext, sample[ext]) for ext in AUDIO_MEMBERS if ext in sample), None)
    mp4 = sample.get("mp4")
    if audio is None and mp4 is None:
        raise SampleError("member", f"{sample['__url__']}: sample {key} has no audio (.wav/.flac) and no .mp4")
    labels = _labels(meta, s)
    weight = 1.0
    if s.class_weights is not None and labels:
        weight = float(sum(s.class_weights[i] for i in labels))
    copies = 1
    if s.train and s.balance == "resample":
        rng = random.Random(stable_seed(s.seed, epoch, key, "balance"))
        copies = int(weight) + (rng.random() < weight - int(weight))
    if s.frames and meta.get("modalities") == ["audio"]:
        raise SampleError("member", f"{sample['__url__']}: sample {key} is audio only but frames are needed")
    audio_only = meta.get("modalities") == ["audio"]
    num_frames = int(meta.get("num_frames") or 10)
    # a shard prepared for another model: an error, not a skipped sample (audio-only samples hold no frames)
    if not audio_only and num_frames != s.num_frames:
        raise ValueError(
            f"{sample['__url__']}: sample {key} holds {num_frames} frames per clip but data.num_frames is "
            f"{s.num_frames} (prepare the shards with --frames {s.num_frames}, or set data.num_frames={num_frames})"
        )
    out = []
    for c in range(copies):
        if not s.frames:
            chosen = []
        elif s.frame_mode == "all":
            chosen = list(range(num_frames))
        elif s.frame_mode == "middle":
            chosen = [num_frames // 2]
        else:
            chosen = [random.Random(stable_seed(s.seed, epoch, key, c, "frame")).randrange(num_frames)]
        frames = []
        for i in chosen:
            jpg = sample.get(f"f{i}.jpg")
            if jpg is None and mp4 is None:
                raise SampleError("member", f"{sample['__url__']}: sample {key} has no frame f{i}.jpg and no .mp4")
            frames.append((i, jpg))
        out.append(Item(key, meta, audio, frames, mp4, labels, weight if s.balance == "weights" else 1.0, c))
    return out


def _wav_pcm16(data: bytes) -> np.ndarray | None:
    """Samples of a canonical 16-bit PCM mono 16 kHz WAV as float32 (fast path), or None for anything else."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt_ok = 12, False
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            tag, ch, rate = (int.from_bytes(data[body + a : body + b], "little") for a, b in ((0, 2), (2, 4), (4, 8)))
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            fmt_ok = tag == 1 and ch == 1 and rate == SAMPLE_RATE and bits == 16
        elif cid == b"data":
            if not fmt_ok:
                return None
            n = min(size, len(data) - body) // 2
            return np.frombuffer(data, dtype="<i2", count=n, offset=body).astype(np.float32) * np.float32(1 / 32768)
        pos = body + size + (size & 1)
    return None


def _decode_audio(item: Item, s: LoaderSettings) -> torch.Tensor:
    """float32 [N] 16 kHz mono waveform of the sample.

    Stored audio is 16 kHz mono (prepare writes it so) and is read directly; anything else (another rate, several
    channels) and raw .mp4 members go through prepare's reader (cavmae.data.media.read_audio), with the channel
    choice ``s.audio_channel``.
    """
    from cavmae.data.media import MediaError, read_audio

    if item.audio is not None:
        ext, data = item.audio
        try:
            wave = _wav_pcm16(data) if ext == "wav" else None
            if wave is None:
                import soundfile as sf

                with sf.SoundFile(io.BytesIO(data)) as f:
                    plain = f.samplerate == SAMPLE_RATE and f.channels == 1
                    wave = f.read(dtype="float32", always_2d=True)[:, 0] if plain else None
            if wave is None:
                wave = read_audio(data, channel=s.audio_channel)
        except (MediaError, RuntimeError, ValueError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
            reason = e.reason if isinstance(e, MediaError) else str(e)
            raise SampleError("audio", f"sample {item.key}: undecodable .{ext} ({reason})") from None
        return torch.from_numpy(np.ascontiguousarray(wave))
    try:
        end = item.meta.get("clip_end")
        start = float(item.meta.get("clip_start") or 0.0)
        return torch.from_numpy(read_audio(item.mp4, start, end, channel=s.audio_channel))
    except MediaError as e:
        raise SampleError("video", f"sample {item.key}: {e.reason}") from None


def decode_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W] RGB; strict: libjpeg's warnings ("Corrupt JPEG data: ...", "Premature end of
    JPEG file") are errors, so a damaged frame is rejected and counted instead of decoding to a smeared picture.

    simplejpeg (libjpeg-turbo) is the decoder because it can be strict; torchvision's and PIL's decoders print the
    warning and return the damaged image. It is also a little faster (measured: scripts/results/README.md).
    """
    import simplejpeg

    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)  # [H, W, 3]; ValueError when damaged
    return torch.from_numpy(rgb).permute(2, 0, 1)


def _decode_frames(item: Item, size: int) -> torch.Tensor:
    """uint8 [len(frames), 3, size, size]: decoded, shorter side resized to `size` (bicubic), centre-cropped."""
    out = []
    video_frames = None
    for i, jpg in item.frames:
        if jpg is not None:
            try:
                img = decode_jpeg(jpg)
            except Exception as e:
                raise SampleError("image", f"sample {item.key}: undecodable frame f{i}.jpg ({e})") from None
        else:
            from cavmae.data.media import MediaError, VideoFrames

            try:
                video_frames = video_frames or VideoFrames(item.mp4)
                times = item.meta.get("frame_times") or []
                arr, _ = video_frames.at([float(times[i]) if i < len(times) else 0.0])
            except MediaError as e:
                raise SampleError("video", f"sample {item.key}: {e.reason}") from None
            img = torch.from_numpy(arr[0]).permute(2, 0, 1)
        out.append(resize_center_crop(img, size))
    return torch.stack(out)


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] -> [3, size, size]: shorter side resized to `size` (bicubic), then the centre crop."""
    h, w = img.shape[1:]
    if min(h, w) != size:
        img = F.resize(img, size, interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        h, w = img.shape[1:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top : top + size, left : left + size]


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float32 with ImageNet mean / std."""
    return frames.float().mul_(_PIXEL_SCALE).sub_(_PIXEL_SHIFT)


@dataclass
class Decoded:
    key: str
    wave: torch.Tensor  # float32 [<= samples_for_frames(clip_fbank_frames(s))], DC removed over the whole clip
    frames: torch.Tensor  # uint8 [n, 3, S, S]
    frame_indices: list[int]  # [n] which of the clip's frames `frames` holds (audio windows are cut around them)
    labels: list[int]
    weight: float
    rng: random.Random
    gen: torch.Generator


def decode(item: Item, s: LoaderSettings, epoch: int) -> Decoded:
    wave = _decode_audio(item, s)
    wave = wave - wave.mean()  # DC removal over the whole clip, before cutting (as CAV-MAE does)
    wave = wave[: samples_for_frames(clip_fbank_frames(s))]
    frames = _decode_frames(item, s.image_size) if s.frames else torch.zeros(0, dtype=torch.uint8)
    seed = stable_seed(s.seed, epoch, item.key, item.copy, "augment")
    gen = torch.Generator().manual_seed(seed)
    indices = [i for i, _ in item.frames]
    return Decoded(item.key, wave, frames, indices, item.labels, item.weight, random.Random(seed), gen)


def clip_fbank_frames(s: LoaderSettings) -> int:
    """Fbank frames of a whole clip: the model's input (CAV-MAE) or the padded clip the windows come from (Sync)."""
    return s.clip_fbank_frames if s.audio_window else s.audio_length


# ---------------------------------------------------------------------------------------------------------------
# batching


def collate(items: list[Decoded], s: LoaderSettings) -> dict:
    b, t, f = len(items), s.audio_length, s.num_mel_bins
    waves = [it.wave for it in items]
    frames = normalize_frames(torch.stack([it.frames for it in items])) if s.frames else None  # [B, n, 3, S, S]
    labels = torch.zeros(b, s.num_classes)
    for i, it in enumerate(items):
        labels[i, it.labels] = 1.0
    weights = torch.tensor([it.weight for it in items], dtype=torch.float32)
    if s.train and s.mixup > 0 and b > 1:
        waves, frames, labels, weights = _mixup(items, waves, frames, labels, weights, s)
    starts = [audio_starts(it, s) for it in items]  # per clip: first fbank frame of each of its windows
    audio = torch.zeros(b, len(starts[0]), t, f)  # [B, windows, T, F]
    for i, (it, w) in enumerate(zip(items, waves)):
        # one fbank over the span of the clip's windows (they overlap; one window in training): [n <= span, F]
        first = min(starts[i])
        fb = window_fbank(w, first, max(starts[i]) + t - first, f)
        for j, start in enumerate(starts[i]):
            part = fb[start - first : start - first + t]  # [n <= T, F]; frames past the clip stay 0 (padding)
            audio[i, j, : part.shape[0]] = part
            if s.train and (s.freqm or s.timem):
                spec_augment(audio[i, j], s.freqm, s.timem, it.gen)
    normalize_fbank(audio, s.fbank_mean, s.fbank_std)
    if s.train and (s.noise or s.time_roll):
        for i, it in enumerate(items):
            for j in range(audio.shape[1]):
                if s.noise:
                    add_noise(audio[i, j], it.gen)
                if s.time_roll:
                    audio[i, j] = time_roll(audio[i, j], it.gen)
    if not (s.audio_window and s.frame_mode == "all"):
        audio = audio[:, 0]  # one window per clip: [B, T, F]
    if s.train and s.label_smoothing > 0:
        labels = labels * (1.0 - s.label_smoothing) + s.label_smoothing / s.num_classes
    batch = {"audio": audio, "labels": labels, "keys": [it.key for it in items]}
    if frames is not None:
        batch["frames"] = frames if s.frame_mode == "all" else frames[:, 0]
    if s.balance == "weights":
        batch["weights"] = weights
    return batch


def audio_starts(item: Decoded, s: LoaderSettings) -> list[int]:
    """First fbank frame of each audio window of a clip: [0] (the whole clip, CAV-MAE) or, with an audio window,
    one per chosen frame (cavmae.data.windows.frame_audio_window); a batch without frames (audio only) takes the
    middle frame's window."""
    if not s.audio_window:
        return [0]
    indices = item.frame_indices or [s.num_frames // 2]
    return [frame_audio_window(k, s.num_frames, s.clip_fbank_frames, s.audio_window) for k in indices]


def _mixup(items, waves, frames, labels, weights, s: LoaderSettings):
    """CAV-MAE mixup: with probability `mixup` a sample is mixed with another one (here: of the same batch) with
    lambda ~ Beta(alpha, alpha): waveforms (then DC removed again), frames and labels alike."""
    b = len(items)
    waves, labels0, weights0 = list(waves), labels.clone(), weights.clone()
    frames0 = frames.clone() if frames is not None else None  # None: an audio-only batch
    for i, it in enumerate(items):
        if it.rng.random() >= s.mixup:
            continue
        j = it.rng.randrange(b - 1)
        j += j >= i
        lam = it.rng.betavariate(s.mixup_alpha, s.mixup_alpha)
        a, c = items[i].wave, items[j].wave
        n = max(len(a), len(c))  # the shorter clip is padded with silence
        mixed = lam * torch.nn.functional.pad(a, (0, n - len(a)))
        mixed += (1 - lam) * torch.nn.functional.pad(c, (0, n - len(c)))
        waves[i] = mixed - mixed.mean()
        if frames is not None:
            frames[i] = lam * frames0[i] + (1 - lam) * frames0[j]
        labels[i] = lam * labels0[i] + (1 - lam) * labels0[j]
        weights[i] = lam * weights0[i] + (1 - lam) * weights0[j]
    return waves, frames, labels, weights
