"""Audio-only data: prepare (folders, ESC-50 CSV, datafile), manifests, the loader's rule for shard sets mixing
audio-only and audio-visual shards, fine-tuning and evaluation on audio alone from an audio-visual model, and the
generated ESC-50 layout."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import PRETRAIN_SMALL_INPUTS

import cavmae
from cavmae.cli import main
from cavmae.config import ConfigError, DataConfig, load_config
from cavmae.data.loader import AudioOnlyShardsError, build_loader, loader_for
from cavmae.data.media import read_audio
from cavmae.data.prepare import prepare_shards
from cavmae.data.sources import plan_inputs
from cavmae.data.synth_esc50 import HEADER, make_esc50_dataset

REPO = Path(__file__).resolve().parents[1]


def members(shard_dir: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for p in sorted(shard_dir.glob("*.tar")):
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def stored_audio(sample: dict[str, bytes]) -> np.ndarray:
    wave, rate = sf.read(io.BytesIO(sample["wav"]), dtype="float32")
    assert rate == 16000 and wave.ndim == 1
    return wave


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([left, 0.2 * np.sin(2 * np.pi * 2 * freq * t)][:channels], axis=1).astype(np.float32)


def write_mp4_without_video(path: Path, seconds: float, rate: int) -> None:
    import av

    samples = (tone(seconds, rate)[:, 0] * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    """Generated ESC-50 layout (12 clips, 3 classes, 2 folds, 1 s at 22.05 kHz) prepared into 3 shards of 4."""
    root = tmp_path_factory.mktemp("esc50")
    ds = make_esc50_dataset(root / "esc50", num_clips=12, num_classes=3, folds=2, duration=1.0, sample_rate=22050)
    plan = plan_inputs(videos=ds.audio, csv=ds.csv)
    manifest = prepare_shards(plan, root / "shards", name="esc", samples_per_shard=4)
    urls = [str(root / "shards" / s["file"]) for s in manifest["shards"]]
    return ds, plan, manifest, urls


# ---------------------------------------------------------------------------------------------------------------
# prepare


def test_audio_folder_gives_samples_without_frames(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "stereo44k.wav", tone(1.0, 44100, channels=2), 44100, subtype="PCM_16")
    sf.write(folder / "mono22k.flac", tone(0.5, 22050), 22050)
    sf.write(folder / "ogg8k.ogg", tone(0.5, 8000), 8000, format="OGG", subtype="VORBIS")
    write_mp4_without_video(folder / "novideo.mp4", 0.5, 48000)
    (folder / "notes.txt").write_text("not media")
    manifest = prepare_shards(plan_inputs(videos=folder), tmp_path / "out", name="a", samples_per_shard=3)
    assert manifest["num_samples"] == 4 and manifest["failed"] == [] and manifest["ignored"] == ["notes.txt"]
    assert manifest["modalities"] == ["audio"] and [s["modalities"] for s in manifest["shards"]] == [["audio"]] * 2
    samples = members(tmp_path / "out")
    assert set(samples) == {"stereo44k", "mono22k", "ogg8k", "novideo"}
    for key, s in samples.items():
        assert set(s) == {"wav", "json"}, key
        meta = json.loads(s["json"])
        assert meta["modalities"] == ["audio"] and meta["num_frames"] == 0 and meta["frame_times"] == []
        assert "fold" not in meta
    # any rate and layout: resampled to 16 kHz, the first channel kept, as prepare's decoder gives it
    stereo = stored_audio(samples["stereo44k"])
    assert json.loads(samples["stereo44k"]["json"])["duration"] == pytest.approx(1.0, abs=1e-3)
    expected = read_audio(folder / "stereo44k.wav")
    assert stereo.shape == expected.shape and np.abs(stereo - expected).max() <= 0.5 / 32768 + 1e-7
    assert abs(len(stored_audio(samples["mono22k"])) - 8000) <= 2
    if shutil.which("ffmpeg"):  # the reference CAV-MAE's data comes from: ffmpeg -ar 16000, then channel 1
        raw = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(folder / "stereo44k.wav"), "-ar", "16000", "-f", "s16le", "-"],
            check=True,
            capture_output=True,
        ).stdout
        ref = np.frombuffer(raw, "<i2").reshape(-1, 2)[:, 0].astype(np.float32) / 32768
        assert len(ref) == len(stereo) and np.abs(ref - stereo).max() <= 2 / 32768


def test_real_wav_is_stored_as_ffmpeg_reads_it(media_dir, tmp_path):
    """The real 16 kHz mono AudioSet wav of shared/media: stored sample for sample."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media_dir / "FwVYUHKoLtQ_000034.wav", folder)
    manifest = prepare_shards(plan_inputs(videos=folder, clip_seconds=10.0), tmp_path / "out")
    assert manifest["num_samples"] == 1 and manifest["modalities"] == ["audio"]
    source, rate = sf.read(media_dir / "FwVYUHKoLtQ_000034.wav", dtype="float32")
    stored = stored_audio(members(tmp_path / "out")["FwVYUHKoLtQ_000034"])
    assert rate == 16000 and np.array_equal(stored, source[:160_000])


def test_datafile_row_without_video_path_is_audio_only(tmp_path):
    sf.write(tmp_path / "clip.wav", tone(0.5, 16000), 16000, subtype="PCM_16")
    datafile = tmp_path / "data.json"
    datafile.write_text(json.dumps({"data": [{"video_id": "clip", "wav": "clip.wav", "labels": "/m/a"}]}))
    manifest = prepare_shards(plan_inputs(datafile=datafile), tmp_path / "out")
    assert manifest["num_samples"] == 1 and manifest["modalities"] == ["audio"]
    meta = json.loads(members(tmp_path / "out")["clip"]["json"])
    assert meta["labels"] == ["/m/a"] and meta["num_frames"] == 0


def test_esc50_csv_is_recognised_with_labels_and_folds(esc50):
    ds, plan, manifest, urls = esc50
    with open(ds.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HEADER and len(rows) == 12 and len(list(ds.audio.glob("*.wav"))) == 12
    assert {int(r["fold"]) for r in rows} == {1, 2}
    assert sf.info(ds.audio / rows[0]["filename"]).samplerate == 22050
    assert plan.mode == "esc50" and plan.label_index.names == ["dog", "rooster", "pig"]
    assert manifest["num_samples"] == 12 and manifest["failed"] == [] and manifest["label_counts"] == [4, 4, 4]
    assert manifest["modalities"] == ["audio"]
    folds = {}
    for s in manifest["shards"]:
        for fold, n in s["fold_counts"].items():
            folds[fold] = folds.get(fold, 0) + n
    assert folds == {"1": 6, "2": 6}
    by_file = {r["filename"].rsplit(".", 1)[0]: r for r in rows}
    samples = members(Path(urls[0]).parent)
    assert set(samples) == set(by_file)
    for key, s in samples.items():
        meta = json.loads(s["json"])
        row = by_file[key]
        assert meta["fold"] == int(row["fold"]) and isinstance(meta["fold"], int)
        assert meta["labels"] == [row["category"]] and meta["label_indices"] == [int(row["target"])]
        assert meta["duration"] == pytest.approx(1.0, abs=1e-3)
    labels_csv = (Path(urls[0]).parent / "esc-labels.csv").read_text().splitlines()
    assert labels_csv == ["index,mid,display_name", "0,dog,dog", "1,rooster,rooster", "2,pig,pig"]


def test_prepare_command_on_esc50_and_synth_command(tmp_path):
    assert main(["synth", "--layout", "esc50", "--out", str(tmp_path / "e"), "--clips", "4", "--classes", "2",
                 "--folds", "2", "--duration", "0.5"]) == 0  # fmt: skip
    assert sf.info(next((tmp_path / "e" / "audio").glob("*.wav"))).samplerate == 44100  # ESC-50's rate
    assert main(["synth", "--layout", "esc50", "--out", str(tmp_path / "e"), "--clips", "4"]) == 1  # no overwrite
    code = main(["prepare", "--videos", str(tmp_path / "e" / "audio"), "--csv", str(tmp_path / "e" / "meta" /
                 "esc50.csv"), "--out", str(tmp_path / "s"), "--workers", "0"])  # fmt: skip
    manifest = json.loads((tmp_path / "s" / "data-manifest.json").read_text())
    assert code == 0 and manifest["mode"] == "esc50" and manifest["num_samples"] == 4
    assert manifest["shards"][0]["fold_counts"] == {"1": 2, "2": 2}


# ---------------------------------------------------------------------------------------------------------------
# loader: the rule for mixed shard sets


def small_loader(urls, frames, num_classes=4):
    cfg = DataConfig(num_workers=0, batch_size=4)
    return build_loader(cfg, urls, train=False, frames=frames, num_classes=num_classes, audio_length=128,
                        num_mel_bins=32, image_size=32)  # fmt: skip


def test_audio_only_batches_have_no_frames(esc50):
    _, _, _, urls = esc50
    batches = list(small_loader(urls, frames=False))
    assert sum(len(b["keys"]) for b in batches) == 12
    for b in batches:
        assert set(b) == {"audio", "labels", "keys"} and b["audio"].shape == (len(b["keys"]), 128, 32)
        assert torch.equal(b["labels"].sum(1), torch.ones(len(b["keys"])))


def test_mixed_shard_sets_follow_one_rule(esc50, tiny_shards):
    """Jobs needing frames refuse audio-only shards, naming them; audio jobs read both kinds, without frames."""
    _, _, _, audio_urls = esc50
    mixed = tiny_shards.urls + audio_urls
    with pytest.raises(AudioOnlyShardsError) as err:
        small_loader(mixed, frames=True)
    message = str(err.value)
    assert "3 shard(s) hold audio only" in message and all(u in message for u in audio_urls)
    assert not any(u in message for u in tiny_shards.urls)
    keys = [k for b in small_loader(mixed, frames=False) for k in b["keys"]]
    assert len(keys) == 12 + tiny_shards.manifest["num_samples"]
    assert all("frames" in b for b in small_loader(tiny_shards.urls, frames=True))  # audio-visual as before


def test_pretraining_on_audio_only_shards_is_a_named_error(esc50, tmp_path):
    from cavmae.train.batches import make_batches

    _, _, _, urls = esc50
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["data.synthetic=false", f"data.train_shards=[{urls[0]}]"])
    with pytest.raises(AudioOnlyShardsError):
        loader_for(cfg, urls, train=True)
    with pytest.raises(ConfigError, match="data.train_shards: 1 shard.s. hold audio only"):
        make_batches(cfg, "train")


# ---------------------------------------------------------------------------------------------------------------
# fine-tuning and evaluation on audio alone, from an audio-visual model


def test_audio_finetune_and_evaluate_from_audio_visual_model(esc50, tmp_path):
    from cavmae.models.weights import save_official, save_pretrained
    from cavmae.train import train

    _, _, _, urls = esc50
    pattern = str(Path(urls[0]).parent / "esc-{000000..000002}.tar")
    overrides = [
        *PRETRAIN_SMALL_INPUTS,
        "model.num_classes=3",
        "data.synthetic=false",
        f"data.train_shards=[{pattern}]",
        f"data.val_shards=[{pattern}]",
        "data.num_workers=0",
        "data.batch_size=4",
        "eval.batch_size=4",
        "finetune.inputs=audio",
        "finetune.average_epochs=null",
        "train.progress_bar=false",
    ]
    base = load_config(REPO / "configs" / "tiny_finetune.yaml", [f"train.out_dir={tmp_path / 'x'}", *overrides])
    torch.manual_seed(0)
    audio_visual = cavmae.create_model(base.model, kind="pretrain")
    save_pretrained(audio_visual, tmp_path / "av")  # our model directory
    save_official(audio_visual, tmp_path / "av.pth")  # a public CAV-MAE checkpoint
    for init, steps in ((tmp_path / "av", 3), (tmp_path / "av.pth", 1)):
        out = tmp_path / f"ft_{init.name}"
        cfg = load_config(
            REPO / "configs" / "tiny_finetune.yaml",
            [f"train.out_dir={out}", f"train.init={init}", f"train.max_steps={steps}", *overrides],
        )
        run = train(cfg)
        assert (run / "model").is_dir()
    result = tmp_path / "eval.json"
    code = main(["evaluate", "--model", str(tmp_path / "ft_av" / "model"), "--shards", pattern, "--out", str(result),
                 "--num-workers", "0", "--batch-size", "4"])  # fmt: skip
    report = json.loads(result.read_text())
    assert code == 0 and report["mode"] == "audio" and report["clips"] == 12 and report["frames"] == 1
    assert 0.0 <= report["single_frame"]["top1"] <= 100.0
