"""cavmae.data.clips: real H.264 + AAC files, deterministic, layouts; the class object and sound last the whole clip
(the events: test_synth_events.py)."""

import hashlib

import av
import numpy as np

from cavmae.data.clips import make_synthetic_dataset
from cavmae.data.labels import LabelIndex, read_audioset_csv, read_vggsound_csv
from cavmae.data.media import decode_clip


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


def test_same_seed_same_bytes_other_seed_other_clips(tmp_path):
    kw = dict(num_clips=3, num_classes=3, duration=1.0, size=32, fps=8)
    a = make_synthetic_dataset(tmp_path / "a", seed=5, **kw)
    b = make_synthetic_dataset(tmp_path / "b", seed=5, workers=2, **kw)
    c = make_synthetic_dataset(tmp_path / "c", seed=6, **kw)
    assert _digests(a.root) == _digests(b.root) and "events.json" in _digests(a.root)
    assert {cl.file for cl in a.clips}.isdisjoint({cl.file for cl in c.clips})


def test_streams_and_audioset_layout(tmp_path):
    ds = make_synthetic_dataset(
        tmp_path,
        num_clips=6,
        num_classes=3,
        duration=1.5,
        size=(48, 32),
        fps=10,
        sample_rate=44100,
        channels=2,
        multi_label=0.5,
        seed=1,
    )
    with av.open(str(ds.videos / ds.clips[0].file)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height, float(v.average_rate)) == ("h264", 48, 32, 10.0)
        assert (a.codec_context.name, a.rate, a.codec_context.channels) == ("aac", 44100, 2)
    assert ds.csv.read_text().startswith("#") and ds.csv.read_text().count("\n#") == 2
    rows, problems = read_audioset_csv(ds.csv)
    assert not problems and len(rows) == 6
    assert any(len(r.labels) == 2 for r in rows)
    index = LabelIndex.from_csv(ds.label_csv)
    for row, clip in zip(rows, ds.clips):
        assert (ds.videos / f"{row.ytid}_{row.start:.3f}.mp4").is_file()
        assert [index.index(m) for m in row.labels] == [o.cls.index for o in clip.objects]


def test_vggsound_layout(tmp_path):
    ds = make_synthetic_dataset(tmp_path, num_clips=5, num_classes=2, duration=1.0, size=32, layout="vggsound")
    rows, problems = read_vggsound_csv(ds.csv)
    assert not problems and len(rows) == 5
    index = LabelIndex.from_csv(ds.label_csv)
    for row, clip in zip(rows, ds.clips):
        assert (ds.videos / f"{row.ytid}_{int(row.start):06d}.mp4").is_file()
        assert index.index(row.labels[0]) == clip.objects[0].cls.index
        assert row.split in ("train", "test")


def test_class_object_and_sound_last_the_whole_clip(tmp_path):
    # class 0 is a red circle sounding a pure tone at its base pitch (280 Hz, below every event's pitch)
    ds = make_synthetic_dataset(
        tmp_path, num_clips=2, num_classes=1, duration=2.0, size=64, fps=8, seed=3, object_size=(0.25, 0.3)
    )
    cls = ds.classes[0]
    for clip in ds.clips:
        decoded = decode_clip(ds.videos / clip.file, num_frames=16)  # 2 s at 8 fps: every frame
        near = np.abs(decoded.frames.astype(np.float32) - np.array(cls.colour, np.float32)).mean(-1) < 40
        assert (
            near.mean(axis=(1, 2)) > 0.02
        ).all()  # [16]: the object (>= 0.19 of the frame) is in every frame, events or not
        audio = decoded.audio
        for k in range(0, len(audio) - 1600, 1600):  # every 0.1 s: the class tone dominates its band
            spec = np.abs(np.fft.rfft(audio[k : k + 1600] * np.hanning(1600)))
            freqs = np.fft.rfftfreq(1600, 1 / 16000)
            assert abs(freqs[spec[freqs < 350].argmax()] - cls.base_freq) < 15


def test_object_size_option_and_progress(tmp_path):
    done = []
    ds = make_synthetic_dataset(
        tmp_path, num_clips=4, num_classes=2, duration=0.5, size=32, object_size=(0.3, 0.4), progress=done.append
    )
    assert done == [1, 2, 3, 4]
    assert all(0.3 <= o.size <= 0.4 for c in ds.clips for o in c.objects)
    for clip in ds.clips:
        frames = decode_clip(ds.videos / clip.file, num_frames=4).frames.astype(np.float32)  # [4, H, W, 3]
        middle_of = (np.arange(4) + 0.5) / 8
        quiet = ~np.any([(middle_of >= e.start) & (middle_of < e.end) for e in clip.events], axis=0)  # no event
        background = np.median(frames.reshape(-1, 3), axis=0)
        lit = (np.abs(frames - background).sum(-1) > 60).mean(axis=(1, 2))  # [4] fraction of object pixels
        # radius >= 0.3 of the side: the default sizes (<= 0.16) cover < 0.08 of the frame
        assert (lit[quiet] > 0.08).all()
