"""cavmae.data.clips events: on the decoded files, each event's sound starts with its picture, a frame shows the
events active at its time, the middle frame prepare stores shows one, and events.json names the shards' keys."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from cavmae.data.clips import (
    EVENT_COLOURS,
    EVENT_PITCHES,
    SynthEvent,
    colour_name,
    make_synthetic_dataset,
    read_events,
)
from cavmae.data.media import decode_clip

FPS, RATE, DURATION = 8.0, 16000, 3.0


@pytest.fixture(scope="module")
def event_clips(tmp_path_factory):
    # one class (class 0: a 280 Hz tone, below every event's pitch band), so that the audio test hears the events
    # alone in their bands, and clips of one class can be compared
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("events"), num_clips=4, num_classes=1, duration=DURATION, size=64, fps=FPS, seed=3
    )


def _shows(frames: np.ndarray, ev: SynthEvent) -> np.ndarray:
    """[T] bool: the pixels at the event's centre have its colour (frames [T, H, W, 3] uint8, decoded)."""
    height, width = frames.shape[1:3]
    r = max(1, round(ev.radius * min(width, height) / 5))  # well inside every event shape
    x, y = round(ev.x * width), round(ev.y * height)
    patch = frames[:, y - r : y + r + 1, x - r : x + r + 1].astype(np.float32)
    return np.abs(patch - np.array(ev.rgb, np.float32)).mean(axis=(1, 2, 3)) < 40


def _seen_apart(clip, ev: SynthEvent) -> bool:
    """Whether the pixel test can tell the event from the class object (class 0 is red: red events are outlined
    from it in black, but the test looks only at the event's centre)."""
    return ev.colour != colour_name(clip.objects[0].cls.colour)


def _band_energy(audio: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """(times [S], energy [S]) of the audio within 0.85 f .. 1.2 f: 50 ms windows every 5 ms."""
    win, hop = 800, 80
    starts = np.arange(0, len(audio) - win, hop)
    spec = np.abs(np.fft.rfft(audio[starts[:, None] + np.arange(win)] * np.hanning(win), axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1 / RATE)
    return (starts + win / 2) / RATE, spec[:, (freqs >= 0.85 * f) & (freqs <= 1.2 * f)].sum(axis=1)


def test_sound_and_picture_of_every_event_start_together(event_clips):
    n_frames = round(DURATION * FPS)
    checked = 0
    for clip in event_clips.clips:
        decoded = decode_clip(event_clips.videos / clip.file, num_frames=n_frames)  # frame times i / fps: every frame
        assert np.allclose(decoded.frame_times, np.arange(n_frames) / FPS)
        frame_starts = np.arange(n_frames) / FPS
        for k, ev in enumerate(clip.events):
            if not _seen_apart(clip, ev):
                continue
            # look from the middle of the pause before the event (the clip's start for the first) to its end
            since = 0.0 if k == 0 else (clip.events[k - 1].end + ev.start) / 2
            shown = _shows(decoded.frames, ev) & (frame_starts >= since) & (frame_starts < ev.end)
            assert shown.any(), (clip.key, ev)
            visual_onset = frame_starts[shown.argmax()]
            times, energy = _band_energy(decoded.audio, ev.pitch)
            inside = (times >= since) & (times < ev.end)
            low, high = energy[inside].min(), np.percentile(energy[inside], 90)
            # the event's pitch sounds in this window, and not before the event (unless it starts the clip)
            assert high > 4 * low or ev.start == 0, (clip.key, ev)
            audio_onset = times[inside][np.argmax(energy[inside] > 0.5 * high)]
            assert visual_onset == pytest.approx(ev.start)
            assert abs(audio_onset - visual_onset) <= 1 / FPS, (clip.key, ev, audio_onset, visual_onset)
            checked += 1
    assert checked >= 8


def test_a_frame_shows_the_events_active_at_its_time(event_clips):
    n_frames = round(DURATION * FPS)
    shown_frames = 0
    for clip in event_clips.clips:
        frames = decode_clip(event_clips.videos / clip.file, num_frames=n_frames).frames
        middle_of = (np.arange(n_frames) + 0.5) / FPS
        active = {ev: (middle_of >= ev.start) & (middle_of < ev.end) for ev in clip.events}
        for ev in clip.events:
            # frames where another event of its colour is shown (it may cover the same spot) do not count
            alike = [active[e] for e in clip.events if e != ev and e.colour == ev.colour]
            judged = ~np.any(alike, axis=0) if alike else np.ones(n_frames, bool)
            if _seen_apart(clip, ev):
                assert (_shows(frames, ev) == active[ev])[judged].all(), (clip.key, ev)
        any_active = np.any(list(active.values()), axis=0)
        assert any_active[int(DURATION / 2 * FPS)], clip.key  # the frame at the clip's middle shows an event
        shown_frames += int(any_active.sum())
    assert shown_frames >= 0.6 * n_frames * len(event_clips.clips)  # most frames show an event


def test_clips_of_one_class_differ_in_their_events(event_clips):
    clips = event_clips.clips
    assert {c.objects[0].cls.index for c in clips} == {0}
    for i, a in enumerate(clips):
        for b in clips[i + 1 :]:
            assert [(e.start, e.end) for e in a.events] != [(e.start, e.end) for e in b.events]
    for clip in event_clips.clips:
        events = clip.events
        assert len(events) >= 2 and all(x.end < y.start for x, y in zip(events, events[1:]))  # in order, apart
        assert all(0 <= e.start < e.end <= DURATION for e in events)


def test_events_json_round_trips_and_maps_attributes(event_clips):
    schedule = json.loads(event_clips.events.read_text())
    assert list(schedule) == [c.key for c in event_clips.clips]
    assert read_events(event_clips.events) == {c.key: c.events for c in event_clips.clips}
    first = schedule[event_clips.clips[0].key][0]
    ev = event_clips.clips[0].events[0]
    assert first["start"] == ev.start and first["end"] == ev.end and first["colour"] == ev.colour
    assert first["pitch_hz"] == pytest.approx(EVENT_PITCHES[[n for n, _ in EVENT_COLOURS].index(ev.colour)], abs=1e-3)
    assert {first["timbre"], first["size"]} <= {"sine", "buzz", "noise", "tremolo", "small", "large"}
    bad = event_clips.root / "bad.json"
    bad.write_text('{"k": [{"start": 0}]}')
    with pytest.raises(ValueError, match="bad.json"):
        read_events(bad)


def test_prepare_keys_and_middle_frame_match_the_events(tiny_shards):
    """Through prepare (AudioSet layout, dots in the file names): every sample key is in events.json, and the
    middle one of the ten stored frames (f5.jpg, at duration / 2) shows the event active then."""
    events = read_events(tiny_shards.synth.events)
    assert set(events) == tiny_shards.keys
    duration = 2.0  # the tiny_shards clips
    seen = 0
    for url in tiny_shards.urls:
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                if not member.name.endswith(".f5.jpg"):
                    continue
                key = member.name[: -len(".f5.jpg")]
                frame = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
                active = [e for e in events[key] if e.start <= duration / 2 < e.end]
                assert len(active) == 1, (key, events[key])
                assert _shows(frame[None], active[0])[0], (key, active[0])
                seen += 1
    assert seen == len(tiny_shards.keys)
