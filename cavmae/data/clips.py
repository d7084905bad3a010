"""``cavmae synth``: a synthetic audio-visual dataset written as real H.264 + AAC video files.

Each of K classes pairs a sound (tone, chirp, noise band, amplitude-modulated tone, square wave, click train) at
its own base pitch with a picture (shape, colour, motion). Each clip also carries a signature shared by both
modalities, so that matching a clip's audio to its own video is learnable beyond the class:

- pitch follows the object's height in the frame: pitch = base * 2 ** (0.5 - y / H) (higher object, higher pitch);
- loudness follows the object's size;
- the sound switches on and off in a random rhythm and the object is visible exactly while its sound plays.

In the AudioSet layout some clips hold two classes (two objects, two sounds: a multi-label clip). The files feed
the same path as real data: ``cavmae prepare --videos <out>/videos --csv <out>/<layout>.csv --label-csv
<out>/class_labels_indices.csv``. Everything is drawn from ``numpy.random.default_rng([seed, clip])``, and the
encoders run single-threaded, so the same seed gives byte-identical files.

Layouts: ``audioset`` writes ``<ytid>_<start:.3f>.mp4`` files (dot in the name, as AudioSet clips have) and
``audioset.csv`` with three ``#`` header lines and ``YTID, start, end, "mid1,mid2"`` rows; ``vggsound`` writes
``<ytid>_<start:06d>.mp4`` and ``vggsound.csv`` rows ``ytid,start,display name,train|test``. Both write
``class_labels_indices.csv`` (``index,mid,display_name``).
"""

from __future__ import annotations

import colorsys
import csv
import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "bar")
SOUNDS = ("tone", "chirp", "noise", "am", "square", "clicks")
MOTIONS = ("horizontal", "circle", "static", "zigzag")
# Colour names by hue band (degrees, upper bound exclusive), chosen so that a fully saturated colour of that hue is
# what most people call it: equal-width bins put e.g. hue 222 (a plain blue) under "cyan" and hue 32 under "red".
HUE_NAMES = (
    (15, "red"),
    (45, "orange"),
    (70, "yellow"),
    (100, "lime"),
    (145, "green"),
    (165, "spring green"),
    (175, "turquoise"),
    (195, "cyan"),
    (210, "sky blue"),
    (250, "blue"),
    (275, "violet"),
    (290, "purple"),
    (320, "magenta"),
    (345, "rose"),
    (360, "red"),
)


def colour_name(rgb: tuple[int, int, int]) -> str:
    """The name of a saturated RGB colour (0-255 per channel), from its hue."""
    hue, _, _ = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    degrees = hue * 360
    return next(name for bound, name in HUE_NAMES if degrees < bound)


_YTID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class SynthClass:
    index: int
    mid: str
    name: str
    shape: str
    sound: str
    motion: str
    colour: tuple[int, int, int]
    base_freq: float  # Hz


@dataclass
class SynthObject:
    """One sounding object in one clip: its class and the per-clip signature."""

    cls: SynthClass
    height: float  # vertical centre as a fraction of the frame height (0 = top); sets the pitch
    size: float  # radius as a fraction of the frame's shorter side; sets the loudness
    phase: float  # motion phase
    gates: list[tuple[float, float]]  # (on, off) seconds: visible and audible during these intervals


@dataclass
class SynthClip:
    index: int
    ytid: str
    start: float
    objects: list[SynthObject]
    split: str
    file: str = ""
    has_audio: bool = True

    @property
    def labels(self) -> list[SynthClass]:
        return [o.cls for o in self.objects]


@dataclass
class SyntheticDataset:
    """What :func:`make_synthetic_dataset` wrote."""

    root: Path
    videos: Path
    csv: Path
    label_csv: Path
    layout: str
    classes: list[SynthClass]
    clips: list[SynthClip] = field(default_factory=list)


def make_classes(num_classes: int) -> list[SynthClass]:
    """K classes with distinct (shape, sound, motion, colour, pitch) combinations."""
    classes = []
    for k in range(num_classes):
        hue = (k * 0.618034) % 1.0  # golden-ratio hues stay far apart for any K
        rgb = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.9, 1.0))
        # base pitches spread over 3.5 octaves from 220 Hz, in an order unrelated to the shape / sound cycles
        freq = 220.0 * 2 ** (3.5 * ((k * 0.381966 + 0.1) % 1.0))
        shape, sound, motion = SHAPES[k % len(SHAPES)], SOUNDS[k % len(SOUNDS)], MOTIONS[(k // 2) % len(MOTIONS)]
        colour = colour_name(rgb)  # named from the RGB actually drawn
        classes.append(
            SynthClass(k, f"/t/syn{k:03d}", f"{colour} {shape} {sound} {k:03d}", shape, sound, motion, rgb, freq)
        )
    return classes


def _ytid(rng: np.random.Generator) -> str:
    return "".join(_YTID_CHARS[i] for i in rng.integers(0, len(_YTID_CHARS), 11))


def _gates(rng: np.random.Generator, duration: float) -> list[tuple[float, float]]:
    """Random on/off rhythm: on for 0.3-0.9 s, off for 0.15-0.5 s, starting on; at least one on interval."""
    gates, t = [], float(rng.uniform(0.0, 0.2))
    while t < duration - 0.1:
        on = float(rng.uniform(0.3, 0.9))
        gates.append((round(t, 4), round(min(duration, t + on), 4)))
        t += on + float(rng.uniform(0.15, 0.5))
    return gates or [(0.0, duration)]


def make_clip_spec(
    index: int,
    classes: list[SynthClass],
    *,
    seed: int,
    duration: float,
    layout: str,
    multi_label: float,
    object_size: tuple[float, float] = (0.08, 0.16),
) -> SynthClip:
    """The random choices for clip `index` (deterministic in (seed, index)); object radii are drawn uniformly
    from `object_size` (fractions of the frame's shorter side)."""
    rng = np.random.default_rng([seed, index])
    ytid = _ytid(rng)
    n_obj = 2 if (layout == "audioset" and len(classes) > 1 and rng.random() < multi_label) else 1
    chosen = rng.choice(len(classes), size=n_obj, replace=False)
    objects = [
        SynthObject(
            classes[int(c)],
            height=float(rng.uniform(0.2, 0.8)),
            size=float(rng.uniform(*object_size)),
            phase=float(rng.uniform(0, 2 * np.pi)),
            gates=_gates(rng, duration),
        )
        for c in sorted(chosen)
    ]
    start = float(rng.integers(0, 30)) * 10.0  # AudioSet-style start times (the files hold just the clip)
    split = "test" if rng.random() < 0.2 else "train"
    return SynthClip(index, ytid, start, objects, split)


def _position(obj: SynthObject, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object centre (x, y) as fractions of width / height at times t [T]."""
    p, y0 = obj.phase, obj.height
    if obj.cls.motion == "horizontal":
        return 0.5 + 0.3 * np.sin(2 * np.pi * 0.4 * t + p), np.full_like(t, y0)
    if obj.cls.motion == "circle":
        return 0.5 + 0.25 * np.cos(2 * np.pi * 0.5 * t + p), y0 + 0.08 * np.sin(2 * np.pi * 0.5 * t + p)
    if obj.cls.motion == "zigzag":
        return 0.2 + 0.6 * np.abs(((0.3 * t + p / (2 * np.pi)) % 2.0) - 1.0), np.full_like(t, y0)
    return np.full_like(t, 0.3 + 0.4 * (p / (2 * np.pi))), np.full_like(t, y0)


def _gate_signal(gates: list[tuple[float, float]], t: np.ndarray) -> np.ndarray:
    on = np.zeros_like(t, dtype=bool)
    for a, b in gates:
        on |= (t >= a) & (t < b)
    return on


def render_frames(clip: SynthClip, *, duration: float, fps: float, width: int, height: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames: a flat background and each object drawn while its sound is on."""
    n = max(1, round(duration * fps))
    t = np.arange(n) / fps
    bg_rng = np.random.default_rng([seed, clip.index, 7])
    bg = (bg_rng.uniform(0.05, 0.25, 3) * 255).astype(np.uint8)
    frames = np.empty((n, height, width, 3), np.uint8)
    frames[:] = bg
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    short = min(width, height)
    for obj in clip.objects:
        cx, cy = _position(obj, t)
        visible = _gate_signal(obj.gates, t + 0.5 / fps)  # the frame shows the middle of its interval
        r = obj.size * short
        for i in np.nonzero(visible)[0]:
            dx, dy = xx - cx[i] * width, yy - cy[i] * height
            frames[i][_shape_mask(obj.cls.shape, dx, dy, r)] = obj.cls.colour
    return frames


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(ax, ay) <= r * 0.85
    if shape == "triangle":
        return (dy <= r) & (dy >= -r) & (ax <= (dy + r) / 2)
    if shape == "diamond":
        return ax + ay <= r * 1.2
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        return ((ax <= r / 3) & (ay <= r)) | ((ay <= r / 3) & (ax <= r))
    return (ax <= r * 1.3) & (ay <= r / 3)  # bar


def render_audio(clip: SynthClip, *, duration: float, sample_rate: int, seed: int) -> np.ndarray:
    """float32 [N] mono: each object's sound, gated like its picture, pitch from its height, level from its size."""
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng([seed, clip.index, 11])
    out = 0.005 * rng.standard_normal(n)  # faint background hiss
    ramp = max(1, int(0.01 * sample_rate))  # 10 ms fades avoid clicks at the gates
    for obj in clip.objects:
        f = obj.cls.base_freq * 2 ** (0.5 - obj.height)
        kind = obj.cls.sound
        if kind == "tone":
            s = np.sin(2 * np.pi * f * t)
        elif kind == "chirp":  # rises by an octave within every second
            s = np.sin(2 * np.pi * f * (t + 0.5 * (t % 1.0) ** 2 / 1.0))
        elif kind == "noise":  # a band of +-25 % around f
            spec = np.fft.rfft(rng.standard_normal(n))
            freqs = np.fft.rfftfreq(n, 1 / sample_rate)
            spec[(freqs < 0.75 * f) | (freqs > 1.25 * f)] = 0
            s = np.fft.irfft(spec, n)
            s /= np.abs(s).max() + 1e-9
        elif kind == "am":
            s = np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 7 * t))
        elif kind == "square":
            s = 0.6 * np.tanh(4 * np.sin(2 * np.pi * f * t))
        else:  # clicks: decaying bursts at f / 40 per second
            period = 40.0 / f
            s = np.exp(-(t % period) * 200) * np.sin(2 * np.pi * 4 * f * t)
        env = _gate_signal(obj.gates, t).astype(np.float64)
        env = np.convolve(env, np.ones(ramp) / ramp, mode="same")
        out += (0.15 + 1.5 * obj.size) * env * s
    return np.clip(out, -1, 1).astype(np.float32)


def write_video(
    path: str | Path,
    frames: np.ndarray | None,
    audio: np.ndarray | None,
    *,
    fps: float,
    sample_rate: int,
    channels: int = 1,
) -> None:
    """Write H.264 video (yuv420p) and / or AAC audio into an MP4 with PyAV; either may be None (for tests)."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        vs = None
        if frames is not None:
            vs = c.add_stream("libx264", rate=round(fps) if float(fps).is_integer() else fps)
            vs.height, vs.width = frames.shape[1:3]
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast", "crf": "20"}
            vs.codec_context.thread_count = 1  # one thread: byte-identical output for a seed
        a_stream = None
        if audio is not None:
            a_stream = c.add_stream("aac", rate=sample_rate)
            a_stream.layout = "mono" if channels == 1 else "stereo"
        if vs is not None:
            for arr in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    c.mux(packet)
            for packet in vs.encode():
                c.mux(packet)
        if a_stream is not None:
            planar = np.ascontiguousarray(np.repeat(audio[None, :], channels, axis=0), dtype=np.float32)
            if channels == 2:  # make the channels differ a little, as real stereo does
                planar[1] *= 0.8
            for k in range(0, planar.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(planar[:, k : k + 1024]), format="fltp", layout=a_stream.layout.name
                )
                frame.sample_rate = sample_rate
                frame.pts = k
                for packet in a_stream.encode(frame):
                    c.mux(packet)
            for packet in a_stream.encode():
                c.mux(packet)


def _even(x: int) -> int:
    return max(2, x - x % 2)  # H.264 with yuv420p needs even sizes


def _write_one(args: tuple) -> None:
    clip, path, duration, fps, width, height, sample_rate, channels, seed = args
    frames = render_frames(clip, duration=duration, fps=fps, width=width, height=height, seed=seed)
    audio = render_audio(clip, duration=duration, sample_rate=sample_rate, seed=seed) if clip.has_audio else None
    write_video(path, frames, audio, fps=fps, sample_rate=sample_rate, channels=channels)


def _clear_stale(videos: Path, keep: set[str], overwrite: bool) -> None:
    """Refuse (or with `overwrite` remove) what an earlier dataset left in `videos` that this one will not write."""
    stale = sorted(p for p in videos.rglob("*") if not p.is_dir() and p.relative_to(videos).as_posix() not in keep)
    if not stale:
        return
    if not overwrite:
        raise ValueError(
            f"{videos} already holds {len(stale)} file(s) this dataset does not write (e.g. {stale[0].name}, from "
            "an earlier synth?); they would end up unmatched in prepare: choose an empty --out, or --overwrite "
            "to remove them"
        )
    for p in stale:
        p.unlink()
    log.info("removed %d file(s) of an earlier dataset from %s", len(stale), videos)


def make_synthetic_dataset(
    out_dir: str | Path,
    *,
    num_clips: int = 64,
    num_classes: int = 8,
    duration: float = 10.0,
    size: int | tuple[int, int] = 96,
    fps: float = 8.0,
    seed: int = 0,
    layout: Literal["audioset", "vggsound"] = "audioset",
    sample_rate: int = 16000,
    channels: int = 1,
    multi_label: float = 0.25,
    object_size: tuple[float, float] = (0.08, 0.16),
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> SyntheticDataset:
    """Write `num_clips` clips into ``out_dir/videos`` plus the metadata CSV and the label index CSV.

    size: square side or (width, height) in pixels (rounded down to even). multi_label: fraction of AudioSet-layout
    clips with two classes. object_size: (min, max) object radius as a fraction of the shorter side (larger objects
    are easier to see in small frames; loudness follows size). workers > 0 renders in that many processes (the
    output does not depend on it). `progress(n)` is called after each clip is written, with the clips written so far.
    Files in ``out_dir/videos`` that this dataset does not write (an earlier, different dataset) would be listed
    as unmatched by ``prepare``: they are refused with a ValueError, or removed first when `overwrite` is set.
    """
    if layout not in ("audioset", "vggsound"):
        raise ValueError(f"layout must be 'audioset' or 'vggsound', got {layout!r}")
    if num_clips < 1 or num_classes < 1:
        raise ValueError("num_clips and num_classes must be at least 1")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    width, height = (size, size) if isinstance(size, int) else size
    width, height = _even(int(width)), _even(int(height))
    root = Path(out_dir)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    classes = make_classes(num_classes)
    clips = [
        make_clip_spec(
            i,
            classes,
            seed=seed,
            duration=duration,
            layout=layout,
            multi_label=multi_label,
            object_size=object_size,
        )
        for i in range(num_clips)
    ]
    for c in clips:
        stem = f"{c.ytid}_{c.start:.3f}" if layout == "audioset" else f"{c.ytid}_{int(c.start):06d}"
        c.file = f"{stem}.mp4"
    _clear_stale(videos, {c.file for c in clips}, overwrite)
    jobs = [(c, videos / c.file, duration, fps, width, height, sample_rate, channels, seed) for c in clips]
    if workers > 0:
        with multiprocessing.get_context().Pool(workers) as pool:
            for done, _ in enumerate(pool.imap(_write_one, jobs, chunksize=1), 1):
                if progress is not None:
                    progress(done)
    else:
        for done, job in enumerate(jobs, 1):
            _write_one(job)
            if progress is not None:
                progress(done)

    label_csv = root / "class_labels_indices.csv"
    with open(label_csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["index", "mid", "display_name"])
        for c in classes:
            w.writerow([c.index, c.mid if layout == "audioset" else c.name, c.name])
    meta_csv = root / f"{layout}.csv"
    with open(meta_csv, "w", newline="") as f:
        if layout == "audioset":
            f.write("# Segments csv created by cavmae synth\n")
            f.write(f"# num_ytids={len(clips)}, num_segs={len(clips)}, num_unique_labels={num_classes}\n")
            f.write("# YTID, start_seconds, end_seconds, positive_labels\n")
            for c in clips:
                mids = ",".join(o.cls.mid for o in c.objects)
                f.write(f'{c.ytid}, {c.start:.3f}, {c.start + duration:.3f}, "{mids}"\n')
        else:
            w = csv.writer(f, lineterminator="\n")
            for c in clips:
                w.writerow([c.ytid, int(c.start), c.objects[0].cls.name, c.split])
    log.info("wrote %d synthetic clips (%d classes, %s layout) to %s", len(clips), num_classes, layout, root)
    return SyntheticDataset(root, videos, meta_csv, label_csv, layout, classes, clips)
