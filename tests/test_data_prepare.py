"""cavmae prepare: inputs -> shards + manifest; failures recorded, determinism, restart after a kill."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cavmae.data import prepare as prepare_module
from cavmae.data.clips import make_synthetic_dataset, write_video
from cavmae.data.media import probe
from cavmae.data.prepare import PrepareError, PrepareOptions, prepare_shards
from cavmae.data.sources import plan_inputs

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def members(shard_dir, pattern="*.tar"):
    """{key: {ext: bytes}} over the shards of a folder."""
    out = {}
    for p in sorted(shard_dir.glob(pattern)):
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_shared_media_folder(media_shards):
    out, manifest = media_shards
    samples = members(out)
    # the dot of 00W1lcxW-WU_40.000 is gone; the .wav is an audio-only sample
    assert set(samples) == {"00W1lcxW-WU_40000", "chaplin", "FwVYUHKoLtQ_000034"}
    assert manifest["failed"] == [] and manifest["modalities"] == ["audio"]
    assert manifest["ignored"] == ["README.md"] and manifest["num_samples"] == 3
    wav = samples.pop("FwVYUHKoLtQ_000034")
    assert set(wav) == {"json", "wav"} and json.loads(wav["json"])["modalities"] == ["audio"]
    assert {s["first_key"]: s["modalities"] for s in manifest["shards"]}["chaplin"] == ["audio", "video"]
    for key, s in samples.items():
        assert set(s) == {"json", "wav", *(f"f{i}.jpg" for i in range(10))}
        meta = json.loads(s["json"])
        assert meta["key"] == key and len(meta["frame_times"]) == 10 and meta["num_frames"] == 10
        assert meta["frame_times"] == sorted(meta["frame_times"]) and meta["frame_times"][0] >= 0
        assert min(meta["frame_size"]) <= 224
    meta = json.loads(samples["00W1lcxW-WU_40000"]["json"])
    assert meta["source"] == "00W1lcxW-WU_40.000.mp4" and meta["fps"] == 12.5 and meta["duration"] == 10.0
    assert meta["frame_size"] == [144, 256]  # never enlarged
    chaplin = json.loads(samples["chaplin"]["json"])
    assert chaplin["frame_size"] == [224, 398]  # 640x360 -> shorter side 224
    assert 9.5 < chaplin["duration"] <= 10.0  # MP3 audio converted to 16 kHz mono


def test_audioset_and_vggsound_csv_matching(media_dir, tmp_path):
    csv = tmp_path / "segments.csv"
    csv.write_text(
        "# Segments csv\n# num_ytids=3\n# YTID, start_seconds, end_seconds, positive_labels\n"
        '00W1lcxW-WU, 40.000, 50.000, "/m/09x0r,/m/04rlf"\n'
        'notdownload, 30.000, 40.000, "/m/09x0r"\n'
        'chaplin, 0.000, 10.000, "/m/not_a_mid"\n'
    )
    plan = plan_inputs(videos=media_dir, csv=csv, label_csv=REPO / "data" / "class_labels_indices_as.csv")
    assert plan.mode == "audioset" and [c.key for c in plan.inputs] == ["00W1lcxW-WU_40000"]
    clip = plan.inputs[0]
    assert clip.label_indices == [0, 137] and clip.clip_start == 0.0 and clip.clip_end == 10.0
    assert [m["ytid"] for m in plan.missing] == ["notdownload"]
    assert "unknown label" in plan.failed[0]["reason"] and plan.failed[0]["input"] == "chaplin.mp4"
    assert plan.unmatched == ["FwVYUHKoLtQ_000034.wav"]

    vgg = tmp_path / "vggsound.csv"
    vgg.write_text('FwVYUHKoLtQ,34,"dog barking, growling",test\n00W1lcxW-WU,40,playing piano,train\n')
    plan = plan_inputs(videos=media_dir, csv=vgg, split="test")
    assert plan.mode == "vggsound" and plan.label_index.names == ["dog barking, growling"]
    manifest = prepare_shards(plan, tmp_path / "vgg", name="vgg")
    assert manifest["failed"] == [] and manifest["num_samples"] == 1 and manifest["modalities"] == ["audio"]
    assert manifest["label_index"][0]["display_name"] == "dog barking, growling"


def test_datafile_mode_takes_frames_from_folders(media_dir, tmp_path):
    """A wav-only clip is accepted where the mode provides the frames (CAV-MAE datafile)."""
    from PIL import Image

    vid = "FwVYUHKoLtQ_000034"
    for i in range(10):
        if i == 3:
            continue  # a missing frame takes its nearest neighbour
        folder = tmp_path / "frames" / f"frame_{i}"
        folder.mkdir(parents=True)
        Image.fromarray(np.full((240, 320, 3), 20 * i, np.uint8)).save(folder / f"{vid}.jpg")
    datafile = tmp_path / "train.json"
    entry = {"video_id": vid, "wav": str(media_dir / f"{vid}.wav"), "video_path": "frames", "labels": "/m/a,/m/b"}
    datafile.write_text(json.dumps({"data": [entry, {"video_id": "broken"}]}))
    manifest = prepare_shards(plan_inputs(datafile=datafile), tmp_path / "out", name="df")
    assert manifest["num_samples"] == 1 and "missing field" in manifest["failed"][0]["reason"]
    s = members(tmp_path / "out")[vid]
    meta = json.loads(s["json"])
    assert meta["labels"] == ["/m/a", "/m/b"] and meta["label_indices"] == [0, 1] and meta["missing_frames"] == [3]
    assert meta["frame_size"] == [224, 299] and abs(meta["duration"] - 10.0) < 0.01
    assert s["f3.jpg"] == s["f2.jpg"]


def test_bad_inputs_are_named_and_good_clips_kept(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=4, num_classes=2, duration=1.0, size=32, seed=2)
    videos = ds.videos
    good = sorted(p.name for p in videos.iterdir())
    data = (videos / good[0]).read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "empty.mp4").write_bytes(b"")
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    write_video(videos / "silent.mp4", frames, None, fps=8, sample_rate=16000)
    (videos / "notes.txt").write_text("not a video")
    assert probe(videos / "silent.mp4") == (True, False)

    manifest = prepare_shards(plan_inputs(videos=videos), tmp_path / "out", samples_per_shard=2, workers=2)
    reasons = {f["input"]: f["reason"] for f in manifest["failed"]}
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "silent.mp4"}
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["silent.mp4"] == "no audio stream"
    assert reasons["truncated.mp4"].startswith(("undecodable", "truncated"))
    assert manifest["ignored"] == ["notes.txt"]
    keys = set(members(tmp_path / "out"))
    assert keys == {g[: -len(".mp4")].replace(".", "") for g in good}
    assert manifest["num_samples"] == 4 == sum(s["count"] for s in manifest["shards"])


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from cavmae.data.prepare import prepare_shards
    from cavmae.data.sources import plan_inputs

    def progress(event, shard, count):
        # die without cleanup in the middle of the third shard (two finished, one partial on disk)
        if event == "sample" and shard == 2 and count == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    plan = plan_inputs(videos=sys.argv[1], csv=sys.argv[2], label_csv=sys.argv[3])
    prepare_shards(plan, sys.argv[4], name="kill", samples_per_shard=2, workers=2, progress=progress)
    """
)


def test_killed_prepare_resumes_to_identical_shards(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=7, num_classes=3, duration=1.0, size=32, seed=4)
    args = [str(ds.videos), str(ds.csv), str(ds.label_csv)]
    plan = plan_inputs(videos=ds.videos, csv=ds.csv, label_csv=ds.label_csv)
    reference = prepare_shards(plan, tmp_path / "ref", name="kill", samples_per_shard=2, workers=0)

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", KILL_SCRIPT, *args, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert sorted(p.name for p in out.glob("kill-*")) == [
        "kill-000000.tar",
        "kill-000001.tar",
        "kill-000002.tar.tmp",
        "kill-progress.json",
    ]
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("kill-00000[01].tar")}

    calls = []
    resumed = prepare_shards(
        plan, out, name="kill", samples_per_shard=2, workers=0, progress=lambda *a: calls.append(a)
    )
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("kill-00000[01].tar")} == finished  # not redone
    assert calls[0] == ("sample", 2, 1)  # restarted at the third shard
    assert resumed == reference
    ref_files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert sorted(p.name for p in out.iterdir()) == ref_files
    for name in ref_files:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_failure_mid_shard_then_rerun_and_guards(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=5, num_classes=2, duration=1.0, size=32, seed=5)
    plan = plan_inputs(videos=ds.videos, csv=ds.csv, label_csv=ds.label_csv)
    reference = prepare_shards(plan, tmp_path / "ref", samples_per_shard=2)

    def boom(event, shard, count):
        if event == "sample" and shard == 1 and count == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        prepare_shards(plan, tmp_path / "out", samples_per_shard=2, progress=boom)
    assert prepare_shards(plan, tmp_path / "out", samples_per_shard=2) == reference
    for s in reference["shards"]:
        assert (tmp_path / "out" / s["file"]).read_bytes() == (tmp_path / "ref" / s["file"]).read_bytes()
    # finished: a rerun does nothing; other options need --overwrite
    mtime = (tmp_path / "out" / "data-000000.tar").stat().st_mtime_ns
    assert prepare_shards(plan, tmp_path / "out", samples_per_shard=2) == reference
    assert (tmp_path / "out" / "data-000000.tar").stat().st_mtime_ns == mtime
    with pytest.raises(PrepareError, match="overwrite"):
        prepare_shards(plan, tmp_path / "out", samples_per_shard=3)
    again = prepare_shards(plan, tmp_path / "out", samples_per_shard=3, overwrite=True)
    assert [s["count"] for s in again["shards"]] == [3, 2]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["data-000000.tar", "data-000001.tar"]


def test_max_shard_bytes_mp4_store_and_whole_video_windows(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=4, num_classes=2, duration=3.0, size=32, seed=6)
    # one clip as a whole video named <ytid>.mp4: the CSV window [start, start + 3] is cut from 1 s into the file
    whole = ds.clips[0]
    shutil.move(ds.videos / whole.file, ds.videos / f"{whole.ytid}.mp4")
    row = f"{whole.ytid}, {whole.start:.3f}, {whole.start + 3:.3f}"
    csv = ds.csv.read_text().replace(row, f"{whole.ytid}, 1.000, 2.500")
    (tmp_path / "seg.csv").write_text(csv)
    plan = plan_inputs(videos=ds.videos, csv=tmp_path / "seg.csv", label_csv=ds.label_csv)
    limit = 160_000
    manifest = prepare_shards(
        plan, tmp_path / "out", samples_per_shard=100, max_shard_bytes=limit, options=PrepareOptions(store="both")
    )
    assert len(manifest["shards"]) > 1 and manifest["num_samples"] == 4
    assert all(s["bytes"] <= limit or s["count"] == 1 for s in manifest["shards"])
    samples = members(tmp_path / "out")
    meta = json.loads(samples[whole.ytid]["json"])
    assert (meta["clip_start"], meta["clip_end"]) == (1.0, 2.5) and abs(meta["duration"] - 1.5) < 0.01
    assert all(1.0 <= t < 2.5 for t in meta["frame_times"])
    assert samples[whole.ytid]["mp4"] == (ds.videos / f"{whole.ytid}.mp4").read_bytes()


def _dies_on_second_clip(inp, opts):
    if inp.key == _DIES_ON:
        os._exit(1)  # what a segfaulting decoder does to its process
    return _process_clip(inp, opts)


_DIES_ON = ""
_process_clip = prepare_module.process_clip


def test_a_crashing_decoder_is_recorded_not_fatal(tmp_path, monkeypatch):
    global _DIES_ON
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=4, num_classes=2, duration=1.0, size=32, seed=7)
    plan = plan_inputs(videos=ds.videos)
    _DIES_ON = plan.inputs[1].key
    monkeypatch.setattr(prepare_module, "process_clip", _dies_on_second_clip)  # forked workers inherit the patch
    manifest = prepare_shards(plan, tmp_path / "out", samples_per_shard=2, workers=2)
    assert manifest["failed"] == [{"input": plan.inputs[1].rel, "reason": prepare_module.CRASHED}]
    assert set(members(tmp_path / "out")) == {c.key for c in plan.inputs} - {_DIES_ON}


# ---------------------------------------------------------------------------------------------------------------
# the command: what a user sees (exit code, one line) when nothing can be written, and which shards to train on


def prepare_cli(caplog, *argv) -> tuple[int, list]:
    """``cavmae prepare ARGV`` in this process: (exit code, the log records at WARNING and above)."""
    from cavmae.cli import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(["prepare", *(str(a) for a in argv), "--workers", "0"])
    return code, [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_prepare_that_writes_nothing_exits_1_saying_why(tmp_path, caplog):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"not a video at all")
    (videos / "b.mp4").write_bytes(b"")
    (videos / "c.mkv").write_bytes(b"")
    (videos / "notes.txt").write_text("not a video")
    (videos / "cover.png").write_bytes(b"\x89PNG")
    code, records = prepare_cli(caplog, "--videos", videos, "--out", tmp_path / "out")
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("nothing was written: 3 input(s) failed (2 empty file (0 bytes), 1 undecodable")
    assert "2 file(s) are not audio/video (cover.png, notes.txt)" in errors[0]
    assert str(tmp_path / "out" / "data-manifest.json") in errors[0]
    # the same command again: the finished (empty) job is not redone, and still fails
    assert prepare_cli(caplog, "--videos", videos, "--out", tmp_path / "out")[0] == 1


def test_prepare_names_the_files_it_skips_as_not_media(tmp_path, caplog):
    ds = make_synthetic_dataset(tmp_path / "syn", num_clips=2, num_classes=2, duration=1.0, size=32, seed=0)
    (ds.videos / "notes.txt").write_text("not a video")
    (ds.videos / "sub").mkdir()
    (ds.videos / "sub" / "cover.png").write_bytes(b"\x89PNG")
    code, records = prepare_cli(caplog, "--videos", ds.videos, "--out", tmp_path / "out")
    assert code == 0
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any(
        w.startswith("skipped 2 file(s) in ") and "that are not audio/video: notes.txt, sub/cover.png" in w
        for w in warnings
    ), warnings


def test_prepare_says_which_shards_to_train_on_and_a_wrong_pattern_names_the_missing_ones(tmp_path, caplog):
    """The README's data example: synth -> prepare writes one shard; the line prepare logs is the override to use,
    and a pattern naming four shards says which three do not exist (not that the manifest is missing)."""
    from cavmae.config import ConfigError, load_config
    from cavmae.data.verify import verify_shards
    from cavmae.train.batches import batches_per_epoch

    ds = make_synthetic_dataset(tmp_path / "synth", num_clips=4, num_classes=2, duration=1.0, size=32, seed=0)
    out = tmp_path / "shards"
    argv = ["--videos", ds.videos, "--csv", ds.csv, "--label-csv", ds.label_csv, "--out", out, "--name", "synth"]
    assert prepare_cli(caplog, *argv)[0] == 0
    said = re.search(r"'(data\.train_shards=\[.*\])'", caplog.text)
    assert said and said[1] == f"data.train_shards=[{out}/synth-000000.tar]"
    overrides = ["data.synthetic=false", "data.batch_size=2"]
    assert batches_per_epoch(load_config(TINY, [*overrides, said[1]]), 1) == 2  # 4 clips, batches of 2

    wrong = f"{out}/synth-{{000000..000003}}.tar"
    cfg = load_config(TINY, [*overrides, f"data.train_shards=[{wrong}]"])
    with pytest.raises(ConfigError) as e:
        batches_per_epoch(cfg, 1)
    assert str(e.value) == (
        f"data.train_shards: shard pattern '{wrong}' names 4 shard(s), 3 of which do not exist: synth-000001.tar, "
        f"synth-000002.tar, synth-000003.tar ({out}/synth-manifest.json lists 1 shard(s): synth-000000.tar)"
    )
    report = verify_shards(wrong)  # verify-shards names each missing shard as missing, not as unlisted
    assert report.checked == 1 and [p.reason.split(" (")[0] for p in report.problems] == ["missing or unreadable"] * 3
