"""Decoding audio-visual clips: 16 kHz audio (first channel, as CAV-MAE) and frames chosen by their timestamps.

Used by ``cavmae prepare`` (files -> shard samples), by the loader for samples that hold a raw ``.mp4`` and by
``predict`` / ``retrieve`` for raw files (:mod:`cavmae.eval.inputs`): one audio path and one frame path for all of them.
This module imports no torch, so prepare's worker processes stay small.

Which decoder does what, and why:

- **Audio: PyAV** (libavcodec + libswresample through ``av.AudioResampler``), for every file. decord's
  ``AudioReader`` leaks memory with every reader, never returned (a prepare worker grew without bound), and with
  ``mono=True`` it returns (L+R)/sqrt(2): +3 dB on correlated stereo and clipping on loud clips. Here audio is
  resampled to 16 kHz with all its channels, then the FIRST channel is kept at unit gain (CAV-MAE's extraction:
  ``ffmpeg -ar 16000`` then ``sox remix 1``); ``channel="mean"`` gives (L+R)/2 instead. libavcodec applies the
  codec delay the container declares (Opus pre-skip, AAC priming in MP4 edit lists), as the ffmpeg command does.
  The leak is measured by ``scripts/bench_prepare_worker.py`` (RSS growth per clip of one prepare worker; figures in
  scripts/results/README.md).
- **Frames: decord where it is right, PyAV where it is not.** decord ignores MP4 edit lists: on a file whose edit list
  skips the start of the video it stamps frames from a negative time, and its pixels at its own stamp t show ffmpeg's
  picture at t + skip (seen on an ``ffmpeg -ss 1.5 -c copy`` cut and on real AudioSet files, whose skip is seconds
  long). So each file's video packets are demuxed with PyAV first (no decoding, cheap next to decoding the frames):
  the presentation times of the packets libavformat keeps (edit lists applied, discarded lead-in packets dropped) are
  ffmpeg's frame times. When decord's frame stamps equal them (same count, within 1 ms) decord decodes; otherwise
  (edit lists, negative or non-monotonic stamps, a different frame count) PyAV decodes, which gives ffmpeg's frames
  exactly. decord stays the default because it is faster for 10 frames of a 10 s clip (measured:
  scripts/results/README.md): it seeks to the keyframe before each wanted frame, PyAV's sequential decode converts
  only the wanted frames but decodes every frame up to the last one.
- **Opening: PyAV with** ``metadata_errors="ignore"`` everywhere: its default strict UTF-8 decoding of metadata
  rejects a valid file that carries one Latin-1 tag.

Times are on ffmpeg's timeline (presentation time, edit lists applied). Audio sample 0 is the stream's first
decoded sample, as in the ``ffmpeg -ar 16000`` extraction CAV-MAE's data comes from.

Every failure raises :class:`MediaError` whose ``reason`` is a short, stable phrase for the manifest
("empty file (0 bytes)", "no video stream", "no audio stream", "undecodable (not media, or truncated): ...",
"truncated or corrupt video: ...", "undecodable audio: ...").
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # CAV-MAE's audio rate (cavmae.data.fbank uses the same)
AUDIO_CHANNELS = ("first", "mean")
AudioChannel = Literal["first", "mean"]

Source = str | os.PathLike | bytes

# libav error codes that reach users as bare numbers through decord ("av_read_frame failed with 1094995529")
_AVERROR_NAMES = {
    "1094995529": "AVERROR_INVALIDDATA: invalid data in the stream, the file is truncated or corrupt",
    "541478725": "AVERROR_EOF: the stream ended before the frame",
}


class MediaError(Exception):
    """A clip that cannot be used; `reason` is what the manifest records."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class DecodedClip:
    """One clip window of a media file.

    audio: float32 [N] at 16 kHz mono (N may be shorter than the window when the audio stream ends early).
    frames: uint8 [num_frames, H, W, 3] RGB at the native resolution.
    frame_times: start timestamps (s, ffmpeg's timeline) of the chosen frames.
    decoder: which decoder gave the frames ("decord" or "pyav").
    """

    audio: np.ndarray
    frames: np.ndarray
    frame_times: list[float]
    fps: float
    clip_start: float
    clip_end: float
    width: int
    height: int
    decoder: str = "decord"

    @property
    def duration(self) -> float:
        """Seconds of audio in the clip."""
        return len(self.audio) / SAMPLE_RATE


def _short(exc: BaseException) -> str:
    """First line of an exception message without decord's '[time] file.cc:line:' prefix; libav codes named."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "] " in msg and msg.startswith("["):
        msg = msg.split("] ", 1)[1]
    if ".cc:" in msg:
        msg = msg.split(": ", 1)[-1]
    for code, name in _AVERROR_NAMES.items():
        if code in msg:
            msg = f"{msg} ({name})"
    return msg[:300]


def _open(source: Source):
    """A path string or a fresh file object for decord/PyAV."""
    return io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)


def open_container(source: Source):
    """A PyAV input container; metadata that is not UTF-8 is tolerated (a Latin-1 tag must not reject a file)."""
    import av

    return av.open(_open(source), metadata_errors="ignore")


def probe(source: Source) -> tuple[bool, bool]:
    """(has_video, has_audio) of a media file, with clear errors for empty and unreadable files."""
    if isinstance(source, bytes):
        empty = len(source) == 0
    else:
        try:
            empty = Path(source).stat().st_size == 0
        except OSError as e:
            raise MediaError(f"unreadable file: {e.strerror or e}") from e
    if empty:
        raise MediaError("empty file (0 bytes)")
    try:
        with open_container(source) as container:
            kinds = {s.type for s in container.streams}
    except Exception as e:  # PyAV raises many error types (InvalidDataError, OSError, ...)
        raise MediaError(f"undecodable (not media, or truncated): {_short(e)}") from e
    return "video" in kinds, "audio" in kinds


# ---------------------------------------------------------------------------------------------------------------
# audio


def read_audio(
    source: Source, start: float = 0.0, end: float | None = None, channel: AudioChannel = "first"
) -> np.ndarray:
    """Audio of [start, end) seconds as float32 [N] at 16 kHz: the first channel (default) or the channel mean.

    Decoded and resampled by PyAV (libswresample, as ``ffmpeg -ar 16000``), all channels kept until one is chosen;
    samples are never scaled, so a source within full scale stays within it.
    """
    if channel not in AUDIO_CHANNELS:
        raise ValueError(f"audio channel must be one of {AUDIO_CHANNELS}, got {channel!r}")
    import av

    first = max(0, round(start * SAMPLE_RATE))
    last = None if end is None else round(end * SAMPLE_RATE)
    chunks: list[np.ndarray] = []  # [channels, n] float32 pieces
    have = 0
    try:
        with open_container(source) as container:
            if not container.streams.audio:
                raise MediaError("no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)  # layout kept: channels chosen below

            def take(frames) -> None:
                nonlocal have
                for f in frames:
                    chunks.append(f.to_ndarray())
                    have += f.samples

            for frame in container.decode(stream):
                take(resampler.resample(frame))
                if last is not None and have >= last:
                    break
            else:
                take(resampler.resample(None))  # flush the resampler's delay at the end of the stream
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"undecodable audio: {_short(e)}") from e
    if not chunks:
        raise MediaError("undecodable audio: no audio frames decoded")
    audio = np.concatenate(chunks, axis=1)  # [channels, N]
    total = audio.shape[1]
    stop = total if last is None else min(total, last)
    if stop <= first:
        raise MediaError(f"no audio in [{start:.3f}, {end}] s (stream has {total / SAMPLE_RATE:.3f} s)")
    audio = audio[:, first:stop]
    mono = audio[0] if channel == "first" or audio.shape[0] == 1 else audio.mean(axis=0)
    return np.ascontiguousarray(mono, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# frames


def evenly_spaced_times(start: float, end: float, num: int) -> list[float]:
    """CAV-MAE's frame times: start + i * (end - start) / num for i in 0..num-1 (frame i opens segment i)."""
    return [start + i * (end - start) / num for i in range(num)]


def indices_at_times(timestamps: np.ndarray, times: list[float]) -> list[int]:
    """For each time, the frame whose [start, end) interval holds it: the last frame starting at or before it.

    timestamps: [num_frames, 2] (start, end) in seconds, sorted by start.
    Times before the first frame map to frame 0, times after the last to the last frame.
    """
    starts = timestamps[:, 0]
    idx = np.searchsorted(starts, np.asarray(times, dtype=np.float64) + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(starts) - 1).tolist()


def video_timeline(source: Source) -> tuple[np.ndarray, float]:
    """ffmpeg's frame times of the first video stream without decoding: [num_frames, 2] (start, end) s, and fps.

    From the demuxed packets libavformat keeps (edit lists applied: lead-in packets are flagged discard), sorted
    into presentation order. Raises MediaError when the file has no video or its packets do not read.
    """
    try:
        with open_container(source) as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            stream = container.streams.video[0]
            tb = float(stream.time_base)
            pts, durs = [], []
            for packet in container.demux(stream):
                if packet.pts is None or packet.is_discard:
                    continue
                pts.append(packet.pts)
                durs.append(packet.duration or 0)
            rate = stream.average_rate or stream.guessed_rate
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"truncated or corrupt video: {_short(e)}") from e
    if not pts:
        raise MediaError("no decodable video frames")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    starts = np.asarray(pts, dtype=np.float64)[order] * tb
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    last = durs[order[-1]] * tb
    fps = float(rate) if rate else (len(starts) / max(starts[-1] - starts[0], 1e-9) if len(starts) > 1 else 0.0)
    ends[-1] = starts[-1] + (last if last > 0 else (1.0 / fps if fps else 0.0))
    return np.stack([starts, ends], axis=1), fps


def _decord_agrees(stamps: np.ndarray, timeline: np.ndarray) -> bool:
    """decord's (start, end) stamps equal ffmpeg's frame times: same count, monotonic, within 1 ms."""
    if stamps.shape != timeline.shape or len(stamps) == 0:
        return False
    starts = stamps[:, 0]
    if (np.diff(starts) <= 0).any():
        return False
    return bool(np.abs(starts - timeline[:, 0]).max() < 1e-3)


class VideoFrames:
    """Frames of one video file chosen by time on ffmpeg's timeline; decord when it is right, else PyAV.

    decoder: "auto" (compare decord's stamps with ffmpeg's, see the module docstring), "decord" or "pyav".
    ``self.decoder`` says which one decodes; ``timestamps`` [num_frames, 2] are ffmpeg's (start, end) times.
    """

    def __init__(self, source: Source, decoder: Literal["auto", "decord", "pyav"] = "auto"):
        self.source = source
        self.timestamps, self.fps = video_timeline(source)
        self.reader = None
        self.decoder = "pyav"
        if decoder == "pyav":
            return
        import decord

        try:
            reader = decord.VideoReader(_open(source), ctx=decord.cpu(0), num_threads=1)
            n = len(reader)
            stamps = np.asarray(reader.get_frame_timestamp(range(n)), dtype=np.float64) if n else np.zeros((0, 2))
        except Exception as e:  # the container opened but decord cannot read the stream: cut short or damaged
            if decoder == "decord":
                raise MediaError(f"truncated or corrupt video: {_short(e)}") from e
            log.debug("decord cannot read %s (%s); PyAV decodes it", self._name, _short(e))
            return
        if decoder == "decord" or _decord_agrees(stamps, self.timestamps):
            self.reader, self.decoder = reader, "decord"
            if decoder == "decord":
                self.timestamps = stamps
        else:
            log.debug("decord's frame times differ from ffmpeg's on %s (edit list?); PyAV decodes it", self._name)

    @property
    def _name(self) -> str:
        return "<bytes>" if isinstance(self.source, bytes) else os.fspath(self.source)

    @property
    def end_time(self) -> float:
        """End of the last frame (s)."""
        return float(self.timestamps[-1, 1])

    def at(self, times: list[float]) -> tuple[np.ndarray, list[float]]:
        """uint8 [len(times), H, W, 3] frames holding each time, and their start timestamps."""
        idx = indices_at_times(self.timestamps, times)
        stamps = [round(float(self.timestamps[j, 0]), 6) for j in idx]
        if self.reader is not None:
            unique = sorted(set(idx))
            try:
                batch = self.reader.get_batch(unique).asnumpy()
            except Exception as e:
                raise MediaError(f"truncated or corrupt video: {_short(e)}") from e
            pos = {j: k for k, j in enumerate(unique)}
            return batch[[pos[j] for j in idx]], stamps
        return self._pyav_at(stamps), stamps

    def _pyav_at(self, starts: list[float]) -> np.ndarray:
        """Decode in presentation order and keep, for each wanted start time, the frame shown at that time."""
        wanted = sorted(set(starts))
        if wanted[0] > 2.0:  # seek to the keyframe before the first wanted frame (frame-exact afterwards)
            try:
                return self._pyav_decode(starts, wanted, seek=True)
            except MediaError:
                log.debug("seeking in %s missed its frames; decoding from the start", self._name)
        return self._pyav_decode(starts, wanted, seek=False)

    def _pyav_decode(self, starts: list[float], wanted: list[float], seek: bool) -> np.ndarray:
        got: dict[float, np.ndarray] = {}
        try:
            with open_container(self.source) as container:
                stream = container.streams.video[0]
                stream.thread_type = "SLICE"  # one frame thread: prepare runs one process per core
                if seek:
                    container.seek(int((wanted[0] - 0.5) / float(stream.time_base)), stream=stream, backward=True)
                k = 0
                prev = None
                for frame in container.decode(stream):
                    t = frame.time
                    if t is None:
                        continue
                    while k < len(wanted) and t > wanted[k] + 1e-4:  # `prev` is the frame shown at wanted[k]
                        if prev is None:
                            raise MediaError(f"frame at {wanted[k]:.3f} s not decodable")
                        got[wanted[k]] = prev.to_ndarray(format="rgb24")
                        k += 1
                    if k == len(wanted):
                        break
                    prev = frame
                while k < len(wanted) and prev is not None:  # wanted times in the last frame
                    got[wanted[k]] = prev.to_ndarray(format="rgb24")
                    k += 1
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(f"truncated or corrupt video: {_short(e)}") from e
        missing = [t for t in wanted if t not in got]
        if missing:
            raise MediaError(f"truncated or corrupt video: no frame decoded at {missing[0]:.3f} s")
        return np.stack([got[t] for t in starts])


def decode_clip(
    source: Source,
    *,
    start: float = 0.0,
    end: float | None = None,
    num_frames: int = 10,
    need_audio: bool = True,
    audio_channel: AudioChannel = "first",
    decoder: Literal["auto", "decord", "pyav"] = "auto",
) -> DecodedClip:
    """Audio and `num_frames` evenly spaced frames of the window [start, end) of a media file.

    end=None means to the end of the video. The window is cut to what the video holds; a clip shorter than asked
    is kept (the loader pads its fbank). Raises MediaError for a missing stream or an undecodable file.
    """
    has_video, has_audio = probe(source)
    if not has_video:
        raise MediaError("no video stream")
    if need_audio and not has_audio:
        raise MediaError("no audio stream")
    video = VideoFrames(source, decoder)
    clip_end = video.end_time if end is None else min(end, video.end_time)
    if clip_end <= start:
        raise MediaError(f"clip window starts at {start:.3f} s but the video ends at {video.end_time:.3f} s")
    frames, times = video.at(evenly_spaced_times(start, clip_end, num_frames))
    audio = read_audio(source, start, end, audio_channel) if need_audio else np.zeros(0, np.float32)
    height, width = frames.shape[1:3]
    return DecodedClip(
        audio=audio,
        frames=frames,
        frame_times=times,
        fps=video.fps,
        clip_start=float(start),
        clip_end=float(clip_end),
        width=int(width),
        height=int(height),
        decoder=video.decoder,
    )
