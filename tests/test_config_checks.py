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


@pytest.mark.parametrize(
    "overrides, named, why",
    [
        (["data.balance_mode=weights"], "data.balance_mode='weights'", "data.class_balanced is false"),
        (["data.mixup_alpha=2"], "data.mixup_alpha=2.0", "data.mixup is 0"),
        (["data.label_smoothing=0.1"], "data.label_smoothing=0.1", "pre-training reads no labels"),
        (["train.wandb_mode=disabled", "train.wandb_name=x"], "train.wandb_name='x'", "wandb_mode is 'disabled'"),
        (["train.wandb_mode=disabled", "train.wandb_project=p"], "train.wandb_project='p'", "'disabled'"),
        (["eval.knn_k=5"], "eval.knn_k=5", "train.probe_every is 0"),
        (["eval.probe_clips=64"], "eval.probe_clips=64", "train.probe_every is 0"),
        (["data.probe_shards=[/d/p.tar]"], "data.probe_shards=['/d/p.tar']", "train.probe_every is 0"),
        (["train.contrast_group=4", "train.global_contrast=false"], "train.global_contrast=False", "contrast_group"),
        (["optim.schedule=cosine", "optim.lr_decay_every=2"], "optim.lr_decay_every=2", "not 'step'"),
        (["optim.schedule=constant", "optim.min_lr=1e-6"], "optim.min_lr=1e-06", "'constant'"),
        (["finetune.freeze_base=true", "finetune.layer_decay=0.5"], "finetune.layer_decay=0.5", "head alone"),
    ],
)
def test_a_setting_that_would_do_nothing_names_itself_and_why(overrides, named, why):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert msg.startswith(f"{named} would do nothing: ") and why in msg, msg


def test_the_same_settings_where_they_act_are_accepted():
    load_config(None, ["data.class_balanced=true", "data.balance_mode=resample"])
    load_config(None, ["data.class_balanced=true", "data.balance_mode=weights"], task="finetune")
    load_config(None, ["data.mixup=0.5", "data.mixup_alpha=2", "data.label_smoothing=0.1"], task="finetune")
    load_config(None, ["train.wandb_mode=offline", "train.wandb_name=x", "train.wandb_project=p"])
    load_config(TINY, ["train.probe_every=1", "eval.knn_k=5", "eval.probe_clips=64"])
    load_config(None, ["train.contrast_group=4", "train.global_contrast=true"])
    load_config(None, ["optim.schedule=step", "optim.lr_decay_every=2", "optim.min_lr=1e-6"])
    load_config(None, ["finetune.freeze_base=false", "finetune.layer_decay=0.5"])


@pytest.mark.parametrize("averaged", ["[0,3]", "[3,2]", "[3,26]"])
def test_averaged_epochs_must_be_epochs_of_the_run(averaged):
    with pytest.raises(ConfigError, match=r"^finetune.average_epochs=\[.*must be \[FIRST, LAST\] with 1 <= FIRST"):
        load_config(None, [f"finetune.average_epochs={averaged}"])
    assert load_config(None, ["finetune.average_epochs=[3,25]"]).finetune.average_epochs == (3, 25)


def test_the_training_frame_is_random_or_middle_everywhere(tiny_shards):
    """The type, the config loader and the shard loader agree: one training frame, random or middle; the ten
    frames are an evaluation's, asked of the loader directly."""
    import typing

    from cavmae.config import DataConfig
    from cavmae.data.loader import build_loader

    assert typing.get_args(typing.get_type_hints(DataConfig)["frame_mode"]) == ("random", "middle")
    with pytest.raises(ValueError, match="^data.frame_mode must be 'random' or 'middle'"):
        build_loader(DataConfig(frame_mode="all"), tiny_shards.pattern, num_classes=4, train=True)
    ten = build_loader(
        DataConfig(batch_size=2, num_workers=0), tiny_shards.pattern, num_classes=4, train=False, frame_mode="all"
    )
    assert next(iter(ten))["frames"].shape[1] == 10
