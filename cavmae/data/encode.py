"""One clip -> one sample's tar members (runs in ``cavmae prepare``'s worker processes or on a Ray worker).

:class:`PrepareOptions` says how each clip is stored; :func:`process_clip` decodes one
:class:`~cavmae.data.sources.ClipInput` (a video file, an audio-only file, or a CAV-MAE datafile row: wav +
extracted frames) into the members of its sample (``wav``/``flac``, ``f0.jpg`` ..., ``mp4``, ``json``) or the
reason it cannot be used.

Audio-only inputs (a file without a video stream: wav / flac / mp3 / ogg / m4a / an mp4 without video, or a
datafile row without ``video_path``) give samples without frames: the decoded audio (whatever ``store`` says: the
raw file is no video to decode frames from) and a json with ``"modalities": ["audio"]``, ``num_frames`` 0 and
empty ``frame_times``. Every sample's json names its ``modalities`` (``["audio", "video"]`` for the others).
Packing the samples into shards, resuming and the manifest are :mod:`cavmae.data.prepare`'s.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cavmae.data.media import MediaError, decode_clip, evenly_spaced_times, probe, read_audio
from cavmae.data.shards import NUM_FRAMES
from cavmae.data.sources import ClipInput

log = logging.getLogger(__name__)


@dataclass
class PrepareOptions:
    """How each clip is stored. Defaults follow CAV-MAE (ten frames per clip, 224 px for the 224 px model)."""

    frame_size: int = 224  # frames are resized so that their shorter side is at most this (never enlarged)
    num_frames: int = NUM_FRAMES
    jpeg_quality: int = 90
    store: Literal["decoded", "mp4", "both"] = "decoded"  # decoded: audio + jpg; mp4: raw file only; both: all
    # 16-bit PCM in a WAV or FLAC container. WAV is the default because the loader decodes it almost for free while
    # FLAC costs more than the whole fbank, for more bytes per sample (measured: scripts/results/README.md).
    audio_format: Literal["wav", "flac"] = "wav"
    clip_seconds: float = 10.0  # window read from a file when the metadata gives no end (folders, VGGSound)
    # Which audio is stored: the first channel at unit gain (CAV-MAE's extraction, what its checkpoints saw) or the
    # mean of the channels ((L+R)/2).
    audio_channel: Literal["first", "mean"] = "first"


def _jpeg(frame: np.ndarray, size: int, quality: int) -> tuple[bytes, tuple[int, int]]:
    """RGB uint8 [H, W, 3] -> JPEG bytes with the shorter side at most `size` (bicubic), and the stored (H, W)."""
    from PIL import Image

    img = Image.fromarray(frame)
    w, h = img.size
    if size and min(w, h) > size:
        scale = size / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), (img.size[1], img.size[0])


def clipped_samples(audio: np.ndarray) -> int:
    """Samples that 16-bit PCM cannot hold (|x| > 32767 / 32768 after rounding): clipped when stored."""
    return int(np.count_nonzero(np.abs(np.rint(audio * 32768.0)) > 32767))


def _encode_audio(audio: np.ndarray, fmt: str) -> bytes:
    """float32 [N] 16 kHz mono -> 16-bit PCM WAV or FLAC bytes."""
    import soundfile as sf

    # Quantise here, as ffmpeg's s16 output does (round(x * 32768), clipped): libsndfile would scale floats by
    # 32767 for WAV but 32768 for FLAC, so the two formats would not hold the same samples.
    pcm = np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, 16000, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def _meta(inp: ClipInput, **extra) -> dict:
    meta = {
        "key": inp.key,
        "source": inp.rel,
        "ytid": inp.ytid,
        "start": inp.start,
        "end": inp.end,
        "labels": inp.labels,
        "label_indices": inp.label_indices,
        "split": inp.split,
    }
    if inp.fold is not None:  # ESC-50's cross-validation fold
        meta["fold"] = inp.fold
    meta.update(extra)
    return meta


def _encode_json(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


AUDIO_ONLY = ["audio"]
AUDIO_VISUAL = ["audio", "video"]


def _audio_sample(inp: ClipInput, opts: PrepareOptions) -> dict[str, bytes]:
    """An audio-only file (or a datafile row without frames): the window's audio, no frames."""
    audio = read_audio(inp.source, inp.clip_start, inp.clip_end, opts.audio_channel)
    duration = len(audio) / 16000
    meta = _meta(
        inp,
        modalities=AUDIO_ONLY,
        clip_start=round(inp.clip_start, 6),
        clip_end=round(inp.clip_start + duration, 6),
        duration=round(duration, 6),
        fps=None,
        frame_times=[],
        frame_size=None,
        num_frames=0,
        audio_channel=opts.audio_channel,
        clipped_samples=clipped_samples(audio),
    )
    return {opts.audio_format: _encode_audio(audio, opts.audio_format), "json": _encode_json(meta)}


def _video_sample(inp: ClipInput, opts: PrepareOptions) -> dict[str, bytes]:
    clip = decode_clip(
        inp.source,
        start=inp.clip_start,
        end=inp.clip_end,
        num_frames=opts.num_frames,
        audio_channel=opts.audio_channel,
    )
    members: dict[str, bytes] = {}
    frame_size = [clip.height, clip.width]
    audio_meta = {"audio_channel": opts.audio_channel, "clipped_samples": clipped_samples(clip.audio)}
    if opts.store in ("decoded", "both"):
        members[opts.audio_format] = _encode_audio(clip.audio, opts.audio_format)
        for i, frame in enumerate(clip.frames):
            members[f"f{i}.jpg"], hw = _jpeg(frame, opts.frame_size, opts.jpeg_quality)
            frame_size = list(hw)
    if opts.store in ("mp4", "both"):
        members["mp4"] = Path(inp.source).read_bytes()
    members["json"] = _encode_json(
        _meta(
            inp,
            modalities=AUDIO_VISUAL,
            clip_start=round(clip.clip_start, 6),
            clip_end=round(clip.clip_end, 6),
            duration=round(clip.duration, 6),
            fps=round(clip.fps, 6),
            frame_times=clip.frame_times,
            frame_size=frame_size,
            num_frames=len(clip.frames),
            **audio_meta,
        )
    )
    return members


def _datafile_sample(inp: ClipInput, opts: PrepareOptions) -> dict[str, bytes]:
    from PIL import Image

    _, has_audio = probe(inp.source)
    if not has_audio:
        raise MediaError("no audio stream")
    paths = inp.frame_paths or []
    if not paths:  # a row without video_path: audio only
        return _audio_sample(inp, opts)
    audio = read_audio(inp.source, channel=opts.audio_channel)
    present = [i for i, p in enumerate(paths) if os.path.isfile(p)]
    if not present:
        raise MediaError(f"no frames found (expected {paths[0] if paths else '<video_path>/frame_0/<id>.jpg'})")
    members = {opts.audio_format: _encode_audio(audio, opts.audio_format)}
    frame_size: list[int] = []
    for i in range(len(paths)):
        src = paths[min(present, key=lambda j: (abs(j - i), j))]  # a missing frame takes the nearest present one
        try:
            with Image.open(src) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception as e:
            raise MediaError(f"undecodable frame {src}: {e}") from e
        members[f"f{i}.jpg"], hw = _jpeg(rgb, opts.frame_size, opts.jpeg_quality)
        frame_size = list(hw)
    duration = len(audio) / 16000
    members["json"] = _encode_json(
        _meta(
            inp,
            modalities=AUDIO_VISUAL,
            clip_start=0.0,
            clip_end=round(duration, 6),
            duration=round(duration, 6),
            fps=None,
            frame_times=[round(t, 6) for t in evenly_spaced_times(0.0, duration, len(paths))],
            frame_size=frame_size,
            num_frames=len(paths),
            missing_frames=[i for i in range(len(paths)) if i not in present],
            audio_channel=opts.audio_channel,
            clipped_samples=clipped_samples(audio),
        )
    )
    return members


def process_clip(inp: ClipInput, opts: PrepareOptions) -> tuple[bool, dict[str, bytes] | str]:
    """(True, members) for a good clip, (False, reason) for one that cannot be used. Never raises."""
    try:
        if inp.frame_paths is not None:
            return True, _datafile_sample(inp, opts)
        has_video, has_audio = probe(inp.source)
        if not has_video and has_audio:
            return True, _audio_sample(inp, opts)
        return True, _video_sample(inp, opts)
    except MediaError as e:
        return False, e.reason
    except Exception as e:  # anything else in a decoder must not stop the job; the reason says what happened
        log.debug("unexpected error on %s", inp.source, exc_info=True)
        return False, f"unexpected error: {type(e).__name__}: {e}"
