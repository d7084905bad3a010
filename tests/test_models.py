"""The CAV-MAE models against design section 1: sizes, masking, gradients, streams, block contract."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import pytest
import torch

import cavmae
from cavmae.config import ModelConfig, load_config
from cavmae.models.blocks import ModalityBlock, create_block, list_blocks
from cavmae.models.embed import patchify, sincos_2d, unpatchify
from cavmae.models.masking import random_masking

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def tiny_cfg(**overrides) -> ModelConfig:
    cfg = load_config(TINY).model
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def batch(cfg: ModelConfig, b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, cfg.audio_length, cfg.num_mel_bins, generator=g)
    frames = torch.randn(b, 3, cfg.image_size, cfg.image_size, generator=g)
    return audio, frames


def test_base_parameter_counts():
    pre = cavmae.create_model(ModelConfig())
    assert sum(p.numel() for p in pre.parameters()) == 191_036_160
    assert len(pre.state_dict()) == 647
    clf = cavmae.create_model(ModelConfig(num_classes=527), kind="classifier")
    assert sum(p.numel() for p in clf.parameters()) == 164_907_023


def test_unstructured_masking_keeps_quarter_in_order():
    torch.manual_seed(0)
    for length, kept in ((512, 128), (196, 49)):
        x = torch.randn(4, length, 8)
        m = random_masking(x, 0.75)
        assert m.tokens.shape == (4, kept, 8)
        assert torch.all(m.ids_keep[:, 1:] > m.ids_keep[:, :-1]), "kept indices must be ascending"
        assert torch.equal(m.tokens, torch.gather(x, 1, m.ids_keep[..., None].expand(-1, -1, 8)))
        assert torch.all(m.mask.sum(1) == length - kept)
        assert torch.all(m.mask.gather(1, m.ids_keep) == 0)
        # ids_restore inverts the order [kept, masked]: un-shuffling puts every token back in place
        ids_masked = torch.stack([torch.nonzero(row).flatten() for row in m.mask])
        order = torch.cat([m.ids_keep, ids_masked], dim=1)
        shuffled = torch.gather(x, 1, order[..., None].expand(-1, -1, 8))
        restored = torch.gather(shuffled, 1, m.ids_restore[..., None].expand(-1, -1, 8))
        assert torch.equal(restored, x)
    # different samples get different masks
    assert not torch.equal(m.ids_keep[0], m.ids_keep[1])


@pytest.mark.parametrize("mode", ["time", "freq", "tf"])
def test_structured_audio_masking(mode):
    torch.manual_seed(1)
    f, t = 8, 64
    x = torch.randn(2, f * t, 4)
    m = random_masking(x, 0.75, mode, (f, t))
    assert m.tokens.shape[1] == 128
    grid = m.mask.view(2, f, t)
    if mode == "time":  # whole columns masked: 48 of 64 time steps
        assert torch.all((grid.sum(1) == 0) | (grid.sum(1) == f))
        assert torch.all((grid.sum(1) == f).sum(1) == 48)
    if mode == "freq":
        assert torch.all((grid.sum(2) == 0) | (grid.sum(2) == t))
    if mode == "tf":  # 33 columns and 4 rows pushed to the masked side; only (64-33)*(8-4) = 124 tokens lie
        # outside them, so 4 of the 128 kept tokens come from inside, and at most 4 columns lose full masking
        assert torch.all((grid.sum(1) == f).sum(1) >= 33 - 4)
        assert torch.all((grid.sum(2) >= t - 33).sum(1) >= 4)
    with pytest.raises(ValueError, match="grid"):
        random_masking(x, 0.75, mode, None)


def test_sincos_layout_first_half_is_width():
    pe = sincos_2d(8, rows=2, cols=3)  # token r*3 + c
    assert pe.shape == (6, 8)
    # tokens in the same column share the first half, tokens in the same row share the second half
    assert torch.equal(pe[0, :4], pe[3, :4]) and not torch.equal(pe[0, :4], pe[1, :4])
    assert torch.equal(pe[0, 4:], pe[2, 4:]) and not torch.equal(pe[0, 4:], pe[3, 4:])
    assert torch.allclose(pe[0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))


def test_patchify_roundtrip_and_audio_patch_order():
    img = torch.randn(2, 3, 32, 48)
    assert torch.equal(unpatchify(patchify(img, 16), 16, 3, (2, 3)), img)
    # audio [B, T, F] -> tokens f * (T/p) + t : a bump at time patch 5, freq patch 1 lands in token 1*64+5
    cfg = ModelConfig()
    audio = torch.zeros(1, 1024, 128)
    audio[0, 5 * 16 : 6 * 16, 16:32] = 1.0
    target = patchify(audio.unsqueeze(1).transpose(2, 3), 16)
    assert target[0].abs().sum(-1).nonzero().flatten().tolist() == [1 * cfg.audio_grid[1] + 5]


@pytest.mark.parametrize("backbone", list_blocks())
def test_every_block_follows_the_contract(backbone):
    cfg = tiny_cfg(backbone=backbone)
    blk = create_block(backbone, 32, 4, cfg)
    assert isinstance(blk, ModalityBlock)
    assert list(inspect.signature(blk.forward).parameters) == ["x", "modality"]  # and nothing else
    names = {n for n, _ in blk.named_parameters()}
    for n in ("norm1", "norm1_a", "norm1_v", "norm2", "norm2_a", "norm2_v"):
        assert f"{n}.weight" in names
    x = torch.randn(2, 11, 32)
    outs = {m: blk(x, m) for m in (None, "a", "v")}
    assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs.values())
    with torch.no_grad():  # the modality argument really selects a different norm pair
        blk.norm1_a.weight.mul_(2.0)
    assert not torch.allclose(blk(x, "a"), outs["a"])
    assert torch.allclose(blk(x, None), outs[None])
    with pytest.raises(ValueError, match="modality"):
        blk(x, "x")


def test_unknown_backbone_lists_registered():
    with pytest.raises(ValueError, match="registered backbones: .*vit"):
        create_block("transformerxl", 32, 4, tiny_cfg())


@pytest.mark.parametrize("backbone", list_blocks())
def test_pretrain_backward_reaches_every_parameter(backbone):
    cfg = tiny_cfg(backbone=backbone)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    out = model(*batch(cfg))
    for k in ("loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c"):
        assert torch.isfinite(out[k]), k
    assert torch.allclose(out["loss"], cfg.rec_weight * out["loss_rec"] + cfg.contrast_weight * out["loss_c"])
    out["loss"].backward()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"pos_embed_a", "pos_embed_v", "decoder_pos_embed_a", "decoder_pos_embed_v"}
    # The modality-specific and decoder blocks only ever use their joint norms (as in the public model); the
    # shared blocks use all three pairs. Everything else that is trainable must receive a gradient.
    unused = {
        n
        for n, _ in model.named_parameters()
        if n.split(".")[0] in ("blocks_a", "blocks_v", "decoder_blocks") and (".norm1_" in n or ".norm2_" in n)
    }
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and n not in unused and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing


@pytest.mark.parametrize("backbone", list_blocks())
def test_classifier_modes_and_trainable_positions(backbone):
    cfg = tiny_cfg(backbone=backbone, num_classes=7)
    model = cavmae.create_model(cfg, kind="classifier").train()
    audio, frames = batch(cfg)
    assert model.pos_embed_a.requires_grad and model.pos_embed_v.requires_grad
    logits = {
        m: model(audio, frames, mode=m) for m in ("audiovisual", "audio", "video", "missing_video", "missing_audio")
    }
    assert all(v.shape == (3, 7) for v in logits.values())
    assert torch.allclose(model(audio, None, mode="audioonly"), logits["audio"])  # public names are aliases
    assert torch.allclose(model(None, frames, mode="missingvideoonly"), logits["missing_audio"])
    logits["audiovisual"].sum().backward()
    assert model.pos_embed_a.grad is not None and model.mlp_head[1].weight.grad is not None
    with pytest.raises(ValueError, match="needs frames"):
        model(audio, None, mode="video")


def test_embed_shapes_and_unmasked():
    cfg = tiny_cfg()
    model = cavmae.create_model(cfg).eval()
    audio, frames = batch(cfg)
    a, v = model.embed(audio, frames)
    assert a.shape == (3, cfg.embed_dim) and v.shape == (3, cfg.embed_dim)
    a2, _ = model.embed(audio, frames)
    assert torch.equal(a, a2), "embed must be deterministic (no masking)"
    assert torch.allclose(model.embed_audio(audio[:1]), a[:1], atol=1e-5)  # per-sample, batch-independent


def test_contrastive_loss_matches_paper_direction():
    from cavmae.models.losses import info_nce

    torch.manual_seed(0)
    a, v = torch.randn(5, 8), torch.randn(5, 8)
    loss, acc = info_nce(a, v, 0.05)
    an, vn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(v, dim=-1)
    total = an @ vn.t() / 0.05  # [audio, video] as in the public code: log_softmax over audios (dim 0)
    expected = -torch.diag(torch.log_softmax(total, dim=0)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    sym, _ = info_nce(a, v, 0.05, symmetric=True)
    assert torch.allclose(sym, 0.5 * (expected - torch.diag(torch.log_softmax(total, dim=1)).mean()), atol=1e-6)
    perfect, acc1 = info_nce(a, a, 0.05)
    assert acc1 == 1.0 and perfect < loss


def test_norm_pix_reconstruction_loss_only_on_masked():
    from cavmae.models.losses import reconstruction_loss

    target = torch.randn(2, 4, 16)
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]])
    pred = norm.clone()
    pred[0, 1] += 100.0  # error on a kept patch: ignored
    assert reconstruction_loss(pred, target, mask).item() < 1e-10
    pred[1, 2] += 1.0  # error of 1 on every value of one masked patch of two
    assert abs(reconstruction_loss(pred, target, mask).item() - 0.5) < 1e-5


def test_sdpa_equals_explicit_attention():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = cavmae.create_model(cfg).eval()
    audio, frames = batch(cfg)
    math_cfg = tiny_cfg(attention="math")
    other = cavmae.create_model(math_cfg).eval()
    other.load_state_dict(model.state_dict())
    for x, y in zip(model.embed(audio, frames), other.embed(audio, frames)):
        assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("backbone", list_blocks())
@pytest.mark.parametrize("audio_length", [256, 1536])
def test_other_audio_lengths(audio_length, backbone):
    cfg = tiny_cfg(audio_length=audio_length, backbone=backbone)
    model = cavmae.create_model(cfg)
    assert model.pos_embed_a.shape[1] == (cfg.num_mel_bins // 16) * (audio_length // 16)
    out = model(*batch(cfg, b=2))
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="audio must be"):
        model(torch.randn(2, 1024, 128), batch(cfg, b=2)[1])


# ---------------------------------------------------------------------------------------------------------------
# the passes a forward runs: each stream only where a loss (or a requested output) needs it


def _record_passes(model) -> Counter:
    """Counts (stack, modality, tokens) of every run of the audio / video / shared stack (a pre-hook on the first
    block of each: run_blocks calls blk(x, modality))."""
    passes: Counter = Counter()
    for stack in ("blocks_a", "blocks_v", "blocks_u"):

        def hook(module, args, stack=stack):
            passes[stack, args[1] if len(args) > 1 else None, args[0].shape[1]] += 1

        getattr(model, stack)[0].register_forward_pre_hook(hook)
    return passes


def _kept_and_whole(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """Kept and total audio / video tokens of the tiny recipe (256 -> 64, 49 -> 12)."""
    n_a = cfg.audio_grid[0] * cfg.audio_grid[1]
    n_v = cfg.video_grid[0] * cfg.video_grid[1]
    return int(n_a * (1 - cfg.mask_ratio_a)), n_a, int(n_v * (1 - cfg.mask_ratio_v)), n_v


@pytest.mark.parametrize("contrast_mask_ratio", [0.75, 0.0])
def test_a_training_forward_runs_only_the_streams_its_losses_use(contrast_mask_ratio):
    cfg = tiny_cfg(contrast_mask_ratio=contrast_mask_ratio)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    passes = _record_passes(model)
    model(*batch(cfg))
    ka, na, kv, nv = _kept_and_whole(cfg)
    want = Counter({("blocks_a", None, ka): 1, ("blocks_v", None, kv): 1, ("blocks_u", None, ka + kv): 1})  # rec
    if contrast_mask_ratio == 0.75:  # the modality streams of the kept tokens
        want.update({("blocks_u", "a", ka): 1, ("blocks_u", "v", kv): 1})
    else:  # the modality streams of every token; none of the kept ones
        want.update({("blocks_a", None, na): 1, ("blocks_v", None, nv): 1})
        want.update({("blocks_u", "a", na): 1, ("blocks_u", "v", nv): 1})
    assert passes == want


@pytest.mark.parametrize("contrast_mask_ratio", [0.75, 0.0])
def test_returned_embeddings_are_the_retrieval_embeddings(contrast_mask_ratio):
    cfg = tiny_cfg(contrast_mask_ratio=contrast_mask_ratio)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).eval()
    audio, frames = batch(cfg)
    out = model(audio, frames, return_embeddings=True)
    emb_a, emb_v = model.embed(audio, frames)
    assert torch.equal(out["emb_a"], emb_a) and torch.equal(out["emb_v"], emb_v)
    assert "emb_a" not in model(audio, frames)


@pytest.mark.parametrize("contrast_mask_ratio", [0.75, 0.0])
def test_validation_runs_one_forward_per_batch(contrast_mask_ratio):
    """PretrainTask.evaluate takes its retrieval embeddings from the forward that gives the losses: the unmasked
    streams run once per batch (not again in embed), and with contrast_mask_ratio=0 the masked modality streams
    do not run at all."""
    from types import SimpleNamespace

    from cavmae.train.tasks import PretrainTask

    cfg = load_config(TINY, [f"model.contrast_mask_ratio={contrast_mask_ratio}"])
    torch.manual_seed(0)
    model = cavmae.create_model(cfg.model).eval()
    passes = _record_passes(model)
    audio, frames = batch(cfg.model, b=4)
    accelerator = SimpleNamespace(device=torch.device("cpu"), reduce=lambda t, reduction: t)  # one process
    metrics = PretrainTask().evaluate(model, [{"audio": audio, "frames": frames}], accelerator, cfg)
    ka, na, kv, nv = _kept_and_whole(cfg.model)
    want = Counter({("blocks_a", None, ka): 1, ("blocks_v", None, kv): 1, ("blocks_u", None, ka + kv): 1})
    want.update({("blocks_a", None, na): 1, ("blocks_v", None, nv): 1})  # the unmasked streams, once
    want.update({("blocks_u", "a", na): 1, ("blocks_u", "v", nv): 1})
    if contrast_mask_ratio == 0.75:
        want.update({("blocks_u", "a", ka): 1, ("blocks_u", "v", kv): 1})
    assert passes == want
    # and the retrieval top-1 is that of the unmasked embeddings
    emb_a, emb_v = (torch.nn.functional.normalize(e, dim=-1) for e in model.embed(audio, frames))
    best = (emb_v @ emb_a.t()).argmax(dim=1)
    assert metrics["r1_v2a"] == (best == torch.arange(4)).float().mean().item()
