"""Damaged shards: each fault is counted under its cause and names its shard; good samples around it are kept.

Faults: a zero-byte shard, one flipped bit in a tar header, a shard whose sha256 no longer matches its manifest,
a lightly corrupted JPEG frame. The shards are the session's tiny synthetic ones (4 shards of 2 samples), copied."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest

from cavmae.config import DataConfig
from cavmae.data.loader import build_loader
from cavmae.data.shards import TarFormatError, iter_shard, iter_tar
from cavmae.data.verify import ShardVerifyError, require_valid_shards, verify_shards


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"batch_size": 2, "num_workers": 0, "shuffle_buffer": 4, **kw})


@pytest.fixture
def shards(tiny_shards, tmp_path) -> tuple[list[str], list[list[str]]]:
    """A private copy of the tiny shards: (urls, member names per shard)."""
    shutil.copytree(tiny_shards.dir, tmp_path / "s")
    urls = [u.replace(str(tiny_shards.dir), str(tmp_path / "s")) for u in tiny_shards.urls]
    names = []
    for u in urls:
        with tarfile.open(u) as tar:
            names.append(tar.getnames())
    return urls, names


def keys_of(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n.split(".")[0] for n in names))


def read_keys(loader) -> list[str]:
    return [k for b in loader for k in b["keys"]]


def test_zero_byte_shard_is_counted_and_named(shards, caplog):
    urls, names = shards
    open(urls[1], "wb").close()
    loader = build_loader(cfg(), urls, num_classes=4, train=False)
    with caplog.at_level(logging.WARNING, logger="cavmae.data.loader"):
        got = read_keys(loader)
    assert sorted(got) == sorted(k for i in (0, 2, 3) for k in keys_of(names[i]))
    assert loader.errors.counts()["shard"] == 1 and loader.errors.total == 1
    assert any(urls[1] in r.message and "empty file (0 bytes)" in r.message for r in caplog.records)


def test_two_bad_shards_are_each_named(shards, caplog):
    urls, _ = shards
    open(urls[0], "wb").close()
    with open(urls[2], "r+b") as f:
        f.truncate(700)  # inside the first member
    loader = build_loader(cfg(), urls, num_classes=4, train=False)
    with caplog.at_level(logging.WARNING, logger="cavmae.data.loader"):
        read_keys(loader)
    assert loader.errors.counts()["shard"] == 2
    warned = " ".join(r.message for r in caplog.records)
    assert urls[0] in warned and urls[2] in warned


def _flip_header_bit(url: str, member: str) -> None:
    """Flip one bit in the mtime field of `member`'s tar header (its checksum no longer matches)."""
    data = bytearray(Path(url).read_bytes())
    start = data.index(member.encode())  # the header starts with the member name
    assert start % 512 == 0
    data[start + 140] ^= 0x04
    Path(url).write_bytes(bytes(data))


def test_flipped_header_bit_keeps_the_samples_after_it(shards, caplog):
    urls, names = shards
    first, second = keys_of(names[1])
    _flip_header_bit(urls[1], f"{first}.wav")
    # strict by default for other users of iter_tar
    with pytest.raises(TarFormatError, match="checksum"), open(urls[1], "rb") as f:
        list(iter_tar(f))

    loader = build_loader(cfg(), urls, num_classes=4, train=False)
    with caplog.at_level(logging.WARNING, logger="cavmae.data.loader"):
        got = read_keys(loader)
    assert second in got  # the good sample after the bad header is still read
    assert first not in got  # it lost its audio: dropped and counted
    assert sorted(got) == sorted([k for i in (0, 2, 3) for k in keys_of(names[i])] + [second])
    counts = loader.errors.counts()
    assert counts["shard"] == 1 and counts["member"] == 1 and loader.errors.total == 2
    warned = [r.message for r in caplog.records if urls[1] in r.message]
    assert any("bad header checksum" in m and "resynchronised" in m for m in warned)


def test_flipped_bit_in_a_frame_header_costs_that_member_only(shards):
    urls, names = shards
    first, second = keys_of(names[2])
    _flip_header_bit(urls[2], f"{first}.f3.jpg")  # not the middle frame (f5) the evaluation loader decodes
    errors: list[tuple[str, str]] = []
    samples = list(iter_shard(urls[2], lambda kind, msg: errors.append((kind, msg))))
    assert [s["__key__"] for s in samples] == [first, second]
    assert "f3.jpg" not in samples[0] and "f4.jpg" in samples[0]
    assert len(errors) == 1 and errors[0][0] == "shard" and urls[2] in errors[0][1]
    loader = build_loader(cfg(), [urls[2]], num_classes=4, train=False)
    assert read_keys(loader) == [first, second]
    assert loader.errors.counts()["shard"] == 1


def test_wrong_sha256_is_found_before_training(shards, capsys):
    urls, _ = shards
    assert verify_shards(urls).ok and verify_shards(urls).checked == 4
    data = bytearray(Path(urls[3]).read_bytes())
    data[2000] ^= 0xFF  # same size, other bytes
    Path(urls[3]).write_bytes(bytes(data))
    open(urls[0], "wb").close()
    report = verify_shards(urls)
    assert report.checked == 2
    reasons = {p.url: p.reason for p in report.problems}
    assert set(reasons) == {urls[0], urls[3]}
    assert "sha256" in reasons[urls[3]] and "empty file" in reasons[urls[0]]
    assert verify_shards(urls, hash_it=False).checked == 3  # a size-only check cannot see the flipped byte
    with pytest.raises(ShardVerifyError) as e:
        require_valid_shards(urls)
    assert urls[0] in str(e.value) and urls[3] in str(e.value)

    from cavmae.cli import main

    assert main(["verify-shards", *urls]) == 1
    out = capsys.readouterr().out
    assert f"BAD  {urls[3]}: sha256" in out and "2 shard(s) ok, 2 bad" in out


def _rewrite_member(url: str, name: str, data: bytes) -> None:
    with tarfile.open(url) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(url, "w", format=tarfile.GNU_FORMAT) as tar:
        for m, payload in items:
            payload = data if m.name == name else payload
            m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload))


def test_corrupt_jpeg_is_rejected_and_counted(shards):
    urls, names = shards
    first, second = keys_of(names[0])
    name = f"{first}.f5.jpg"  # the middle frame, which evaluation decodes
    with tarfile.open(urls[0]) as tar:
        jpg = tar.extractfile(name).read()
    # light damage: 64 bytes of the entropy-coded data zeroed; libjpeg warns ("Corrupt JPEG data") but decodes
    damaged = jpg[: len(jpg) // 2] + b"\0" * 64 + jpg[len(jpg) // 2 + 64 :]
    from PIL import Image

    Image.open(io.BytesIO(damaged)).load()  # a lenient decoder accepts it: the damage is silent there
    _rewrite_member(urls[0], name, damaged)
    loader = build_loader(cfg(), urls, num_classes=4, train=False)
    got = read_keys(loader)
    assert first not in got and second in got
    assert loader.errors.counts()["image"] == 1 and loader.errors.total == 1


def test_skip_counts_per_epoch(shards):
    urls, names = shards
    open(urls[1], "wb").close()
    loader = build_loader(cfg(), urls, num_classes=4, train=True)
    before = loader.errors.counts()
    read_keys(loader)
    first = loader.errors.since(before)
    before = loader.errors.counts()
    loader.set_epoch(1)
    read_keys(loader)
    assert first["shard"] == 1 and loader.errors.since(before)["shard"] == 1
    assert loader.errors.counts()["shard"] == 2


def _train_cfg(urls: list[str], out: Path, *extra: str):
    from cavmae.config import load_config

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    shards = ",".join(urls)
    return load_config(
        tiny,
        [
            "data.synthetic=false",
            f"data.train_shards=[{shards}]",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.shuffle_buffer=4",
            "model.num_classes=4",
            "train.epochs=1",
            "train.log_every=100",
            "train.val_at_start=false",
            "train.image_every=0",
            "train.progress_bar=false",
            "train.wandb_mode=disabled",
            f"train.out_dir={out}",
            *extra,
        ],
    )


def test_training_logs_the_epochs_skips_by_cause(shards, tmp_path):
    from cavmae.train import train

    urls, _ = shards
    open(urls[1], "wb").close()
    run = train(_train_cfg(urls, tmp_path / "run"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]  # the epoch's last step is logged although log_every is larger, with its skip counts
    assert last["step"] == 4 and last["epoch"] == 0
    assert last["skipped/shard"] == 1 and last["skipped"] == sum(v for k, v in last.items() if k.startswith("skipped/"))
    assert last["skipped/image"] == 0


def test_verify_stops_training_on_a_changed_shard(shards, tmp_path, caplog):
    from cavmae.cli import main

    urls, _ = shards
    data = bytearray(Path(urls[2]).read_bytes())
    data[3000] ^= 0x01
    Path(urls[2]).write_bytes(bytes(data))
    cfg_args = [f"data.train_shards=[{','.join(urls)}]", "data.verify=true", f"train.out_dir={tmp_path / 'run'}"]
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    with caplog.at_level(logging.ERROR):
        # a damaged input: the command ran and failed (exit 1), not a usage error
        assert main(["pretrain", "--config", tiny, "data.synthetic=false", "model.num_classes=4", *cfg_args]) == 1
    assert any(urls[2] in r.message and "sha256" in r.message for r in caplog.records)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
