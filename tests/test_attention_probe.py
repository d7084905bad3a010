"""The attention probe head (finetune.head=attention; CAV-MAE Sync's self_attention_cls): shapes, a frozen encoder,
and a few optimiser steps of the finetune task on hand-made per-frame clips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cavmae.config import ConfigError, load_config
from cavmae.eval.evaluate import predict
from cavmae.models.classifier import CAVMAEClassifier
from cavmae.train.finetune import FinetuneTask

FT = Path(__file__).resolve().parents[1] / "configs" / "tiny_finetune.yaml"
SMALL = ["model.embed_dim=32", "model.num_heads=2", "model.modality_depth=1", "model.audio_length=64",
         "model.image_size=32", "model.num_classes=3", "data.synthetic_classes=3"]  # fmt: skip


def _cfg(*extra: str):
    return load_config(
        FT, [*SMALL, "data.audio_window=64", "finetune.head=attention", "finetune.freeze_base=true", *extra]
    )


def _clips(cfg, batch: int, frames: int, seed: int = 0) -> dict:
    """Per-frame clips: audio [B, N, L, F] and frames [B, N, 3, H, W]; class c brightens the frames by c."""
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    labels = torch.arange(batch) % m.num_classes
    audio = torch.randn(batch, frames, m.audio_length, m.num_mel_bins, generator=g)
    video = torch.randn(batch, frames, 3, m.image_size, m.image_size, generator=g) + labels.view(-1, 1, 1, 1, 1)
    onehot = torch.nn.functional.one_hot(labels, m.num_classes).float()
    return {"audio": audio, "frames": video, "labels": onehot, "keys": [f"clip-{i}" for i in range(batch)]}


def test_forward_backward_shapes_and_frozen_encoder_gets_no_gradient():
    cfg = _cfg()
    task = FinetuneTask()
    model = task.build_model(cfg)
    batch = _clips(cfg, batch=3, frames=4)
    feats = model.frame_features(batch["audio"], batch["frames"])
    assert feats.shape == (3, 4, 2 * cfg.model.embed_dim)
    logits = model(batch["audio"], batch["frames"])
    assert logits.shape == (3, cfg.model.num_classes)
    task.step(model, batch, cfg)["loss"].backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "probe_cls" in trained and "mlp_head.1.weight" in trained
    assert any(n.startswith("probe_blocks.0.") for n in trained)
    assert not any(n.startswith(("blocks_a.", "blocks_v.", "patch_embed")) for n in trained)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("blocks_a."))


def test_full_finetuning_trains_the_encoder_and_leaves_shared_blocks_unused():
    cfg = _cfg("finetune.freeze_base=false")
    task = FinetuneTask()
    model = task.build_model(cfg)
    task.step(model, _clips(cfg, 2, 3), cfg)["loss"].backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "blocks_a.0.attn.qkv.weight" in got and "patch_embed_v.proj.weight" in got
    unused = set(task.unused_parameters(model, cfg))
    assert "blocks_u.0.attn.qkv.weight" in unused and "norm_a.weight" in unused
    assert not unused & got  # what the loss reaches is never frozen as unused
    assert task.lr_scale("probe_blocks.0.attn.qkv.weight", cfg) == cfg.finetune.head_lr_mult


def test_the_head_is_invariant_to_frame_order():
    # no position embedding: the N frames are a set, so permuting them leaves the logits unchanged
    cfg = _cfg()
    model = CAVMAEClassifier(cfg.model, head="attention").eval()
    b = _clips(cfg, 2, 5)
    perm = torch.tensor([4, 2, 0, 1, 3])
    with torch.no_grad():
        assert torch.allclose(
            model(b["audio"], b["frames"]), model(b["audio"][:, perm], b["frames"][:, perm]), atol=1e-5
        )


def test_probe_learns_per_frame_clips_and_predicts_one_row_per_clip():
    torch.manual_seed(0)
    cfg = _cfg("optim.lr=3e-3")
    task = FinetuneTask()
    model = task.build_model(cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    batch = _clips(cfg, 6, 4)
    first = None
    for _ in range(30):
        out = task.step(model, batch, cfg)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = out["loss"].item() if first is None else first
    assert out["loss"].item() < 0.5 * first
    pred = predict(model, [batch], "audiovisual", head="attention")
    assert pred.logits.shape == (6, 1, cfg.model.num_classes)
    assert (pred.logits[:, 0].argmax(1) == batch["labels"].argmax(1)).all()


def test_attention_head_refuses_one_frame_batches_and_other_inputs():
    cfg = _cfg()
    model = CAVMAEClassifier(cfg.model, head="attention")
    b = _clips(cfg, 2, 3)
    with pytest.raises(ValueError, match=r"audio \[B, N, L, F\]"):
        model(b["audio"][:, 0], b["frames"][:, 0])
    with pytest.raises(ConfigError, match="finetune.inputs='audiovisual'"):
        _cfg("finetune.inputs=audio")


def test_a_saved_attention_classifier_loads_with_its_head(tmp_path):
    import cavmae

    cfg = _cfg()
    model = CAVMAEClassifier(cfg.model, head="attention").eval()
    cavmae.save_pretrained(model, tmp_path / "m")
    back = cavmae.load_model(tmp_path / "m")
    assert back.head == "attention"
    b = _clips(cfg, 2, 3)
    with torch.no_grad():
        assert torch.allclose(back(b["audio"], b["frames"]), model(b["audio"], b["frames"]))
