import re
from pathlib import Path

import pytest

from cavmae.config import Config, ConfigError, FinetuneConfig, from_dict, load_config, recipe_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_cavmae_base():
    cfg = Config()
    assert cfg.model.embed_dim == 768 and cfg.model.modality_depth == 11 and cfg.model.shared_depth == 1
    assert cfg.model.contrast_weight == 0.01 and cfg.model.temperature == 0.05
    assert cfg.optim.betas == (0.95, 0.999) and cfg.optim.weight_decay == 5e-7
    assert cfg.model.audio_grid == (8, 64) and cfg.model.video_grid == (14, 14)


def test_overrides_are_typed():
    cfg = load_config(None, ["model.backbone=vit", "optim.lr=1e-4", "optim.betas=[0.9,0.98]", "model.qkv_bias=false"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.model.qkv_bias is False


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
        ("model.bakbone=vit", "unknown config key 'model.bakbone'; did you mean 'model.backbone'?"),
        ("train.batch_size=8", "unknown config key 'train.batch_size'; did you mean 'data.batch_size' or "
         "'eval.batch_size'?"),
        ("finetune.los=ce", "unknown config key 'finetune.los'; did you mean 'finetune.loss'?"),
        ("modle.x=1", "unknown config section 'modle' (sections: model, data, optim, train, eval, finetune); did you "
         "mean 'model'?"),
        ("train.mixed_precision=bf61", "train.mixed_precision: 'bf61' is not one of 'no', 'bf16', 'fp16'; did you "
         "mean 'bf16'?"),
        ("data.frame_mode=all", "data.frame_mode: 'all' is not one of 'random', 'middle'"),
    ],
)  # fmt: skip
def test_a_misspelt_key_or_value_names_the_nearest_valid_ones(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value) == message


def test_a_key_far_from_any_lists_its_section_compactly():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["optim.zzzz=1"])
    msg = str(e.value)
    assert msg.startswith("unknown config key 'optim.zzzz'; optim has: name, lr, betas, weight_decay, schedule")
    assert "optim.lr" not in msg and "train." not in msg  # the section's names once, no other section


@pytest.mark.parametrize(
    "override, where",
    [
        ("train.ft_mode=audio", "is now 'finetune.inputs'"),
        ("train.ft_loss=ce", "is now 'finetune.loss'"),
        ("optim.head_lr_mult=10", "is now 'finetune.head_lr_mult'"),
        ("eval.ten_frame=false", "is now 'finetune.ten_frame'"),
        ("train.task=finetune", "was removed: the command says it (cavmae pretrain / cavmae finetune)"),
        ("train.resume=auto", "was removed: resume with the --resume flag"),
        ("train.avg_weights_from=3", "was removed: set finetune.average_epochs=[FIRST,LAST]"),
        ("eval.retrieval_chunk=10", "was removed: it was never read"),
    ],
)
def test_a_moved_or_removed_key_says_where_it_went(override, where):
    with pytest.raises(ConfigError, match=re.escape(f"config key '{override.split('=')[0]}' {where}")):
        load_config(None, [override])


def test_unknown_section_and_wrong_type():
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="model.mask_mode"):
        load_config(None, ["model.mask_mode=diagonal"])
    with pytest.raises(ConfigError, match=r"^finetune.average_epochs: expected 2 values, got 3 \(or null\)$"):
        load_config(None, ["finetune.average_epochs=[1,2,3]"])


def test_the_finetune_section_says_the_task():
    assert Config().finetune is None and Config().task == "pretrain"
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        tuned = "finetune" in path.stem or path.stem.startswith("probe_")  # a probe trains a classifier head
        assert cfg.task == ("finetune" if tuned else "pretrain"), path.name
        assert (cfg.finetune is None) == (cfg.task == "pretrain")
    cfg = load_config(CONFIGS / "tiny.yaml", task="finetune")  # a pre-training recipe fine-tuned: the defaults
    assert cfg.finetune == FinetuneConfig() and cfg.task == "finetune"
    cfg = load_config(CONFIGS / "tiny.yaml", ["finetune.inputs=audio"])
    assert cfg.finetune == FinetuneConfig(inputs="audio")
    assert load_config(CONFIGS / "tiny_finetune.yaml", ["finetune=null"]).task == "pretrain"
    saved = load_config(CONFIGS / "finetune_as2m_audio.yaml").to_dict()
    assert saved["finetune"]["average_epochs"] == [1, 10] and from_dict(saved).finetune.average_epochs == (1, 10)


def test_pretraining_refuses_finetuning_settings_and_the_reverse():
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "tiny_finetune.yaml", task="pretrain")
    msg = str(e.value)
    assert msg.startswith("pre-training was given fine-tuning settings (") and "tiny_finetune.yaml" in msg
    assert "finetune.loss='ce', finetune.head_lr_mult=10.0, finetune.average_epochs=(3, 4)" in msg
    with pytest.raises(ConfigError, match="^train.contrast_group=12: pre-training settings, which fine-tuning"):
        load_config(CONFIGS / "pretrain_base.yaml", task="finetune")
    with pytest.raises(ConfigError, match="^train.global_contrast=False: pre-training settings"):
        load_config(CONFIGS / "tiny.yaml", ["train.global_contrast=false"], task="finetune")


def test_a_saved_config_of_the_earlier_layout_loads():
    """Model directories and checkpoints written before the finetune section (train.task, train.ft_*)."""
    old = Config().to_dict()
    del old["finetune"]
    old["train"].update(task="finetune", resume="auto", ft_mode="audio", ft_loss="ce", freeze_base=False)
    old["train"].update(avg_weights_from=3, avg_weights_to=0, epochs=10)
    old["optim"].update(head_lr_mult=50.0, layer_decay=1.0)
    old["eval"].update(ten_frame=False, retrieval_chunk=4096)
    cfg = from_dict(old)
    assert cfg.finetune == FinetuneConfig(
        inputs="audio", loss="ce", head_lr_mult=50.0, average_epochs=(3, 10), ten_frame=False
    )
    old["train"]["task"] = "pretrain"
    assert from_dict(old).finetune is None and from_dict(old).train.epochs == 10
    assert from_dict(cfg.to_dict()) == cfg


def test_recipe_path_finds_the_package_copy_first_then_the_checkout(tmp_path, monkeypatch):
    from cavmae.config import loading

    assert recipe_path("tiny") == CONFIGS / "tiny.yaml"
    package = tmp_path / "site" / "cavmae"
    (package / "config").mkdir(parents=True)
    monkeypatch.setattr(loading, "__file__", str(package / "config" / "loading.py"))
    with pytest.raises(ConfigError, match=r"^no shipped recipe 'tiny': tiny.yaml is in neither .*site/cavmae/configs"):
        recipe_path("tiny")
    (tmp_path / "site" / "configs").mkdir()
    (tmp_path / "site" / "configs" / "tiny.yaml").write_text("train:\n  epochs: 2\n")
    assert recipe_path("tiny") == tmp_path / "site" / "configs" / "tiny.yaml"  # a checkout: beside the package
    (package / "configs").mkdir()
    (package / "configs" / "tiny.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config(recipe_path("tiny")).train.epochs == 3  # a wheel: inside the package
    with pytest.raises(ConfigError, match=r"no shipped recipe 'tnyi'.*\(recipes there: tiny\)"):
        recipe_path("tnyi")


def test_yaml_base_chain_and_roundtrip(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  embed_dim: 64\n  num_heads: 4\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim:\n  lr: 0.001\n")
    cfg = load_config(tmp_path / "child.yaml", ["model.num_heads=8"])
    assert (cfg.model.embed_dim, cfg.model.num_heads, cfg.optim.lr) == (64, 8, 0.001)
    cfg.save(tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert from_dict(cfg.to_dict()) == cfg


def test_bad_yaml_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="num_heads"):
        load_config(None, ["model.embed_dim=100", "model.num_heads=12"])


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    load_config(recipe)


def test_list_overrides_keep_brace_patterns():
    cfg = load_config(None, ["data.train_shards=[/d/as-{000000..000999}.tar,/d/vgg-{a,b}.tar]"])
    assert cfg.data.train_shards == ["/d/as-{000000..000999}.tar", "/d/vgg-{a,b}.tar"]
    cfg = load_config(None, ["data.train_shards=/d/as-{0..9}.tar"])
    assert cfg.data.train_shards == ["/d/as-{0..9}.tar"]
    cfg = load_config(None, ["data.val_shards=['/a.tar', '/b.tar']"])
    assert cfg.data.val_shards == ["/a.tar", "/b.tar"]


def test_no_yes_on_off_are_strings_not_booleans(tmp_path):
    """YAML 1.2's booleans: train.mixed_precision=no is the choice "no" (YAML 1.1 read it as False and refused it),
    in an override and in a file; true / false stay booleans."""
    cfg = load_config(recipe_path("tiny"), ["train.mixed_precision=no", "train.compile=false", "data.noise=True"])
    assert cfg.train.mixed_precision == "no" and cfg.train.compile is False and cfg.data.noise is True
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {recipe_path('tiny')}\ntrain:\n  mixed_precision: no\n")
    assert load_config(recipe).train.mixed_precision == "no"
