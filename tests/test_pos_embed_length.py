"""Initialising a model of one clip length from a checkpoint of another: the audio position embeddings adapt."""

from __future__ import annotations

import logging

import pytest
import torch

from cavmae.config import ModelConfig
from cavmae.models.cavmae import CAVMAE
from cavmae.models.classifier import CAVMAEClassifier
from cavmae.models.embed import sincos_2d
from cavmae.models.weights import init_from_cavmae, save_pretrained

TINY = dict(
    embed_dim=64,
    num_heads=4,
    modality_depth=1,
    shared_depth=1,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=4,
    image_size=32,
    num_classes=5,
)


def tiny(length: int) -> ModelConfig:
    return ModelConfig(audio_length=length, **TINY)


def adaptation_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "audio patch grid" in r.getMessage()]


def time_columns(pos: torch.Tensor, rows: int) -> torch.Tensor:
    """[1, rows * cols, D] -> [rows, cols, D] (token index = row * cols + col, cols = time)."""
    return pos[0].reshape(rows, -1, pos.shape[-1])


def test_sincos_rebuilt_for_a_shorter_pretraining_model(tmp_path, caplog):
    src = CAVMAE(tiny(1024))
    save_pretrained(src, tmp_path / "m")
    dst = CAVMAE(tiny(512))
    torch.nn.init.zeros_(dst.pos_embed_a)
    torch.nn.init.zeros_(dst.decoder_pos_embed_a)
    with caplog.at_level(logging.INFO, logger="cavmae.models.weights"):
        init_from_cavmae(dst, tmp_path / "m")
    rows = dst.cfg.audio_grid[0]
    assert dst.cfg.audio_grid == (8, 32) and src.cfg.audio_grid == (8, 64)
    # the rebuilt grid equals the first half of the old grid's time columns, encoder and decoder alike
    for key in ("pos_embed_a", "decoder_pos_embed_a"):
        old = time_columns(getattr(src, key).detach(), rows)
        new = time_columns(getattr(dst, key).detach(), rows)
        torch.testing.assert_close(new, old[:, :32])
    torch.testing.assert_close(dst.pos_embed_a[0], sincos_2d(64, 8, 32))
    # the weights that fit were copied too
    torch.testing.assert_close(dst.blocks_a[0].attn.qkv.weight, src.blocks_a[0].attn.qkv.weight)
    lines = adaptation_lines(caplog)
    assert len(lines) == 1, lines
    assert "1024 -> 512 frames" in lines[0] and "8x64 -> 8x32" in lines[0]
    assert "pos_embed_a rebuilt" in lines[0] and "decoder_pos_embed_a rebuilt" in lines[0]


def trained_classifier(tmp_path, length: int) -> CAVMAEClassifier:
    src = CAVMAEClassifier(tiny(length))
    with torch.no_grad():
        src.pos_embed_a.add_(torch.randn_like(src.pos_embed_a))  # as fine-tuning leaves it: no longer sin-cos
    save_pretrained(src, tmp_path / "ft")
    return src


def test_trained_positions_cut_from_the_middle(tmp_path, caplog):
    src = trained_classifier(tmp_path, 1024)
    dst = CAVMAEClassifier(tiny(512))
    with caplog.at_level(logging.INFO, logger="cavmae.models.weights"):
        init_from_cavmae(dst, tmp_path / "ft")
    old = time_columns(src.pos_embed_a.detach(), 8)  # [8, 64, D]
    torch.testing.assert_close(time_columns(dst.pos_embed_a.detach(), 8), old[:, 16:48])
    lines = adaptation_lines(caplog)
    assert len(lines) == 1 and "pos_embed_a cut to the middle 32 time columns (trained)" in lines[0], lines
    assert dst.pos_embed_a.requires_grad


def test_trained_positions_interpolated_for_a_longer_model(tmp_path, caplog):
    src = trained_classifier(tmp_path, 512)
    dst = CAVMAEClassifier(tiny(1024))
    with caplog.at_level(logging.INFO, logger="cavmae.models.weights"):
        init_from_cavmae(dst, tmp_path / "ft")
    old = time_columns(src.pos_embed_a.detach(), 8)  # [8, 32, D]
    new = time_columns(dst.pos_embed_a.detach(), 8)  # [8, 64, D]
    # bilinear (align_corners=False) doubling: the outermost columns are kept, every new column lies between
    # its two neighbours of the old grid, and the mean over time is kept
    torch.testing.assert_close(new[:, 0], old[:, 0])
    torch.testing.assert_close(new[:, -1], old[:, -1])
    torch.testing.assert_close(new[:, 1], 0.75 * old[:, 0] + 0.25 * old[:, 1])
    torch.testing.assert_close(new.mean(1), old.mean(1), atol=1e-2, rtol=0)
    lines = adaptation_lines(caplog)
    assert len(lines) == 1 and "pos_embed_a interpolated along time (trained)" in lines[0], lines


def test_same_length_logs_nothing(tmp_path, caplog):
    save_pretrained(CAVMAE(tiny(512)), tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="cavmae.models.weights"):
        init_from_cavmae(CAVMAEClassifier(tiny(512)), tmp_path / "m")
    assert adaptation_lines(caplog) == []


@pytest.mark.parametrize("length", [96, 416])
def test_any_multiple_of_the_patch_size_runs(length):
    model = CAVMAEClassifier(tiny(length)).eval()
    assert model(torch.randn(2, length, 128), None, "audio").shape == (2, 5)
