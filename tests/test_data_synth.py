"""cavmae.data.clips: real H.264 + AAC files, deterministic, with class and per-clip signatures in both modalities."""

import hashlib

import av
import numpy as np
import pytest

from cavmae.data.clips import make_synthetic_dataset
from cavmae.data.labels import LabelIndex, read_audioset_csv, read_vggsound_csv
from cavmae.data.media import decode_clip, read_audio


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


def test_same_seed_same_bytes_other_seed_other_clips(tmp_path):
    kw = dict(num_clips=3, num_classes=3, duration=1.0, size=32, fps=8)
    a = make_synthetic_dataset(tmp_path / "a", seed=5, **kw)
    b = make_synthetic_dataset(tmp_path / "b", seed=5, workers=2, **kw)
    c = make_synthetic_dataset(tmp_path / "c", seed=6, **kw)
    assert _digests(a.root) == _digests(b.root)
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


@pytest.fixture(scope="module")
def tone_clips(tmp_path_factory):
    # class 0 is a pure tone; one class only, so every clip is a tone at base * 2 ** (0.5 - height)
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("tones"), num_clips=4, num_classes=1, duration=3.0, size=64, fps=8, seed=3
    )


def test_pitch_follows_height(tone_clips):
    for clip in tone_clips.clips:
        obj = clip.objects[0]
        audio = read_audio(tone_clips.videos / clip.file)
        spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        peak = np.fft.rfftfreq(len(audio), 1 / 16000)[spec.argmax()]
        expected = obj.cls.base_freq * 2 ** (0.5 - obj.height)
        assert abs(peak - expected) / expected < 0.02


def test_object_visible_exactly_while_it_sounds(tone_clips):
    for clip in tone_clips.clips:
        decoded = decode_clip(tone_clips.videos / clip.file, num_frames=24)  # 3 s at 8 fps: every frame
        frames = decoded.frames.astype(np.float32)
        background = np.median(frames.reshape(len(frames), -1, 3), axis=1)[:, None, None, :]
        visible = (np.abs(frames - background).sum(-1) > 60).mean(axis=(1, 2)) > 0.005
        audio = decoded.audio
        mid = ((np.arange(len(frames)) + 0.5) / 8 * 16000).astype(int)  # audio around each frame's middle
        energy = np.array([np.sqrt(np.mean(audio[m - 320 : m + 320] ** 2)) for m in mid])
        loud = energy > 0.5 * energy.max()
        # gates are aligned; frames whose interval straddles a gate edge may disagree
        assert (visible == loud).mean() > 0.8, (visible.astype(int), loud.astype(int))
        assert visible.any() and not visible.all() or len(clip.objects[0].gates) == 1


def test_object_size_option_and_progress(tmp_path):
    done = []
    ds = make_synthetic_dataset(
        tmp_path, num_clips=4, num_classes=2, duration=0.5, size=32, object_size=(0.3, 0.4), progress=done.append
    )
    assert done == [1, 2, 3, 4]
    assert all(0.3 <= o.size <= 0.4 for c in ds.clips for o in c.objects)
    frames = decode_clip(ds.videos / ds.clips[0].file, num_frames=4).frames.astype(np.float32)  # [4, H, W, 3]
    background = np.median(frames.reshape(-1, 3), axis=0)
    lit = (np.abs(frames - background).sum(-1) > 60).mean(axis=(1, 2))  # [4] fraction of object pixels
    assert lit.max() > 0.08  # radius >= 0.3 of the side: the default sizes (<= 0.16) cover < 0.08 of the frame
