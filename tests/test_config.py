from pathlib import Path

import pytest

from cavmae.config import Config, ConfigError, from_dict, load_config

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


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.bakbone=vit"])
    msg = str(e.value)
    assert "model.bakbone" in msg and "model.backbone" in msg and "model.embed_dim" in msg


def test_unknown_section_and_wrong_type():
    with pytest.raises(ConfigError, match="valid keys: model, data"):
        load_config(None, ["modle.x=1"])
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="model.mask_mode"):
        load_config(None, ["model.mask_mode=diagonal"])


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
