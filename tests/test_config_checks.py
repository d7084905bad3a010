"""Configs that would mislead are errors naming the field: synthetic data over shards, shard patterns that match
nothing, duplicate label-index rows, out-of-range values, an unregistered backbone."""

from __future__ import annotations

import re

import pytest
from train_helpers import TINY

import cavmae
from cavmae.config import ConfigError, load_config
from cavmae.data.labels import LabelIndex, MetadataError
from cavmae.data.shards import expand_shards
from cavmae.train.batches import batches_per_epoch


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.temperature=0", "model.temperature"),
        ("model.temperature=-0.1", "model.temperature"),
        ("data.shuffle_buffer=-1", "data.shuffle_buffer"),
        ("data.mixup=1.5", "data.mixup"),
        ("data.mixup=-0.5", "data.mixup"),
        ("data.num_workers=-2", "data.num_workers"),
        ("data.label_smoothing=2", "data.label_smoothing"),
    ],
)
def test_out_of_range_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"^{field} must be"):
        load_config(None, [override])


def test_edges_of_the_ranges_are_accepted():
    cfg = load_config(None, ["data.mixup=1", "data.shuffle_buffer=0", "data.num_workers=0", "model.temperature=1e-3"])
    assert cfg.data.mixup == 1.0 and cfg.data.shuffle_buffer == 0


def test_synthetic_and_shards_are_mutually_exclusive():
    with pytest.raises(ConfigError, match="data.synthetic=true and data.train_shards are both set") as e:
        load_config(TINY, ["data.train_shards=[/d/a-{0..3}.tar]"])
    assert "data.synthetic=false" in str(e.value)
    with pytest.raises(ConfigError, match="data.val_shards"):
        load_config(TINY, ["data.val_shards=[/d/v.tar]"])
    cfg = load_config(TINY, ["data.synthetic=false", "data.train_shards=[/d/a-{0..3}.tar]"])
    assert cfg.data.train_shards == ["/d/a-{0..3}.tar"]


@pytest.mark.parametrize("field", ["backbone", "decoder_backbone"])
def test_unregistered_backbone_names_the_field(field):
    cfg = load_config(TINY, [f"model.{field}=transformer"])
    with pytest.raises(ConfigError, match=rf"^model.{field}: 'transformer' is not a registered backbone.*mamba, vit"):
        cavmae.create_model(cfg.model)
    with pytest.raises(ConfigError, match=rf"^model.{field}"):
        cavmae.create_model(cfg.model, kind="classifier")


def test_globs_and_braces_expand_and_a_pattern_over_nothing_names_itself(tmp_path):
    for name in ("s-000002.tar", "s-000000.tar", "s-000001.tar", "other.txt"):
        (tmp_path / name).write_bytes(b"")
    want = [str(tmp_path / f"s-00000{i}.tar") for i in range(3)]
    assert expand_shards(str(tmp_path / "s-*.tar")) == want
    assert expand_shards([str(tmp_path / "s-00000[01].tar"), str(tmp_path / "s-{000002..000002}.tar")]) == want
    assert expand_shards(f"{tmp_path}/s-{{000000..000001}}.tar::{tmp_path}/s-000002.tar") == want
    for missing in (f"{tmp_path}/x-*.tar", f"{tmp_path}/x-{{000000..000009}}.tar", f"{tmp_path}/x.tar"):
        with pytest.raises(ValueError, match=re.escape(f"shard pattern '{missing}' matches no file")):
            expand_shards(missing)
    assert expand_shards("https://host/s-{0..1}.tar") == ["https://host/s-0.tar", "https://host/s-1.tar"]


def test_training_on_globbed_shards_and_missing_shards(tiny_shards, tmp_path):
    base = ["data.synthetic=false", "data.batch_size=2"]
    brace = load_config(TINY, [*base, f"data.train_shards=[{tiny_shards.pattern}]"])
    globbed = load_config(TINY, [*base, f"data.train_shards=[{tiny_shards.dir}/tiny-*.tar]"])
    assert batches_per_epoch(globbed, 1) == batches_per_epoch(brace, 1) == 4  # 8 clips in batches of 2
    nothing = load_config(TINY, [*base, f"data.train_shards=[{tmp_path}/none-*.tar]"])
    msg = f"data.train_shards: shard pattern '{tmp_path}/none-*.tar' matches no file"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        batches_per_epoch(nothing, 1)
    empty = load_config(TINY, base)
    with pytest.raises(ConfigError, match="^data.train_shards is empty and data.synthetic is false"):
        batches_per_epoch(empty, 1)


def write_index(path, rows: list[str]):
    path.write_text("index,mid,display_name\n" + "".join(r + "\n" for r in rows))
    return path


def test_duplicate_label_index_rows_are_errors_naming_the_file(tmp_path):
    ok = write_index(tmp_path / "ok.csv", ["0,/m/a,A", "1,/m/b,B"])
    assert LabelIndex.from_csv(ok).mids == ["/m/a", "/m/b"]
    dup_mid = write_index(tmp_path / "dup_mid.csv", ["0,/m/a,A", "1,/m/b,B", "2,/m/a,A again"])
    with pytest.raises(MetadataError, match=r"dup_mid.csv:4: duplicate mid '/m/a' \(first on line 2\)"):
        LabelIndex.from_csv(dup_mid)
    dup_index = write_index(tmp_path / "dup_index.csv", ["0,/m/a,A", "1,/m/b,B", "1,/m/c,C"])
    with pytest.raises(MetadataError, match=r"dup_index.csv:4: duplicate index 1"):
        LabelIndex.from_csv(dup_index)
