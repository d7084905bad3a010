"""Media decoding checked against ffmpeg: frames on edit-list MP4s, the audio level (first channel, no clipping)
through prepare / predict / retrieve, tolerant metadata, Opus pre-skip, no leak, no torch in prepare workers.

Every file is made here with ffmpeg (or taken from ../shared/media); the references are ffmpeg's own decodes
(``-copyts``: edit lists applied, times as the container gives them)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cavmae.data.media import MediaError, VideoFrames, _short, decode_clip, probe, read_audio

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def ffmpeg_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """ffmpeg's decode of every frame (edit lists applied): uint8 [n, H, W, 3] and their times [n] (s)."""
    import av

    with av.open(str(path), metadata_errors="ignore") as c:
        w, h = c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-copyts", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough"]
        + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    times = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"]
        + [str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace(",", " ")
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3), np.array([float(t) for t in times.split()])


def ffmpeg_audio(path: Path) -> np.ndarray:
    """``ffmpeg -ar 16000`` with all channels: float32 [N, channels] (CAV-MAE then keeps channel 0)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ar", "16000", "-f", "f32le", "-acodec", "pcm_f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    channels = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=channels", "-of", "csv=p=0"]
        + [str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return np.frombuffer(out, np.float32).reshape(-1, int(channels)).copy()


def frame_at(frames: np.ndarray, times: np.ndarray, t: float) -> np.ndarray:
    """ffmpeg's frame shown at time t: the last one starting at or before it."""
    return frames[max(0, int(np.searchsorted(times, t + 1e-6, side="right")) - 1)]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def read_members(shard: Path) -> dict[str, bytes]:
    with tarfile.open(shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def prepare_folder(folder: Path, out: Path, **options) -> dict:
    from cavmae.data.prepare import PrepareOptions, prepare_shards
    from cavmae.data.sources import plan_inputs

    return prepare_shards(plan_inputs(videos=folder), out, options=PrepareOptions(**options))


# ---------------------------------------------------------------------------------------------------------------
# frames on MP4 edit lists


@pytest.fixture(scope="module")
def edit_list_mp4(tmp_path_factory) -> Path:
    """A stream copy cut at 1.5 s inside a 3 s GOP: the MP4 gets an edit list that skips 1.5 s of video."""
    root = tmp_path_factory.mktemp("editlist")
    src = root / "source.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=6"),
        *("-f", "lavfi", "-i", "sine=frequency=440:duration=6"),
        *("-c:v", "libx264", "-g", "75", "-keyint_min", "75", "-sc_threshold", "0", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-shortest", str(src)),
    )
    folder = root / "videos"
    folder.mkdir()
    cut = folder / "cut.mp4"
    ffmpeg("-ss", "1.5", "-i", str(src), "-c", "copy", str(cut))
    return cut


def test_edit_list_frames_are_ffmpegs_at_the_recorded_times(edit_list_mp4, tmp_path):
    ref, ref_times = ffmpeg_frames(edit_list_mp4)
    assert ref_times[0] == pytest.approx(0.0, abs=1e-3)  # ffmpeg applies the edit list: the video starts at 0
    clip = decode_clip(edit_list_mp4)
    assert len(clip.frame_times) == 10 and clip.frame_times[0] == pytest.approx(0.0, abs=1e-3)
    for frame, t in zip(clip.frames, clip.frame_times):
        expected = frame_at(ref, ref_times, t)
        assert mean_abs(frame, expected) < 0.5
        # the picture 1.5 s later (what decord shows at t) is far from it: the check can tell the two apart
        assert mean_abs(frame_at(ref, ref_times, t + 1.5), expected) > 5
    assert clip.decoder == "pyav"  # decord stamps these frames from -1.5 s: detected and handed over

    # through prepare: each stored JPEG (q90, not resized at 120 px) is, of all ffmpeg's frames, closest to the
    # one at its recorded time
    manifest = prepare_folder(edit_list_mp4.parent, tmp_path / "shards")
    assert manifest["num_samples"] == 1 and not manifest["failed"]
    members = read_members(tmp_path / "shards" / manifest["shards"][0]["file"])
    meta = json.loads(members["cut.json"])
    assert meta["frame_times"] == clip.frame_times
    from PIL import Image

    for i, t in enumerate(meta["frame_times"]):
        stored = np.asarray(Image.open(io.BytesIO(members[f"cut.f{i}.jpg"])).convert("RGB"))
        errors = [mean_abs(stored, f) for f in ref]
        expected = mean_abs(stored, frame_at(ref, ref_times, t))
        assert expected < 10 and expected == min(errors), f"frame f{i} at {t} s: closest is {np.argmin(errors)}"


def test_decord_keeps_the_files_it_decodes_right(media_dir):
    path = media_dir / "00W1lcxW-WU_40.000.mp4"
    ref, ref_times = ffmpeg_frames(path)
    video = VideoFrames(path)
    assert video.decoder == "decord"
    np.testing.assert_allclose(video.timestamps[:, 0], ref_times, atol=1e-3)
    times = [0.0, 3.3, 5.0, 9.95]
    frames, stamps = video.at(times)
    for frame, t in zip(frames, stamps):
        assert mean_abs(frame, frame_at(ref, ref_times, t)) < 0.5
    pyav_frames, pyav_stamps = VideoFrames(path, decoder="pyav").at(times)
    assert pyav_stamps == stamps and mean_abs(pyav_frames, frames) < 0.5


# ---------------------------------------------------------------------------------------------------------------
# audio: the first channel at unit gain, never clipped, one path for prepare, predict and retrieve


@pytest.fixture(scope="module")
def stereo_files(tmp_path_factory) -> dict[str, Path]:
    """Loud stereo at 44.1 kHz with different channels (L: 440 Hz, R: 660 Hz, both at 0.9 of full scale):
    as .wav (PCM) and as .mp4 (H.264 + AAC). (L+R)/sqrt(2) would peak at ~1.27 and clip."""
    root = tmp_path_factory.mktemp("stereo")
    wav = root / "audio" / "stereo.wav"
    wav.parent.mkdir()
    ffmpeg(
        *("-f", "lavfi", "-i", "aevalsrc=0.9*sin(2*PI*440*t)|0.9*sin(2*PI*660*t+1):s=44100:d=3"),
        *("-af", "afade=in:d=0.1,afade=out:st=2.9:d=0.1"),  # no edges: AAC overshoots on a step
        *("-c:a", "pcm_s16le", str(wav)),
    )
    mp4 = root / "videos" / "stereo.mp4"
    mp4.parent.mkdir()
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=3"),
        *("-i", str(wav), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k"),
        *("-shortest", str(mp4)),
    )
    return {"wav": wav, "mp4": mp4}


@pytest.mark.parametrize("kind", ["wav", "mp4"])
def test_read_audio_is_ffmpegs_first_channel(stereo_files, kind):
    ref = ffmpeg_audio(stereo_files[kind])
    first = read_audio(stereo_files[kind])
    assert len(first) == len(ref)
    np.testing.assert_allclose(first, ref[:, 0], atol=1e-5)
    assert np.abs(first).max() < 0.95  # unit gain: no +3 dB, no clipping
    mean = read_audio(stereo_files[kind], channel="mean")
    np.testing.assert_allclose(mean, ref.mean(axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="first"):
        read_audio(stereo_files[kind], channel="left")


def test_prepare_stores_the_first_channel_unclipped(stereo_files, tmp_path):
    import soundfile as sf

    ref = ffmpeg_audio(stereo_files["mp4"])[:, 0]
    for channel, expected in (("first", ref), ("mean", ffmpeg_audio(stereo_files["mp4"]).mean(axis=1))):
        out = tmp_path / channel
        manifest = prepare_folder(stereo_files["mp4"].parent, out, audio_channel=channel)
        members = read_members(out / manifest["shards"][0]["file"])
        stored, rate = sf.read(io.BytesIO(members["stereo.wav"]), dtype="float32")
        meta = json.loads(members["stereo.json"])
        assert rate == 16000 and stored.ndim == 1
        assert meta["audio_channel"] == channel and meta["clipped_samples"] == 0
        assert len(stored) == len(expected)
        np.testing.assert_allclose(stored, expected, atol=1.0 / 32768 + 1e-6)  # 16-bit quantisation only
        assert np.abs(stored).max() < 0.95


def test_predict_and_retrieve_read_the_same_audio(stereo_files, tmp_path, monkeypatch, capsys):
    """`cavmae predict` and `cavmae retrieve --query` on the .wav and the .mp4: the fbank each feeds the model is
    the fbank of ffmpeg's 16 kHz first channel (and of the audio prepare stores)."""
    import torch

    import cavmae
    import cavmae.eval.inputs
    from cavmae.cli import main
    from cavmae.data.fbank import wav_to_fbank
    from cavmae.eval.retrieval import EmbeddingSet

    cfg = cavmae.ModelConfig(
        embed_dim=64, num_heads=1, modality_depth=1, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=1
    )
    seen: list[tuple[str, Path, torch.Tensor]] = []
    real = cavmae.eval.inputs.load_file

    def spy(path, *args, **kw):
        x = real(path, *args, **kw)
        seen.append((command, Path(path), x.audio))
        return x

    monkeypatch.setattr(cavmae.eval.inputs, "load_file", spy)
    torch.manual_seed(0)
    classifier = cavmae.create_model(dataclasses.replace(cfg, num_classes=3), kind="classifier")
    cavmae.save_pretrained(classifier, tmp_path / "clf")
    cavmae.save_pretrained(cavmae.create_model(cfg), tmp_path / "pre")
    files = [str(stereo_files["wav"]), str(stereo_files["mp4"])]
    command = "predict"
    assert main(["predict", *files, "--model", str(tmp_path / "clf"), "--top-k", "1"]) == 0
    gallery = tmp_path / "gallery.safetensors"
    EmbeddingSet(["a", "b"], torch.eye(2, 64), torch.eye(2, 64)).save(gallery)
    command = "retrieve"
    args = ["retrieve", "--model", str(tmp_path / "pre"), "--embeddings", str(gallery), "--top-k", "1"]
    assert main([*args, "--query", *files]) == 0
    capsys.readouterr()

    assert [(c, p.suffix) for c, p, _ in seen] == [
        ("predict", ".wav"),
        ("predict", ".mp4"),
        ("retrieve", ".wav"),
        ("retrieve", ".mp4"),
    ]
    for _, path, fbank in seen:
        expected = wav_to_fbank(ffmpeg_audio(path)[:, 0], num_mel_bins=128, target_length=1024)
        assert fbank.shape == (1, 1024, 128)
        diff = (fbank[0] - expected).abs()  # decoder rounding, amplified by the log in near-silent bins only
        assert diff.max() < 0.01 and diff.mean() < 1e-4, path  # (the level error was +0.16 on average)


# ---------------------------------------------------------------------------------------------------------------
# metadata, Opus, error messages


def test_a_latin1_metadata_tag_does_not_reject_the_file(stereo_files, tmp_path):
    """A title tag written as Latin-1 bytes (invalid UTF-8) in an otherwise valid MP4 is kept everywhere."""
    folder = tmp_path / "videos"
    folder.mkdir()
    tagged = folder / "tagged.mp4"
    ffmpeg("-i", str(stereo_files["mp4"]), "-c", "copy", "-metadata", "title=caf\u00e9 music", str(tagged))
    data = tagged.read_bytes()
    assert data.count("caf\u00e9".encode()) == 1
    tagged.write_bytes(data.replace("caf\u00e9".encode(), b"caf\xe9 "))  # same length, now Latin-1: invalid UTF-8
    import av

    with pytest.raises(UnicodeDecodeError):  # what PyAV does by default (the cause of the rejection)
        av.open(str(tagged)).close()
    assert probe(tagged) == (True, True)
    manifest = prepare_folder(folder, tmp_path / "shards")
    assert manifest["num_samples"] == 1 and manifest["failed"] == []
    np.testing.assert_allclose(read_audio(tagged), ffmpeg_audio(tagged)[:, 0], atol=1e-5)

    import cavmae
    from cavmae.eval.inputs import load_file

    x = load_file(tagged, cavmae.ModelConfig())
    assert x.audio is not None and x.frames is not None


def test_opus_pre_skip_is_applied(tmp_path):
    """Opus in Matroska declares a pre-skip (codec delay); ffmpeg drops those samples and so must we."""
    mkv = tmp_path / "clip.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", "aevalsrc=0.5*sin(2*PI*300*t)*gt(t\\,0.5)|0.5*sin(2*PI*500*t)*gt(t\\,0.5):s=48000:d=2"),
        *("-c:a", "libopus", "-b:a", "96k", str(mkv)),
    )
    ref = ffmpeg_audio(mkv)[:, 0]
    ours = read_audio(mkv)
    assert len(ours) == len(ref)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    onset = int(np.argmax(np.abs(ours) > 0.05))
    assert abs(onset - 8000) < 40  # the sound starts at 0.5 s (16 kHz), not 6.5 ms (pre-skip) later


def test_libav_error_codes_are_explained():
    msg = _short(RuntimeError("[12:00:00] src/video/video_reader.cc:270: av_read_frame failed with 1094995529"))
    assert "AVERROR_INVALIDDATA" in msg and "truncated or corrupt" in msg


def test_truncated_file_is_named_clearly(edit_list_mp4, tmp_path):
    cut = tmp_path / "short.mp4"
    cut.write_bytes(edit_list_mp4.read_bytes()[:2000])
    with pytest.raises(MediaError) as e:
        decode_clip(cut)
    assert "truncated" in e.value.reason or "undecodable" in e.value.reason


# ---------------------------------------------------------------------------------------------------------------
# the prepare worker: no torch, flat memory


def _run_python(code: str, timeout: float = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "videos"
    folder.mkdir()
    path = folder / "tiny.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=2:duration=5"),
        *("-f", "lavfi", "-i", "aevalsrc=0.5*sin(2*PI*440*t)|0.3*sin(2*PI*660*t):s=16000:d=5"),
        *("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)),
    )
    return path


def test_prepare_imports_no_torch(tiny_clip, tmp_path):
    """`cavmae prepare` (the parent, whose modules forked workers inherit, and the in-process decoder) runs
    without importing torch."""
    out = _run_python(
        f"""
        import sys
        from cavmae.cli import main
        assert main(["prepare", "--videos", {str(tiny_clip.parent)!r}, "--out", {str(tmp_path / "s")!r},
                     "--workers", "0"]) == 0
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
        """
    )
    assert out.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "s" / "data-000000.tar").is_file()


@pytest.mark.slow
def test_prepare_worker_memory_is_flat_over_1000_clips(tiny_clip):
    """RSS of one decoding process over 1,000 clips (the same tiny file): within 50 MiB after a warm-up.
    decord's AudioReader, used before, leaked ~0.7 MiB per clip (~700 MiB here)."""
    out = _run_python(
        f"""
        from cavmae.data.prepare import PrepareOptions, process_clip
        from cavmae.data.sources import plan_inputs

        def rss_mib():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

        clip = plan_inputs(videos={str(tiny_clip.parent)!r}).inputs[0]
        opts = PrepareOptions()
        for i in range(1000):
            ok, result = process_clip(clip, opts)
            assert ok, result
            if i == 49:
                start = rss_mib()
        print(start, rss_mib())
        """
    )
    start, end = map(float, out.split())
    print(f"RSS {start:.1f} -> {end:.1f} MiB over clips 50..1000")
    assert end - start < 50, f"RSS grew {end - start:.1f} MiB over 950 clips"
