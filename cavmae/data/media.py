"""Decoding audio-visual clips with decord: 16 kHz mono audio and frames chosen by their timestamps.

Used by ``cavmae prepare`` (files -> shard samples) and by the loader for samples that hold a raw ``.mp4``.
Facts that shape this module:

- decord ignores MP4 edit lists, so on some AudioSet files the first frames carry negative timestamps. Frames are
  therefore chosen by ``get_frame_timestamp`` (the frame whose [start, end) interval holds the wanted time), never
  by ``index = time * fps``.
- ``AudioReader`` needs an explicit ``sample_rate`` and ``mono=True`` (it then resamples and down-mixes with
  ffmpeg); its ``duration()`` truncates to whole seconds, so durations come from the sample count.
- ``AVReader`` leaks memory: audio and video are read with separate readers.

Every failure raises :class:`MediaError` whose ``reason`` is a short, stable phrase for the manifest
("empty file (0 bytes)", "no video stream", "no audio stream", "undecodable (not media, or truncated): ...",
"truncated or corrupt video: ...", "undecodable audio: ...").
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cavmae.data.fbank import SAMPLE_RATE

Source = str | os.PathLike | bytes


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
    frame_times: start timestamps (s, source timeline as decord reports it) of the chosen frames.
    """

    audio: np.ndarray
    frames: np.ndarray
    frame_times: list[float]
    fps: float
    clip_start: float
    clip_end: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Seconds of audio in the clip."""
        return len(self.audio) / SAMPLE_RATE


def _short(exc: BaseException) -> str:
    """First line of an exception message without decord's '[time] file.cc:line:' prefix."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "] " in msg and msg.startswith("["):
        msg = msg.split("] ", 1)[1]
    if ".cc:" in msg:
        msg = msg.split(": ", 1)[-1]
    return msg[:200]


def _open(source: Source):
    """A path string or a fresh file object for decord/PyAV."""
    return io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)


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
    import av

    try:
        with av.open(_open(source)) as container:
            kinds = {s.type for s in container.streams}
    except Exception as e:  # PyAV raises many error types (InvalidDataError, OSError, ...)
        raise MediaError(f"undecodable (not media, or truncated): {_short(e)}") from e
    return "video" in kinds, "audio" in kinds


def read_audio(source: Source, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Audio of [start, end) seconds as float32 [N], 16 kHz mono (decord resamples and down-mixes)."""
    import decord

    try:
        reader = decord.AudioReader(_open(source), ctx=decord.cpu(0), sample_rate=SAMPLE_RATE, mono=True)
        total = reader.shape[1]
        first = max(0, round(start * SAMPLE_RATE))
        last = total if end is None else min(total, round(end * SAMPLE_RATE))
        if last <= first:
            raise MediaError(f"no audio in [{start:.3f}, {end}] s (stream has {total / SAMPLE_RATE:.3f} s)")
        audio = reader[first:last].asnumpy()
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"undecodable audio: {_short(e)}") from e
    return np.ascontiguousarray(audio.reshape(-1), dtype=np.float32)


def evenly_spaced_times(start: float, end: float, num: int) -> list[float]:
    """CAV-MAE's frame times: start + i * (end - start) / num for i in 0..num-1 (frame i opens segment i)."""
    return [start + i * (end - start) / num for i in range(num)]


def indices_at_times(timestamps: np.ndarray, times: list[float]) -> list[int]:
    """For each time, the frame whose [start, end) interval holds it: the last frame starting at or before it.

    timestamps: [num_frames, 2] from ``VideoReader.get_frame_timestamp`` (may start below 0 with edit lists).
    Times before the first frame map to frame 0, times after the last to the last frame.
    """
    starts = timestamps[:, 0]
    idx = np.searchsorted(starts, np.asarray(times, dtype=np.float64) + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(starts) - 1).tolist()


class VideoFrames:
    """Frames of one video file chosen by time; wraps a decord VideoReader opened with one thread."""

    def __init__(self, source: Source):
        import decord

        try:
            self.reader = decord.VideoReader(_open(source), ctx=decord.cpu(0), num_threads=1)
            n = len(self.reader)
            if n == 0:
                raise MediaError("no decodable video frames")
            self.timestamps = np.asarray(self.reader.get_frame_timestamp(range(n)), dtype=np.float64)
            self.fps = float(self.reader.get_avg_fps())
        except MediaError:
            raise
        except Exception as e:  # the container opened (probe) but the stream does not read: cut short or damaged
            raise MediaError(f"truncated or corrupt video: {_short(e)}") from e

    @property
    def end_time(self) -> float:
        """End of the last frame (s)."""
        return float(self.timestamps[-1, 1])

    def at(self, times: list[float]) -> tuple[np.ndarray, list[float]]:
        """uint8 [len(times), H, W, 3] frames holding each time, and their start timestamps."""
        idx = indices_at_times(self.timestamps, times)
        unique = sorted(set(idx))
        try:
            batch = self.reader.get_batch(unique).asnumpy()
        except Exception as e:
            raise MediaError(f"truncated or corrupt video: {_short(e)}") from e
        pos = {j: k for k, j in enumerate(unique)}
        frames = batch[[pos[j] for j in idx]]
        return frames, [round(float(self.timestamps[j, 0]), 6) for j in idx]


def decode_clip(
    source: Source, *, start: float = 0.0, end: float | None = None, num_frames: int = 10, need_audio: bool = True
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
    video = VideoFrames(source)
    clip_end = video.end_time if end is None else min(end, video.end_time)
    if clip_end <= start:
        raise MediaError(f"clip window starts at {start:.3f} s but the video ends at {video.end_time:.3f} s")
    frames, times = video.at(evenly_spaced_times(start, clip_end, num_frames))
    audio = read_audio(source, start, end if end is not None else None) if need_audio else np.zeros(0, np.float32)
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
    )
