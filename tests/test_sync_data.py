"""CAV-MAE Sync's data: prepare --frames N, data.num_frames / data.audio_window, per-frame audio windows."""

import io
import json
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from cavmae.cli import main as cli_main
from cavmae.config import ConfigError, DataConfig, load_config
from cavmae.data.clips import make_synthetic_dataset
from cavmae.data.fbank import FBANK_MEAN, FBANK_STD, wav_to_fbank
from cavmae.data.loader import build_loader
from cavmae.data.samples import decode_jpeg, normalize_frames, resize_center_crop
from cavmae.data.windows import CLIP_FBANK_FRAMES, frame_audio_window, window_fbank

WINDOW = 416  # the released Sync model's audio window (4.16 s)
IMAGE = 32


# ---------------------------------------------------------------------------------------------------------------
# the frame -> window mapping


@pytest.mark.parametrize(
    "k, num_frames, total, window, start",
    [
        # 16 frames of a clip padded to 1024 fbank frames, L = 416: pos = 64 k, start = pos - 208, at most 608
        (0, 16, 1024, 416, 0),  # clip start: pos 0, nothing before it
        (3, 16, 1024, 416, 0),  # pos 192 < 208: still pinned at 0
        (4, 16, 1024, 416, 48),  # pos 256
        (8, 16, 1024, 416, 304),  # middle: pos 512, [304, 720)
        (12, 16, 1024, 416, 560),  # pos 768, [560, 976)
        (13, 16, 1024, 416, 608),  # pos 832 -> 624 would end at 1040 > 1024: moved back to 1024 - 416
        (15, 16, 1024, 416, 608),  # clip end: pos 960
        # 10 frames (pos = round(102.4 k)), L = 416
        (1, 10, 1024, 416, 0),  # pos 102
        (3, 10, 1024, 416, 99),  # pos round(307.2) = 307
        (5, 10, 1024, 416, 304),  # pos 512
        (7, 10, 1024, 416, 509),  # pos round(716.8) = 717
        (9, 10, 1024, 416, 608),  # pos 922 -> 714 + 416 > 1024
        # Python's round: halves go to the even neighbour (S = 100, N = 8: 12.5 -> 12, 37.5 -> 38), L = 10
        (1, 8, 100, 10, 7),
        (3, 8, 100, 10, 33),
        (7, 8, 100, 10, 83),  # pos round(87.5) = 88 (even), [83, 93)
        (7, 8, 100, 30, 70),  # the same frame with L = 30: 73 would end at 103 > 100: moved back to 70
        # a window longer than the clip starts at 0
        (15, 16, 1024, 2048, 0),
        # 3 s of audio (298 real fbank frames) are padded to 1024 first, as the public loader does: the windows are
        # those of a 10 s clip, and the middle frame's window [304, 720) lies wholly in the padding
        (8, 16, CLIP_FBANK_FRAMES, 416, 304),
    ],
)
def test_frame_audio_window_hand_computed(k, num_frames, total, window, start):
    assert frame_audio_window(k, num_frames, total, window) == start


def test_frame_audio_window_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frame index 16"):
        frame_audio_window(16, 16, 1024, 416)
    with pytest.raises(ValueError, match="window"):
        frame_audio_window(0, 16, 1024, 0)


@pytest.mark.parametrize("seconds", [10.255, 10.0, 3.0])
def test_window_fbank_equals_slice_of_whole_clip(seconds):
    gen = torch.Generator().manual_seed(int(seconds * 1000))
    wave = torch.randn(int(seconds * 16000), generator=gen) * 0.1 + 0.01
    whole = wav_to_fbank(wave, target_length=CLIP_FBANK_FRAMES, normalize=False)  # [1024, 128], zero padded
    wave = wave - wave.mean()
    for window in (416, 96):
        for k in range(16):
            start = frame_audio_window(k, 16, CLIP_FBANK_FRAMES, window)
            fb = window_fbank(wave, start, window)
            padded = torch.nn.functional.pad(fb, (0, 0, 0, window - fb.shape[0]))
            torch.testing.assert_close(padded, whole[start : start + window], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# prepare --frames and the loader


def _prepare(tmp, *, clips: int, duration: float, frames: int, seed: int):
    ds = make_synthetic_dataset(
        tmp / "synth", num_clips=clips, num_classes=2, duration=duration, size=IMAGE, fps=8.0, seed=seed
    )
    out = tmp / "shards"
    args = ["prepare", "--videos", str(ds.videos), "--csv", str(ds.csv), "--label-csv", str(ds.label_csv)]
    args += ["--out", str(out), "--name", "s", "--workers", "0", "--samples-per-shard", "2", "--frames", str(frames)]
    assert cli_main(args) == 0
    manifest = json.loads((out / "s-manifest.json").read_text())
    return out, manifest, sorted(str(p) for p in out.glob("s-*.tar"))


@pytest.fixture(scope="module")
def sync_shards(tmp_path_factory):
    """3 synthetic 10 s clips prepared with --frames 16."""
    return _prepare(tmp_path_factory.mktemp("sync16"), clips=3, duration=10.0, frames=16, seed=3)


def _members(urls) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for url in urls:
        with tarfile.open(url) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def _reference(members: dict[str, bytes]):
    """(unnormalised whole-clip fbank [1024, 128], frames [N, 3, IMAGE, IMAGE] normalised) of one sample."""
    import soundfile as sf

    wave, sr = sf.read(io.BytesIO(members["wav"]), dtype="float32")
    whole = wav_to_fbank(torch.from_numpy(wave), sr, target_length=CLIP_FBANK_FRAMES, normalize=False)
    n = json.loads(members["json"])["num_frames"]
    frames = torch.stack([resize_center_crop(decode_jpeg(members[f"f{i}.jpg"]), IMAGE) for i in range(n)])
    return whole, normalize_frames(frames)


def _window(whole: torch.Tensor, k: int, num_frames: int = 16, window: int = WINDOW) -> torch.Tensor:
    start = frame_audio_window(k, num_frames, CLIP_FBANK_FRAMES, window)
    return (whole[start : start + window] - FBANK_MEAN) / FBANK_STD


def _loader(urls, *, train, frame_mode=None, window=WINDOW, **kw):
    cfg = DataConfig(batch_size=2, num_workers=0, shuffle_buffer=4, num_frames=16, audio_window=window, **kw)
    return build_loader(
        cfg, urls, audio_length=window or 1024, image_size=IMAGE, num_classes=2, train=train, frame_mode=frame_mode
    )


def test_prepare_frames_16_writes_16_frames_at_evenly_spaced_times(sync_shards):
    out, manifest, urls = sync_shards
    assert manifest["options"]["num_frames"] == 16
    for key, members in _members(urls).items():
        meta = json.loads(members["json"])
        assert meta["num_frames"] == 16
        assert sorted(e for e in members if e.endswith(".jpg")) == sorted(f"f{i}.jpg" for i in range(16))
        # frame i shows t_i = clip_start + i * duration / 16: the 8 fps frame starting at or before it
        for i, t in enumerate(meta["frame_times"]):
            nominal = meta["clip_start"] + i * (meta["clip_end"] - meta["clip_start"]) / 16
            assert t <= nominal + 1e-6 < t + 1 / 8, (key, i, t, nominal)


def test_training_batch_pairs_a_frame_with_its_window(sync_shards):
    _, _, urls = sync_shards
    refs = {k: _reference(m) for k, m in _members(urls).items()}
    seen = set()
    for epoch in range(3):
        loader = _loader(urls, train=True)
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            assert batch["audio"].shape == (2, WINDOW, 128) and batch["frames"].shape == (2, 3, IMAGE, IMAGE)
            for key, audio, frame in zip(batch["keys"], batch["audio"], batch["frames"]):
                whole, frames = refs[key]
                # the frame drawn is k; the audio must be k's window (not merely some window of the clip)
                ks = [k for k in range(16) if torch.equal(frames[k], frame)]
                assert ks, "the frame is none of the clip's frames"
                assert any(torch.allclose(audio, _window(whole, k), atol=1e-4) for k in ks)
                seen.update(ks)
    assert len(seen) > 1  # random frames, not always the same one


def test_evaluation_gives_every_frame_with_its_window(sync_shards):
    _, _, urls = sync_shards
    refs = {k: _reference(m) for k, m in _members(urls).items()}
    batches = list(_loader(urls, train=False, frame_mode="all"))
    assert sum(len(b["keys"]) for b in batches) == 3
    b = batches[0]
    assert b["audio"].shape == (2, 16, WINDOW, 128) and b["frames"].shape == (2, 16, 3, IMAGE, IMAGE)
    for batch in batches:
        for key, audio, frames in zip(batch["keys"], batch["audio"], batch["frames"]):
            whole, ref_frames = refs[key]
            assert torch.equal(frames, ref_frames)
            for k in range(16):
                torch.testing.assert_close(audio[k], _window(whole, k), atol=1e-4, rtol=1e-4)
    # validation (middle frame): frame 8 and its window
    for batch in _loader(urls, train=False):
        assert batch["audio"].shape[1:] == (WINDOW, 128)
        for key, audio, frame in zip(batch["keys"], batch["audio"], batch["frames"]):
            whole, ref_frames = refs[key]
            assert torch.equal(frame, ref_frames[8])
            torch.testing.assert_close(audio, _window(whole, 8), atol=1e-4, rtol=1e-4)


def test_whole_clip_audio_without_window(sync_shards):
    """audio_window 0 (CAV-MAE): 16-frame shards give the whole clip once, frames [B, 16, ...] in evaluation."""
    _, _, urls = sync_shards
    refs = {k: _reference(m) for k, m in _members(urls).items()}
    batch = next(iter(_loader(urls, train=False, frame_mode="all", window=0)))
    assert batch["audio"].shape == (2, 1024, 128) and batch["frames"].shape == (2, 16, 3, IMAGE, IMAGE)
    for key, audio in zip(batch["keys"], batch["audio"]):
        torch.testing.assert_close(audio, (refs[key][0] - FBANK_MEAN) / FBANK_STD, atol=1e-4, rtol=1e-4)


def test_short_clips_take_their_windows_from_the_padded_clip(tmp_path):
    """3 s clips: windows as for a 10 s clip; the real audio fills the first 298 fbank frames, the rest is padding."""
    out, manifest, urls = _prepare(tmp_path, clips=2, duration=3.0, frames=16, seed=5)
    refs = {k: _reference(m) for k, m in _members(urls).items()}
    pad = (0.0 - FBANK_MEAN) / FBANK_STD
    batches = list(_loader(urls, train=False, frame_mode="all"))
    for batch in batches:
        for key, audio in zip(batch["keys"], batch["audio"]):
            whole = refs[key][0]
            assert 290 <= int((whole != 0).any(1).sum()) <= 298  # 3 s of audio -> at most 298 real frames
            assert torch.all(audio[8] == pad)  # [304, 720): padding only
            assert not torch.all(audio[0] == pad) and torch.all(audio[0, 298:] == pad)  # [0, 416): audio, then pad
            for k in range(16):
                torch.testing.assert_close(audio[k], _window(whole, k), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_frame_count_mismatch_names_the_shard(sync_shards, tmp_path):
    _, _, urls = sync_shards
    cfg = DataConfig(batch_size=2, num_workers=0, num_frames=10)
    with pytest.raises(ValueError, match=r"s-000000\.tar holds 16 frames per clip .* data\.num_frames is 10"):
        build_loader(cfg, urls, image_size=IMAGE, num_classes=2, train=False)
    # without a manifest the samples say it
    import shutil

    bare = tmp_path / "bare-000000.tar"
    shutil.copy(urls[0], bare)
    loader = build_loader(cfg, [str(bare)], image_size=IMAGE, num_classes=2, train=False)
    with pytest.raises(ValueError, match=r"bare-000000\.tar: sample .* holds 16 frames per clip"):
        list(loader)


def test_audio_window_must_equal_audio_length(sync_shards):
    _, _, urls = sync_shards
    cfg = DataConfig(batch_size=2, num_workers=0, num_frames=16, audio_window=416)
    with pytest.raises(ValueError, match=r"data\.audio_window \(416\) must equal the model's audio length \(1024\)"):
        build_loader(cfg, urls, audio_length=1024, image_size=IMAGE, num_classes=2, train=True)
    with pytest.raises(ConfigError, match=r"data\.audio_window \(416\) .* model\.audio_length \(1024\)"):
        load_config(None, ["data.audio_window=416"])
    with pytest.raises(ConfigError, match=r"data\.audio_window"):
        load_config(None, ["data.audio_window=-1"])
    with pytest.raises(ConfigError, match=r"data\.num_frames must be at least 1"):
        load_config(None, ["data.num_frames=0"])
    cfg = load_config(None, ["data.audio_window=416", "model.audio_length=416", "data.num_frames=16"])
    assert (cfg.data.audio_window, cfg.data.num_frames) == (416, 16)


def test_prepare_rejects_a_bad_frame_count(tmp_path):
    assert cli_main(["prepare", "--videos", str(tmp_path), "--out", str(tmp_path / "o"), "--frames", "0"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# real media: the shard's frames are ffmpeg's frames at the expected times


def _ffmpeg_frame(path, t: float, width: int, height: int) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-ss", f"{t:.6f}", "-i", str(path), "-frames:v", "1"]
    cmd += ["-vf", f"scale={width}:{height}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).astype(np.float32)


def test_shared_media_16_frames_are_ffmpegs_frames(media_dir, tmp_path):
    from cavmae.data.media import video_timeline
    from cavmae.data.prepare import PrepareOptions, prepare_shards
    from cavmae.data.sources import plan_inputs

    plan = plan_inputs(videos=media_dir)
    manifest = prepare_shards(plan, tmp_path, name="m", samples_per_shard=1, options=PrepareOptions(num_frames=16))
    urls = [str(tmp_path / s["file"]) for s in manifest["shards"]]
    samples = {k: m for k, m in _members(urls).items() if json.loads(m["json"])["modalities"] == ["audio", "video"]}
    assert len(samples) == len([p for p in media_dir.iterdir() if p.suffix == ".mp4"])  # the wav is audio only
    for members in samples.values():
        meta = json.loads(members["json"])
        path = media_dir / meta["source"]
        stamps, _ = video_timeline(path)
        starts = stamps[:, 0]
        assert meta["num_frames"] == 16
        for k in (0, 5, 8, 15):
            nominal = meta["clip_start"] + k * (meta["clip_end"] - meta["clip_start"]) / 16
            t = meta["frame_times"][k]
            # the frame holding the nominal time: the last one starting at or before it
            assert t == pytest.approx(starts[starts <= nominal + 1e-6].max(), abs=1e-6)
            jpeg = decode_jpeg(members[f"f{k}.jpg"]).permute(1, 2, 0).float().numpy()
            h, w = jpeg.shape[:2]
            same = np.abs(jpeg - _ffmpeg_frame(path, t, w, h)).mean()  # ffmpeg -ss t: the first frame at or after t
            neighbours = [u for u in (t - 0.5, t + 0.5) if 0 <= u < meta["clip_end"]]
            others = [np.abs(jpeg - _ffmpeg_frame(path, u, w, h)).mean() for u in neighbours]
            assert same < 4.0, (path.name, k, same)
            assert all(same < o for o in others), (path.name, k, same, others)


def test_prepare_frames_16_from_a_datafile(tmp_path):
    """CAV-MAE datafile mode reads frame_0 .. frame_15 when --frames 16 (Sync's extracted-frame layout)."""
    import soundfile as sf
    from PIL import Image

    vid = "clip_a"
    sf.write(tmp_path / f"{vid}.wav", np.zeros(16000 * 2, np.int16), 16000, subtype="PCM_16")
    for i in range(16):
        folder = tmp_path / "frames" / f"frame_{i}"
        folder.mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 15 * i, np.uint8)).save(folder / f"{vid}.jpg")
    entry = {"video_id": vid, "wav": f"{vid}.wav", "video_path": "frames", "labels": "/m/a"}
    (tmp_path / "train.json").write_text(json.dumps({"data": [entry]}))
    out = tmp_path / "out"
    args = ["prepare", "--datafile", str(tmp_path / "train.json"), "--label-csv", "build", "--out", str(out)]
    assert cli_main([*args, "--name", "df", "--workers", "0", "--frames", "16"]) == 0
    members = _members(sorted(str(p) for p in out.glob("df-*.tar")))[vid]
    meta = json.loads(members["json"])
    assert meta["num_frames"] == 16 and meta["missing_frames"] == []
    assert meta["frame_times"] == [round(i * 2.0 / 16, 6) for i in range(16)]
    # frame i is the picture of folder frame_i (grey level 15 i)
    levels = [float(decode_jpeg(members[f"f{i}.jpg"]).float().mean()) for i in range(16)]
    assert levels == pytest.approx([15 * i for i in range(16)], abs=2)
    manifest = json.loads((out / "df-manifest.json").read_text())
    assert manifest["options"]["num_frames"] == 16


def test_synthetic_evaluation_batches_have_the_sync_layout():
    from cavmae.config import recipe_path
    from cavmae.train.batches import make_batches

    small = ["model.num_mel_bins=64", "model.image_size=64", "data.synthetic_val_size=4", "eval.batch_size=4"]
    cfg = load_config(
        recipe_path("tiny"), [*small, "model.audio_length=96", "data.audio_window=96", "data.num_frames=16"]
    )
    batch = next(iter(make_batches(cfg, "val", frame_mode="all")))
    assert batch["audio"].shape == (4, 16, 96, 64) and batch["frames"].shape == (4, 16, 3, 64, 64)
    assert torch.equal(batch["audio"][:, 0], batch["audio"][:, 15])
    cfg = load_config(recipe_path("tiny"), small)  # CAV-MAE: the whole clip once, ten frames
    batch = next(iter(make_batches(cfg, "val", frame_mode="all")))
    assert batch["audio"].dim() == 3 and batch["frames"].shape[1] == 10


def test_file_inputs_place_windows_in_the_configured_clip_length(tmp_path):
    """`cavmae predict` reads a file the loader's way: the audio window of the middle frame cut from the clip padded
    to data.clip_fbank_frames (260 for the demo's 2.6 s clips), not to the public loader's fixed 1024."""
    import soundfile

    from cavmae.config import ModelConfig
    from cavmae.data.fbank import wav_to_fbank
    from cavmae.data.media import read_audio
    from cavmae.data.windows import frame_audio_window
    from cavmae.eval.inputs import load_file

    path = tmp_path / "clip.wav"
    t = np.arange(int(2.6 * 16000)) / 16000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32), 16000)
    cfg = ModelConfig(audio_length=64, num_mel_bins=128)
    x = load_file(path, cfg, num_frames=16, audio_window=64, clip_fbank_frames=260)
    start = frame_audio_window(8, 16, 260, 64)  # the middle frame's window: 98
    expected = wav_to_fbank(read_audio(str(path)), num_mel_bins=128, target_length=260)[start : start + 64]
    assert x.audio.shape == (1, 64, 128)
    torch.testing.assert_close(x.audio[0], expected)
    assert x.audio.abs().sum(dim=-1).min() > 0  # inside the clip, not in the padding
