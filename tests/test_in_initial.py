"""The public adapted ImageNet initialisation (IN-initial.pth: CAV-MAE key names, no ``module.`` prefix, plus
MAE's CLS token as cls_token_a / cls_token_v / cls_token_av) loads as an init everywhere."""

from __future__ import annotations

import logging

import pytest
import torch
from test_checkpoint import spec_state_dict
from test_evaluate import small_model_cfg

import cavmae
from cavmae.cli import main
from cavmae.config import Config
from cavmae.models.cavmae import CAVMAE
from cavmae.train.setup import initialise

CLS = ("cls_token_a", "cls_token_av", "cls_token_v")


@pytest.fixture
def in_initial(tmp_path):
    cfg = small_model_cfg()
    state = {k[len("module.") :]: v for k, v in spec_state_dict(cfg, "pretrain").items()}  # no prefix
    for k in CLS:
        state[k] = torch.randn(1, 1, cfg.embed_dim)
    path = tmp_path / "IN-initial.pth"
    torch.save(state, path)
    return cfg, state, path


def _cls_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cls_token" in r.getMessage()]


@pytest.mark.parametrize("fmt", ["mae", "auto", "cavmae"])
def test_train_init_loads_in_initial(in_initial, fmt, caplog):
    cfg, state, path = in_initial
    model = CAVMAE(cfg)
    run_cfg = Config(model=cfg)
    run_cfg.train.init, run_cfg.train.init_format = str(path), fmt
    with caplog.at_level(logging.INFO):
        initialise(model, run_cfg)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k not in CLS)
    lines = _cls_lines(caplog)
    assert len(lines) == 1 and all(k in lines[0] for k in CLS), lines


def test_convert_and_retrieve_take_in_initial(in_initial, tmp_path, tiny_shards, caplog):
    cfg, state, path = in_initial
    with caplog.at_level(logging.INFO):
        assert main(["convert", str(path), str(tmp_path / "ours")]) == 0
    assert all(k in _cls_lines(caplog)[0] for k in CLS)
    model = cavmae.load_model(tmp_path / "ours")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k not in CLS)
    keys = ("embed_dim", "num_heads", "modality_depth", "decoder_embed_dim", "decoder_depth", "decoder_num_heads")
    overrides = [f"model.{k}={getattr(cfg, k)}" for k in (*keys, "audio_length", "image_size")]
    assert main(["convert", str(path), str(tmp_path / "ours_mae"), *overrides, "--from", "mae"]) == 0
    out = tmp_path / "emb.safetensors"
    args = ["retrieve", "--model", str(path), "--shards", tiny_shards.pattern, "--num-workers", "0", "--out", str(out)]
    assert main(args) == 0 and out.is_file()
