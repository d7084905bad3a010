"""``cavmae synth``: a synthetic audio-visual dataset written as real H.264 + AAC files, with events.

Each of K classes pairs a sound (tone, chirp, noise band, amplitude-modulated tone, square wave, click train) at
its own base pitch with a picture (an object of its own shape, colour and motion). A clip's class object is
visible and audible for the whole clip, over a dark background of the clip's own shade: the class says nothing
about the one clip. What tells clips of one class apart is what happens when. Each clip holds a few EVENTS at
random times and of random durations: an object appears and stays still while a sound plays, and both carry the
same three attributes (:data:`EVENT_COLOURS`, :data:`EVENT_SHAPES`, :data:`EVENT_SIZES`):

- colour -> pitch: red, yellow, green, cyan, blue, magenta sound at 400 Hz * 2 ** (0.6 i) (400 ... 3200 Hz);
- shape -> timbre: circle = sine, square = buzz (six harmonics), triangle = noise band (+-20 %), cross = tremolo
  (12 Hz);
- size -> loudness: small (radius 0.1 of the shorter side) is quiet, large (radius 0.2) is loud (+8 dB).

The event's position is drawn too; it has no sound. Events start and end on video frame boundaries, so the audio
of an event starts within 10 ms (its fade-in) of the first frame that shows it. Within a clip events do not
overlap: they follow each other with pauses of 0.1-0.4 s and last 0.4-1.0 s, so about three quarters of the frames
show one; one event is always active at the middle of the clip (``duration / 2``, the time of the frame ``prepare``
stores as the middle one, which the demo embeds).

What a frame shows: video frame i covers [i / fps, (i + 1) / fps); it shows the class object(s) where their motion
has them at the middle of that interval and, on top and outlined in black, the event active during it, if any. So
one frame and the whole audio match through the event: its colour, shape and size must be heard among the clip's
events (pitch, timbre, loudness); several frames, or a frame and the audio around its time, match through when.

The ground truth is written to ``<out>/events.json``: a JSON object whose keys are the clips' sample keys as
``prepare`` names them (the file stem without dots, :func:`cavmae.data.shards.make_key`: ``abc_40.000.mp4`` ->
``abc_40000``) and whose values list the clip's events in time order::

    {"abc_40000": [{"start": 0.375, "end": 1.0, "colour": "red", "shape": "circle", "size": "large",
                    "x": 0.41, "y": 0.66, "pitch_hz": 400.0, "timbre": "sine", "amplitude": 0.5, "radius": 0.2}]}

start / end: seconds from the start of the file, active on [start, end) (end is cut to the clip's duration); x, y:
the centre as fractions of the width and height (0 = left / top); pitch_hz, timbre, amplitude (peak, of a full
scale of 1) and radius (fraction of the shorter side) follow from colour, shape and size. :func:`read_events` reads
it back; :attr:`SynthClip.events` holds the same.

In the AudioSet layout some clips hold two classes (two class objects, two sounds: a multi-label clip). The files
feed the same path as real data: ``cavmae prepare --videos <out>/videos --csv <out>/<layout>.csv --label-csv
<out>/class_labels_indices.csv``. Everything is drawn from ``numpy.random.default_rng([seed, clip, ...])``, and the
encoders run single-threaded, so the same seed gives byte-identical files.

Layouts: ``audioset`` writes ``<ytid>_<start:.3f>.mp4`` files (dot in the name, as AudioSet clips have) and
``audioset.csv`` with three ``#`` header lines and ``YTID, start, end, "mid1,mid2"`` rows; ``vggsound`` writes
``<ytid>_<start:06d>.mp4`` and ``vggsound.csv`` rows ``ytid,start,display name,train|test``. Both write
``class_labels_indices.csv`` (``index,mid,display_name``).
"""

from __future__ import annotations

import colorsys
import csv
import json
import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np

from cavmae.data.shards import make_key

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

# The events' attributes, each seen and heard: entry i of a picture table goes with entry i of its sound table.
EVENT_COLOURS = (
    ("red", (255, 40, 40)),
    ("yellow", (255, 235, 40)),
    ("green", (40, 220, 60)),
    ("cyan", (40, 230, 235)),
    ("blue", (50, 80, 255)),
    ("magenta", (240, 50, 240)),
)
EVENT_PITCHES = tuple(400.0 * 2 ** (0.6 * i) for i in range(len(EVENT_COLOURS)))  # Hz; 0.6 octave apart
EVENT_SHAPES = ("circle", "square", "triangle", "cross")
EVENT_TIMBRES = ("sine", "buzz", "noise", "tremolo")
EVENT_SIZES = (("small", 0.1, 0.2), ("large", 0.2, 0.5))  # name, radius (of the shorter side), peak amplitude
EVENT_SECONDS = (0.4, 1.0)  # range of an event's duration, before rounding to whole video frames
GAP_SECONDS = (0.1, 0.4)  # range of the pause between two events of a clip
CLASS_AMPLITUDE = 0.25  # peak of a class object's sound (it plays the whole clip)


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
    """A class's object in one clip: visible and sounding for the whole clip; where and how large it is are
    drawn per clip and do not change its sound."""

    cls: SynthClass
    height: float  # vertical centre as a fraction of the frame height (0 = top)
    size: float  # radius as a fraction of the frame's shorter side
    phase: float  # motion phase


@dataclass(frozen=True)
class SynthEvent:
    """One event of a clip: an object shown at (x, y) while its sound plays, on [start, end) seconds."""

    start: float
    end: float
    colour: str  # a name of EVENT_COLOURS; sets the pitch
    shape: str  # one of EVENT_SHAPES; sets the timbre
    size: str  # "small" | "large"; sets the loudness
    x: float  # centre, fraction of the width (0 = left)
    y: float  # centre, fraction of the height (0 = top)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return dict(EVENT_COLOURS)[self.colour]

    @property
    def pitch(self) -> float:
        return EVENT_PITCHES[[name for name, _ in EVENT_COLOURS].index(self.colour)]

    @property
    def timbre(self) -> str:
        return EVENT_TIMBRES[EVENT_SHAPES.index(self.shape)]

    @property
    def radius(self) -> float:
        return next(r for name, r, _ in EVENT_SIZES if name == self.size)

    @property
    def amplitude(self) -> float:
        return next(a for name, _, a in EVENT_SIZES if name == self.size)

    def to_json(self) -> dict:
        """The record of ``events.json`` (the fields, then what follows from them)."""
        return {
            **asdict(self),
            "pitch_hz": round(self.pitch, 3),
            "timbre": self.timbre,
            "amplitude": self.amplitude,
            "radius": self.radius,
        }


@dataclass
class SynthClip:
    index: int
    ytid: str
    start: float
    objects: list[SynthObject]
    split: str
    events: list[SynthEvent] = field(default_factory=list)  # in time order, not overlapping
    file: str = ""
    has_audio: bool = True

    @property
    def labels(self) -> list[SynthClass]:
        return [o.cls for o in self.objects]

    @property
    def key(self) -> str:
        """The sample key ``prepare`` gives this clip's file (and ``events.json`` uses)."""
        return make_key(Path(self.file).stem)


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
    events: Path | None = None  # events.json: each clip's events by sample key (format: the module docstring)


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


def num_frames(duration: float, fps: float) -> int:
    """Video frames of a clip: frame i covers [i / fps, (i + 1) / fps)."""
    return max(1, round(duration * fps))


def _event_spans(rng: np.random.Generator, duration: float, fps: float) -> list[tuple[int, int]]:
    """[first, end) video frames of a clip's events: one covers the frame at duration / 2, others fill the clip
    before and after it, separated by pauses."""
    n = num_frames(duration, fps)

    def frames(seconds: tuple[float, float]) -> int:
        lo, hi = (max(1, round(s * fps)) for s in seconds)
        return int(rng.integers(lo, hi + 1))

    shortest = max(1, round(EVENT_SECONDS[0] * fps))
    middle = min(n - 1, int(duration / 2 * fps + 1e-6))  # the frame prepare's middle time falls in
    length = frames(EVENT_SECONDS)
    first = middle - int(rng.integers(0, length))
    spans = [(max(0, first), min(n, first + length))]
    t = spans[-1][1] + frames(GAP_SECONDS)
    while t + shortest <= n:
        spans.append((t, min(n, t + frames(EVENT_SECONDS))))
        t = spans[-1][1] + frames(GAP_SECONDS)
    t = spans[0][0] - frames(GAP_SECONDS)
    while t - shortest >= 0:
        spans.insert(0, (max(0, t - frames(EVENT_SECONDS)), t))
        t = spans[0][0] - frames(GAP_SECONDS)
    return spans


def make_events(rng: np.random.Generator, *, duration: float, fps: float) -> list[SynthEvent]:
    """A clip's events: times from :func:`_event_spans`, attributes and position drawn uniformly."""
    events = []
    for first, end in _event_spans(rng, duration, fps):
        colour = EVENT_COLOURS[int(rng.integers(len(EVENT_COLOURS)))][0]
        shape = EVENT_SHAPES[int(rng.integers(len(EVENT_SHAPES)))]
        size = EVENT_SIZES[int(rng.integers(len(EVENT_SIZES)))][0]
        x, y = (round(float(v), 4) for v in rng.uniform(0.2, 0.8, 2))
        events.append(SynthEvent(round(first / fps, 6), round(min(end / fps, duration), 6), colour, shape, size, x, y))
    return events


def make_clip_spec(
    index: int,
    classes: list[SynthClass],
    *,
    seed: int,
    duration: float,
    fps: float,
    layout: str,
    multi_label: float,
    object_size: tuple[float, float] = (0.08, 0.16),
) -> SynthClip:
    """The random choices for clip `index` (deterministic in (seed, index)); class object radii are drawn
    uniformly from `object_size` (fractions of the frame's shorter side)."""
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
        )
        for c in sorted(chosen)
    ]
    start = float(rng.integers(0, 30)) * 10.0  # AudioSet-style start times (the files hold just the clip)
    split = "test" if rng.random() < 0.2 else "train"
    events = make_events(np.random.default_rng([seed, index, 5]), duration=duration, fps=fps)
    return SynthClip(index, ytid, start, objects, split, events)


def read_events(path: str | Path) -> dict[str, list[SynthEvent]]:
    """The events of each clip from an ``events.json`` that :func:`make_synthetic_dataset` wrote, by sample key."""
    names = {f.name for f in fields(SynthEvent)}
    try:
        schedule = json.loads(Path(path).read_text())
        return {key: [SynthEvent(**{k: e[k] for k in names}) for e in events] for key, events in schedule.items()}
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not an events.json of cavmae synth ({type(e).__name__}: {e})") from e


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


def _footprint(shape: str, cx: float, cy: float, r: float, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
    """Where `shape` of radius r px centred at pixel (cx, cy) lies in an [height, width] frame: the rows and columns
    of its bounding box and the bool mask [rows, columns] within it (empty outside the frame)."""
    reach = 1.3 * r + 1  # the widest shape (bar) reaches 1.3 r from its centre
    x0, x1 = max(0, int(cx - reach)), max(0, min(width, int(cx + reach) + 2))
    y0, y1 = max(0, int(cy - reach)), max(0, min(height, int(cy + reach) + 2))
    yy, xx = np.mgrid[y0 : max(y0, y1), x0 : max(x0, x1)].astype(np.float32)
    return slice(y0, y1), slice(x0, x1), _shape_mask(shape, xx - cx, yy - cy, r)


def render_frames(clip: SynthClip, *, duration: float, fps: float, width: int, height: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames: a flat background, the class object(s), and on top, outlined in black, the
    event active in each frame."""
    n = num_frames(duration, fps)
    t = (np.arange(n) + 0.5) / fps  # each frame shows the middle of its interval
    bg_rng = np.random.default_rng([seed, clip.index, 7])
    bg = (bg_rng.uniform(0.05, 0.25, 3) * 255).astype(np.uint8)
    frames = np.empty((n, height, width, 3), np.uint8)
    frames[:] = bg
    short = min(width, height)
    for obj in clip.objects:
        cx, cy = _position(obj, t)
        for i in range(n):
            rows, cols, mask = _footprint(obj.cls.shape, cx[i] * width, cy[i] * height, obj.size * short, height, width)
            frames[i, rows, cols][mask] = obj.cls.colour
    for ev in clip.events:
        shown = np.nonzero((ev.start <= t) & (t < ev.end))[0]  # consecutive frames
        if not len(shown):
            continue
        cx, cy, r = ev.x * width, ev.y * height, ev.radius * short
        # a black outline keeps the event apart from a class object of its colour beneath it
        for radius, colour in ((r + max(1.0, 0.15 * r), (0, 0, 0)), (r, ev.rgb)):
            rows, cols, mask = _footprint(ev.shape, cx, cy, radius, height, width)
            frames[shown[0] : shown[-1] + 1, rows, cols][:, mask] = colour
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


def _class_sound(cls: SynthClass, t: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A class's sound at its base pitch over times t [N], peak about 1."""
    f, kind = cls.base_freq, cls.sound
    if kind == "tone":
        return np.sin(2 * np.pi * f * t)
    if kind == "chirp":  # rises by an octave within every second
        return np.sin(2 * np.pi * f * (t + 0.5 * (t % 1.0) ** 2 / 1.0))
    if kind == "noise":  # a band of +-25 % around f
        return _noise_band(rng, len(t), f, 0.25, sample_rate)
    if kind == "am":
        return np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 7 * t))
    if kind == "square":
        return np.tanh(4 * np.sin(2 * np.pi * f * t))
    period = 40.0 / f  # clicks: decaying bursts at f / 40 per second
    return np.exp(-(t % period) * 200) * np.sin(2 * np.pi * 4 * f * t)


def _noise_band(rng: np.random.Generator, n: int, f: float, width: float, sample_rate: int) -> np.ndarray:
    """n samples of noise within f * (1 +- width), peak 1."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spec[(freqs < (1 - width) * f) | (freqs > (1 + width) * f)] = 0
    s = np.fft.irfft(spec, n)
    return s / (np.abs(s).max() + 1e-9)


def _event_sound(ev: SynthEvent, t: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """An event's sound over its times t [N]: its pitch in its timbre, peak about 1."""
    f = ev.pitch
    if ev.timbre == "sine":
        return np.sin(2 * np.pi * f * t)
    if ev.timbre == "buzz":  # six equal harmonics, those below the Nyquist frequency
        harmonics = [k for k in range(1, 7) if k * f < sample_rate / 2]
        return sum(np.sin(2 * np.pi * k * f * t) for k in harmonics) / len(harmonics)
    if ev.timbre == "noise":
        return _noise_band(rng, len(t), f, 0.2, sample_rate)
    return np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 12 * t))  # tremolo


def render_audio(clip: SynthClip, *, duration: float, sample_rate: int, seed: int) -> np.ndarray:
    """float32 [N] mono: the class sound(s) throughout, and each event's sound over [start, end)."""
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng([seed, clip.index, 11])
    out = 0.005 * rng.standard_normal(n)  # faint background hiss
    for obj in clip.objects:
        out += CLASS_AMPLITUDE * _class_sound(obj.cls, t, rng, sample_rate)
    ramp = max(1, int(0.01 * sample_rate))  # 10 ms fades avoid clicks at the events' edges
    for ev in clip.events:
        a, b = round(ev.start * sample_rate), min(n, round(ev.end * sample_rate))
        if b <= a:
            continue
        env = np.ones(b - a)
        fade = min(ramp, (b - a) // 2)
        env[:fade] = np.linspace(0.0, 1.0, fade, endpoint=False)
        env[b - a - fade :] = np.linspace(1.0, 0.0, fade)
        out[a:b] += ev.amplitude * env * _event_sound(ev, t[a:b], rng, sample_rate)
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
    """Write `num_clips` clips into ``out_dir/videos`` plus the metadata CSV, the label index CSV and
    ``events.json`` (each clip's events; format: the module docstring).

    size: square side or (width, height) in pixels (rounded down to even). multi_label: fraction of AudioSet-layout
    clips with two classes. object_size: (min, max) radius of the class objects as a fraction of the shorter side
    (larger objects are easier to see in small frames; events have their own sizes, :data:`EVENT_SIZES`).
    workers > 0 renders in that many processes (the output does not depend on it). `progress(n)` is called after
    each clip is written, with the clips written so far.
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
            fps=fps,
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
    events_json = root / "events.json"
    schedule = {c.key: [e.to_json() for e in c.events] for c in clips}
    events_json.write_text(json.dumps(schedule, indent=1) + "\n")
    log.info("wrote %d synthetic clips (%d classes, %s layout) to %s", len(clips), num_classes, layout, root)
    return SyntheticDataset(root, videos, meta_csv, label_csv, layout, classes, clips, events_json)
