"""cavmae.data.loader: batches from shards; fbank exactness, corrupt samples, rank/worker splits, determinism."""

import io
import math
import shutil
import tarfile

import numpy as np
import pytest
import torch
import torchaudio

from cavmae.config import DataConfig
from cavmae.data.fbank import FBANK_MEAN, FBANK_STD
from cavmae.data.loader import build_loader
from cavmae.data.media import read_audio


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    wave = wave - wave.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        wave[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    fb = torch.nn.functional.pad(fb, (0, 0, 0, 1024 - fb.shape[0])) if fb.shape[0] < 1024 else fb[:1024]
    return (fb - FBANK_MEAN) / FBANK_STD


def shard_member(url, name) -> bytes:
    with tarfile.open(url) as tar:
        return tar.extractfile(name).read()


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"batch_size": 2, "num_workers": 0, "shuffle_buffer": 4, **kw})


def all_batches(loader):
    return [b for b in loader]


def test_shared_media_fbank_equals_kaldi(media_shards, media_dir):
    out, manifest = media_shards
    urls = [str(out / s["file"]) for s in manifest["shards"] if "video" in s["modalities"]]
    loader = build_loader(cfg(), urls, num_classes=527, train=False)
    batches = all_batches(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert sorted(keys) == ["00W1lcxW-WU_40000", "chaplin"]
    for b in batches:
        assert b["audio"].shape == (len(b["keys"]), 1024, 128) and b["audio"].dtype == torch.float32
        assert b["frames"].shape == (len(b["keys"]), 3, 224, 224) and b["labels"].shape == (len(b["keys"]), 527)
        for i, key in enumerate(b["keys"]):
            url = next(u for u in urls if f"{key}.wav" in shard_member_names(u))
            wav = shard_member(url, f"{key}.wav")
            wave, rate = _read_wav(wav)
            assert rate == 16000
            assert (b["audio"][i] - reference_fbank(wave)).abs().max().item() < 1e-5
    # the stored audio is the source's audio (16 kHz mono, 16-bit): equal up to quantisation; the AAC decoder
    # overshoots 1.0 on 56 samples of this clip, which 16-bit PCM clips (as ffmpeg's s16 output does for CAV-MAE)
    stored, _ = _read_wav(shard_member(urls[0], "00W1lcxW-WU_40000.wav"))
    source = torch.from_numpy(read_audio(media_dir / "00W1lcxW-WU_40.000.mp4", 0.0, 10.0))
    assert stored.shape == source.shape == (160_000,)
    assert (stored - source.clamp(-1, 32767 / 32768)).abs().max().item() <= 0.5 / 32768 + 1e-7
    assert loader.errors.total == 0


def shard_member_names(url):
    with tarfile.open(url) as tar:
        return tar.getnames()


def _read_wav(data: bytes):
    import soundfile as sf

    wave, rate = sf.read(io.BytesIO(data), dtype="float32")
    return torch.from_numpy(wave), rate


def test_webdataset_reads_the_shards(media_shards):
    import webdataset as wds

    out, manifest = media_shards
    urls = [str(out / s["file"]) for s in manifest["shards"] if "video" in s["modalities"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == ["00W1lcxW-WU_40000", "chaplin"]
    assert all({"json", "wav", "f0.jpg", "f9.jpg"} <= set(s) for s in samples)


def _rewrite(url, changes: dict[str, bytes], cut_after: str | None = None):
    """Rewrite a tar replacing member contents (same names); optionally cut the file inside `cut_after`."""
    with tarfile.open(url) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(url, "w", format=tarfile.GNU_FORMAT) as tar:
        for m, data in items:
            data = changes.get(m.name, data)
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    if cut_after:
        with open(url, "rb") as f:
            blob = f.read()
        pos = blob.index(cut_after.encode()) + 700  # inside the member's data
        with open(url, "wb") as f:
            f.write(blob[:pos])


def test_corrupt_members_are_skipped_and_counted(tiny_shards, tmp_path):
    shutil.copytree(tiny_shards.dir, tmp_path / "s")
    urls = [u.replace(str(tiny_shards.dir), str(tmp_path / "s")) for u in tiny_shards.urls]
    names = [shard_member_names(u) for u in urls]
    key = [n[0].split(".")[0] for n in names]  # first sample of each shard
    garbage = b"\x00not media\xff" * 50
    _rewrite(urls[0], {f"{key[0]}.wav": garbage})
    _rewrite(urls[1], {f"{key[1]}.json": b"{broken"})
    _rewrite(urls[2], {f"{key[2]}.f5.jpg": garbage})
    loader = build_loader(cfg(num_workers=2), urls, num_classes=4, train=False)  # middle frame: f5
    got = [k for b in loader for k in b["keys"]]
    assert sorted(got) == sorted(tiny_shards.keys - {key[0], key[1], key[2]})
    assert loader.errors.counts() == {
        "shard": 0,
        "member": 0,
        "json": 1,
        "audio": 1,
        "image": 1,
        "video": 0,
        "labels": 0,
    }
    # a shard cut short: the samples before the damage are kept, the shard error is counted, the epoch goes on
    second = names[3][-1].split(".")[0]
    _rewrite(urls[3], {}, cut_after=f"{second}.wav")
    loader = build_loader(cfg(), urls[3:], num_classes=4, train=False)
    assert [k for b in loader for k in b["keys"]] == [key[3]]
    assert loader.errors.counts()["shard"] == 1


@pytest.mark.parametrize("train", [True, False])
def test_two_ranks_two_workers_see_disjoint_cover(tiny_shards, train):
    seen = {}
    for rank in (0, 1):
        loader = build_loader(
            cfg(num_workers=2), tiny_shards.pattern, num_classes=4, train=train, rank=rank, world_size=2, seed=3
        )
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            keys = [k for b in loader for k in b["keys"]]
            seen[rank, epoch] = keys
            assert len(keys) == len(set(keys))
            if not train:
                assert len(loader) == len(keys) // 2 + len(keys) % 2
    for epoch in (0, 1):
        a, b = set(seen[0, epoch]), set(seen[1, epoch])
        assert not a & b and a | b == tiny_shards.keys
    if train:
        assert seen[0, 0] + seen[1, 0] != seen[0, 1] + seen[1, 1]  # reshuffled per epoch


def _augmenting(**kw):
    aug = dict(noise=True, time_roll=True, freqm=24, timem=48, mixup=0.5, label_smoothing=0.1, num_workers=2)
    return cfg(**{**aug, **kw})


def test_deterministic_under_seed(tiny_shards):
    def run(seed):
        loader = build_loader(_augmenting(), tiny_shards.pattern, num_classes=4, train=True, seed=seed)
        return all_batches(loader)

    a, b, c = run(7), run(7), run(8)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"]
        for k in ("audio", "frames", "labels"):
            assert torch.equal(x[k], y[k]), k
    assert any(x["keys"] != y["keys"] or not torch.equal(x["audio"], y["audio"]) for x, y in zip(a, c))


def labels_by_key(shards) -> dict[str, list[int]]:
    return {c.file.rsplit(".", 1)[0].replace(".", ""): [o.cls.index for o in c.objects] for c in shards.synth.clips}


def test_labels_frames_and_soft_labels(tiny_shards):
    index = labels_by_key(tiny_shards)
    loader = build_loader(cfg(), tiny_shards.pattern, num_classes=4, train=False, frame_mode="all", image_size=48)
    for b in loader:
        assert b["frames"].shape == (len(b["keys"]), 10, 3, 48, 48)
        for row, key in zip(b["labels"], b["keys"]):
            assert row.nonzero().flatten().tolist() == sorted(index[key])
    # training: random frames differ between epochs; mixup + smoothing give soft labels in [ls/C, 1 - ls + ls/C]
    loader = build_loader(_augmenting(num_workers=0), tiny_shards.pattern, num_classes=4, train=True, image_size=48)
    ls = 0.1
    labels = torch.cat([b["labels"] for b in loader])
    assert labels.min() >= ls / 4 - 1e-6 and labels.max() <= 1 - ls + ls / 4 + 1e-6
    assert ((labels > ls / 4 + 1e-4) & (labels < 1 - ls + ls / 4 - 1e-4)).any()  # some samples were mixed
    first = {
        k: f
        for b in build_loader(cfg(), tiny_shards.pattern, num_classes=4, train=True, epoch=0, image_size=48)
        for k, f in zip(b["keys"], b["frames"])
    }
    second = {
        k: f
        for b in build_loader(cfg(), tiny_shards.pattern, num_classes=4, train=True, epoch=1, image_size=48)
        for k, f in zip(b["keys"], b["frames"])
    }
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_class_balance_weights_and_resampling(tiny_shards):
    counts = np.array(tiny_shards.manifest["label_counts"], dtype=float)
    n, present = tiny_shards.manifest["num_samples"], (counts > 0).sum()
    labels_of = {
        c.file.rsplit(".", 1)[0].replace(".", ""): [o.cls.index for o in c.objects] for c in tiny_shards.synth.clips
    }
    expected = {k: sum(n / (present * counts[i]) for i in v) for k, v in labels_of.items()}
    loader = build_loader(
        cfg(class_balanced=True, balance_mode="weights"), tiny_shards.pattern, num_classes=4, train=True
    )
    got = {k: float(w) for b in loader for k, w in zip(b["keys"], b["weights"])}
    assert got.keys() == expected.keys() and all(math.isclose(got[k], expected[k], rel_tol=1e-5) for k in got)
    assert math.isclose(sum(got.values()) / len(got), 1.0, rel_tol=1e-6)
    # resampling: each sample appears floor(w) or floor(w) + 1 times; rare-label samples more often
    loader = build_loader(cfg(class_balanced=True, drop_last=False), tiny_shards.pattern, num_classes=4, train=True)
    freq: dict[str, int] = {}
    for b in loader:
        assert "weights" not in b
        for k in b["keys"]:
            freq[k] = freq.get(k, 0) + 1
    for k, w in expected.items():
        assert math.floor(w) <= freq.get(k, 0) <= math.floor(w) + 1


def test_resampled_mode_yields_the_epoch_length(tiny_shards):
    loader = build_loader(
        cfg(resampled=True, samples_per_epoch=12, num_workers=2),
        tiny_shards.pattern,
        num_classes=4,
        train=True,
        rank=1,
        world_size=2,
    )
    assert len(loader) == 3
    batches = all_batches(loader)
    assert len(batches) == 3 and all(len(b["keys"]) == 2 for b in batches)


def test_mp4_only_and_flac_samples(make_tiny_shards, tiny_shards, tmp_path):
    mp4 = make_tiny_shards(tmp_path, num_clips=2, samples_per_shard=2, store="mp4")
    assert set(shard_member_names(mp4.urls[0])) == {f"{k}.{e}" for k in mp4.keys for e in ("json", "mp4")}
    a = {
        k: (x, f)
        for b in build_loader(cfg(), mp4.urls, num_classes=4, train=False)
        for k, x, f in zip(b["keys"], b["audio"], b["frames"])
    }
    ref = {
        k: (x, f)
        for b in build_loader(cfg(), tiny_shards.pattern, num_classes=4, train=False)
        for k, x, f in zip(b["keys"], b["audio"], b["frames"])
    }
    assert a.keys() == mp4.keys
    for k, (x, f) in a.items():  # same clips as the decoded shards (same seed), up to 16-bit and JPEG rounding
        assert (x - ref[k][0]).abs().mean() < 0.05 and (f - ref[k][1]).abs().mean() < 0.1
    # FLAC audio members: lossless, so the same fbank as from the WAV members
    flac = make_tiny_shards(tmp_path / "flac", num_clips=2, samples_per_shard=2, audio_format="flac")
    assert {n.split(".", 1)[1] for n in shard_member_names(flac.urls[0])} >= {"flac", "f5.jpg"}
    for b in build_loader(cfg(), flac.urls, num_classes=4, train=False):
        for k, x in zip(b["keys"], b["audio"]):
            assert torch.equal(x, ref[k][0])


def test_clear_errors(tiny_shards, tmp_path):
    with pytest.raises(ValueError, match="4 classes but num_classes is 3"):
        build_loader(cfg(), tiny_shards.pattern, num_classes=3, train=True)
    with pytest.raises(ValueError, match="no shards"):
        build_loader(cfg(), [], train=True)
    with pytest.raises(ValueError, match="frame_mode"):
        build_loader(cfg(), ["x.tar"], train=True, frame_mode="first")
    unlisted = tmp_path / "x.tar"  # a shard without a manifest to count its samples
    unlisted.write_bytes(b"")
    with pytest.raises(ValueError, match="samples_per_epoch"):
        build_loader(cfg(resampled=True), [str(unlisted)], train=True)
    with pytest.raises(ValueError, match="shard pattern '/nowhere/x-\\*.tar' matches no file"):
        build_loader(cfg(), ["/nowhere/x-*.tar"], train=True)
