"""Backbone variant options (audio token order, how the scan directions combine) and the ablation script's table.

The options are off by default; the golden numbers below were produced by the code before they existed (same
seeds, same tiny model), so a change to the default path shows up here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import cavmae
from cavmae.config import ConfigError, MambaConfig, ModelConfig, apply_overrides, load_config
from cavmae.models.mamba import BiMambaMixer

ROOT = Path(__file__).resolve().parents[1]

# (loss_rec_a, loss_rec_v, loss_c, |emb_a|_1, |emb_v|_1, |classifier logits|_1) of _small() before the options
GOLDEN = {
    "vit": [1.119266, 1.0321, 1.83566, 48.2107, 50.45183, 16.22652],
    "mamba": [1.113824, 1.038875, 2.893586, 39.83822, 46.07781, 14.15355],
}


def _small(backbone: str, **overrides) -> ModelConfig:
    cfg = ModelConfig(
        backbone=backbone,
        embed_dim=32,
        num_heads=4,
        modality_depth=1,
        shared_depth=1,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
        audio_length=64,  # audio grid (2, 4): 2 bands x 4 time steps
        num_mel_bins=32,
        image_size=32,
        num_classes=5,
    )
    for k, v in overrides.items():
        if k.startswith("mamba."):
            setattr(cfg.mamba, k.split(".", 1)[1], v)
        else:
            setattr(cfg, k, v)
    return cfg


def _numbers(cfg: ModelConfig) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded losses, retrieval embeddings and classifier logits of a fresh model."""
    torch.manual_seed(0)
    model = cavmae.create_model(cfg)
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(3, 64, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    torch.manual_seed(2)
    out = model(audio, frames, return_outputs=True)
    emb_a, emb_v = model.embed(audio, frames)
    torch.manual_seed(0)
    logits = cavmae.create_model(cfg, kind="classifier")(audio, frames)
    return out, emb_a, emb_v, logits


@pytest.mark.parametrize("backbone", ["vit", "mamba"])
def test_defaults_give_the_numbers_of_before(backbone):
    out, emb_a, emb_v, logits = _numbers(_small(backbone))
    got = [out[k].item() for k in ("loss_rec_a", "loss_rec_v", "loss_c")]
    got += [emb_a.abs().sum().item(), emb_v.abs().sum().item(), logits.abs().sum().item()]
    assert got == pytest.approx(GOLDEN[backbone], rel=1e-4)


def test_time_major_order_is_invisible_to_attention():
    """ViT blocks do not care about token order, so a correct permutation (and its undoing before the decoder)
    leaves every output unchanged; a wrong undo would move predictions to other patches' targets."""
    ref_out, ref_a, ref_v, ref_logits = _numbers(_small("vit"))
    out, emb_a, emb_v, logits = _numbers(_small("vit", audio_token_order="time_major"))
    for key in ("loss_rec_a", "loss_c", "pred_a"):
        assert torch.allclose(out[key], ref_out[key], atol=1e-5), key
    assert torch.allclose(emb_a, ref_a, atol=1e-5) and torch.allclose(emb_v, ref_v)
    assert torch.allclose(logits, ref_logits, atol=1e-5)


def test_time_major_order_changes_what_a_scan_sees():
    cfg = _small("mamba", audio_token_order="time_major")
    torch.manual_seed(0)
    model = cavmae.create_model(cfg)
    freqs, times = cfg.audio_grid
    # unmasked: the blocks see token t*F + f at position t*F + f (band index fastest)
    ids = torch.arange(freqs * times).expand(2, -1)
    order = model.audio_scan_order(ids)
    assert order[0].tolist() == [f * times + t for t in range(times) for f in range(freqs)]
    audio = torch.randn(2, 64, 32)
    expected = model.run_blocks(model.blocks_a, model.tokens_a(audio)[:, order[0]])
    assert torch.allclose(model.encode_audio(audio), expected, atol=1e-6)
    # masked: the kept tokens go through in time-major order
    kept = torch.tensor([[1, 2, 4, 7], [0, 3, 5, 6]])
    sorted_ids = kept.gather(1, model.audio_scan_order(kept))
    rank = (sorted_ids % times) * freqs + sorted_ids // times
    assert torch.all(rank[:, 1:] > rank[:, :-1])
    # and the scan's outputs differ from the patch order's (same weights)
    plain = cavmae.create_model(_small("mamba"))
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain.embed_audio(audio), model.embed_audio(audio), atol=1e-4)
    assert model.state_dict().keys() == plain.state_dict().keys()


def _mixer(combine: str) -> BiMambaMixer:
    torch.manual_seed(0)
    mixer = BiMambaMixer(16, MambaConfig(d_state=4, expand=2, bidirectional_combine=combine))
    mixer.reset_backbone_parameters()
    return mixer


def test_concat_combine_shapes_gradients_and_relation_to_add():
    concat, add = _mixer("concat"), _mixer("add")
    assert concat.out_proj.in_features == 64 and add.out_proj.in_features == 32
    x = torch.randn(2, 11, 16, requires_grad=True)
    y = concat(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    for name, p in concat.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    # with the out projection [W, W] and the same other weights, concatenation + projection == sum of directions
    state = {k: v for k, v in add.state_dict().items() if k != "out_proj.weight"}
    concat.load_state_dict(state, strict=False)
    with torch.no_grad():
        concat.out_proj.weight.copy_(torch.cat([add.out_proj.weight, add.out_proj.weight], dim=1))
    x = torch.randn(2, 11, 16)
    assert torch.allclose(concat(x), add(x), atol=1e-5)
    # and unlike add, the two halves can weigh the directions differently
    with torch.no_grad():
        concat.out_proj.weight[:, 32:].zero_()
    assert not torch.allclose(concat(x), add(x), atol=1e-3)


def test_concat_variant_trains_in_the_full_model():
    cfg = _small("mamba", **{"mamba.bidirectional_combine": "concat", "audio_token_order": "time_major"})
    torch.manual_seed(0)
    model = cavmae.create_model(cfg)
    out = model(torch.randn(2, 64, 32), torch.randn(2, 3, 32, 32))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.blocks_a[0].mixer.out_proj.weight.grad.abs().sum() > 0


def test_variant_options_are_checked_config_fields():
    cfg = load_config(ROOT / "configs" / "tiny_mamba.yaml")
    apply_overrides(cfg, ["model.audio_token_order=time_major", "model.mamba.bidirectional_combine=concat"])
    assert cfg.model.audio_token_order == "time_major" and cfg.model.mamba.bidirectional_combine == "concat"
    with pytest.raises(ConfigError, match="audio_token_order"):
        apply_overrides(cfg, ["model.audio_token_order=diagonal"])
    with pytest.raises(ConfigError, match="bidirectional_combine"):
        apply_overrides(cfg, ["model.mamba.bidirectional_combine=max"])


# ---------------------------------------------------------------------------------------------------------------
# scripts/ablate_backbones.py


@pytest.fixture(scope="module")
def ablate():
    spec = importlib.util.spec_from_file_location("ablate_backbones", ROOT / "scripts" / "ablate_backbones.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablate_backbones"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules["ablate_backbones"]


def test_every_ablation_row_is_buildable_and_equal_parameter(ablate):
    from cavmae.demo.settings import FULL

    matched = [n for n, v in ablate.VARIANTS.items() if v.matched]
    counts = ablate.check_sizes(FULL, matched)
    assert set(ablate.DEFAULT_VARIANTS) <= set(matched)
    assert list(ablate.DEFAULT_VARIANTS[:2]) == ["vit", "mamba"]
    for name in matched:
        assert abs(counts[name] / counts["vit"] - 1) <= 0.05, name


def test_the_recipe_row_is_the_demos_mamba_config(ablate, tmp_path):
    """The table's mamba_unmasked_c row runs exactly what `cavmae demo --backbone mamba` runs (both tasks)."""
    from dataclasses import asdict

    from cavmae.demo.heldout import DemoData
    from cavmae.demo.pipeline import demo_config
    from cavmae.demo.settings import FULL

    data = DemoData(tmp_path, "train.tar", "heldout.tar", 10, 2, ["a", "b"])
    for task in ("pretrain", "finetune"):
        row = ablate.configure(FULL, data, tmp_path, seed=1, variant=ablate.VARIANTS["mamba_unmasked_c"], task=task)
        demo = demo_config(FULL, data, tmp_path, seed=1, backbone="mamba", task=task)
        demo.train.progress_bar = False  # the ablation's only other setting
        if task == "finetune":  # a pre-training-only override in the row; the classifier has no contrastive loss
            assert (row.model.contrast_input, demo.model.contrast_input) == ("masked", "unmasked")
            row.model.contrast_input = demo.model.contrast_input
        assert asdict(row) == asdict(demo), task
    bare = ablate.configure(FULL, data, tmp_path, seed=1, variant=ablate.VARIANTS["mamba"], task="pretrain")
    assert bare.model.contrast_input == "masked"  # the CAV-MAE-objective row


def test_ablation_refuses_a_row_outside_the_tolerance(ablate):
    from cavmae.demo.settings import FULL

    with pytest.raises(SystemExit, match="mamba_wide"):
        ablate.VARIANTS["mamba_wide"] = ablate.Variant("mamba", ("model.mamba.expand=4",))
        try:
            ablate.check_sizes(FULL, ["mamba_wide"])
        finally:
            del ablate.VARIANTS["mamba_wide"]


def test_ablation_table_means_and_spread(ablate):
    runs = [
        {
            "variant": "vit",
            "seed": s,
            "R@5_v2a": 40.0 + 2 * s,
            "R@5_a2v": 30.0,
            "top1_pretrained": 90.0,
            "top1_scratch": 70.0 + 10 * s,
            "end_loss_rec_a": 0.5,
            "end_loss_rec_v": 0.4,
            "end_loss_c": 1.0,
            "total_s": 60.0,
        }
        for s in (0, 1)
    ]
    rows = ablate.aggregate(runs, ["vit", "mamba"], {"vit": 100, "mamba": 104})
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]
    assert rows[0]["R@5_v2a"]["mean"] == 41.0 and rows[0]["R@5_v2a"]["sd"] == pytest.approx(2**0.5)
    assert rows[0]["ft_gain"]["mean"] == 15.0
    protocol = {
        "reduced": True,
        "clips": 300,
        "classes": 8,
        "train_clips": 250,
        "heldout_clips": 50,
        "chance_R@5": 10.0,
        "pretrain_steps": 250,
        "pretrain_batch": 32,
        "finetune_steps": 30,
        "finetune_batch": 16,
        "seeds": [0, 1],
        "command": "python scripts/ablate_backbones.py --quick",
    }
    budget = {"wall_min": 2.0, "runs": 2, "machine": "2 CPU cores", "load_start": 1.0, "load_end": 1.0}
    text = ablate.markdown(rows, protocol, budget, {"vit": 100, "mamba": 104})
    assert "REDUCED PROTOCOL" in text and "41.0 ± 1.4" in text and "2.0 min wall" in text


@pytest.mark.slow
def test_ablation_end_to_end_at_a_tiny_size(ablate, tmp_path):
    """Data once, two variants, one seed: the JSON holds both runs and a rerun resumes without training."""
    import json

    args = ["--quick", "--clips", "48", "--steps", "2", "--finetune-steps", "1", "--seeds", "0"]
    args += ["--variants", "vit,mamba_time", "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")]
    assert ablate.main(args) == 0
    table = json.loads((tmp_path / "r" / "ablate_backbones.json").read_text())
    assert [r["variant"] for r in table["runs"]] == ["vit", "mamba_time"]
    assert table["params"]["mamba_time"] != table["params"]["vit"]
    assert "REDUCED PROTOCOL" in (tmp_path / "r" / "ablate_backbones.md").read_text()
    assert ablate.main(args) == 0  # resumes: both runs are already there
    assert len(json.loads((tmp_path / "r" / "ablate_backbones.json").read_text())["runs"]) == 2


def test_pretraining_only_variants_share_the_scratch_run(ablate):
    v = ablate.VARIANTS
    assert ablate.scratch_key(v["mamba_lr"], 1) == ablate.scratch_key(v["mamba"], 1)
    assert ablate.scratch_key(v["mamba_gap"], 1) == ablate.scratch_key(v["mamba"], 1)  # no gaps in fine-tuning
    assert ablate.scratch_key(v["mamba"], 1) != ablate.scratch_key(v["mamba"], 2)
    assert ablate.scratch_key(v["mamba_time"], 1) != ablate.scratch_key(v["mamba"], 1)


# ---------------------------------------------------------------------------------------------------------------
# gap-aware steps for masked sequences (model.mamba.gap_aware_dt)


def test_scan_gaps_in_both_directions():
    from cavmae.models.mamba import scan_gaps

    pos = torch.tensor([[0, 1, 4, 5, 9]])
    assert scan_gaps(pos, reverse=False).tolist() == [[1, 1, 3, 1, 4]]  # to the predecessor; the first: 1
    assert scan_gaps(pos, reverse=True).tolist() == [[1, 3, 1, 4, 1]]  # to the successor; the last: 1


@pytest.mark.parametrize("reverse", [False, True])
def test_gap_scaled_scan_is_the_full_scan_with_no_input_where_masked(reverse):
    """With a constant step, the kept tokens' scan with gap-scaled dt and B equals the scan of the whole sequence
    with zero input at the masked positions, read at the kept ones (the state decays over the gap)."""
    from cavmae.kernels import selective_scan
    from cavmae.models.mamba import gap_scaled, scan_gaps

    g = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 3, 4, 12
    kept = torch.tensor([[0, 2, 3, 7, 8, 11], [1, 4, 5, 6, 9, 10]])
    A = -torch.rand(d, n, generator=g) - 0.5
    bias = torch.full((d,), -1.0)  # dt = softplus(-1 + 0) everywhere: constant
    u_full = torch.randn(b, d, length, generator=g)
    B_full, C_full = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask.scatter_(1, kept, False)
    full = selective_scan(
        u_full.masked_fill(mask[:, None], 0.0),
        torch.zeros(b, d, length),
        A,
        B_full,
        C_full,
        delta_bias=bias,
        delta_softplus=True,
        impl="reference",
        reverse=reverse,
    )
    pick = kept[:, None, :]
    u = u_full.gather(2, pick.expand(-1, d, -1))
    B, C = (t.gather(2, pick.expand(-1, n, -1)) for t in (B_full, C_full))
    delta, B_gap = gap_scaled(torch.zeros_like(u), B, bias, scan_gaps(kept, reverse))
    out = selective_scan(u, delta, A, B_gap, C, impl="reference", reverse=reverse)
    assert torch.allclose(out, full.gather(2, pick.expand(-1, d, -1)), atol=1e-5)
    plain = selective_scan(u, torch.zeros_like(u), A, B, C, delta_bias=bias, delta_softplus=True, impl="reference")
    assert not torch.allclose(out, plain, atol=1e-3)  # treating kept neighbours as adjacent is something else


@pytest.mark.parametrize("reverse", [False, True])
def test_gap_hold_scan_carries_the_full_sequence_input(reverse):
    """fill="hold": with no decay (A = 0) the kept tokens' scan equals, exactly, the scan of the whole sequence in
    which every masked position holds the input of the kept token whose step covers it (the next kept token in
    the scan direction); with decay, the state decays over the gap as with fill="zero"."""
    from cavmae.kernels import selective_scan
    from cavmae.models.mamba import gap_scaled, scan_gaps

    g = torch.Generator().manual_seed(1)
    b, d, n, length = 2, 3, 4, 12
    kept = torch.tensor([[0, 2, 3, 7, 8, 11], [1, 4, 5, 6, 9, 10]])
    bias = torch.full((d,), -1.0)  # constant dt
    pick = kept[:, None, :]
    u = torch.randn(b, d, kept.shape[1], generator=g)
    B, C = torch.randn(b, n, kept.shape[1], generator=g), torch.randn(b, n, kept.shape[1], generator=g)
    # the full sequence: position p holds the kept token whose step covers it (forward: the first kept at or after
    # p; reverse: the last kept at or before p); positions scanned before the first kept token hold no input (its
    # step is 1), positions after the last kept one do not reach a kept output
    pos = torch.arange(length)
    if reverse:
        cover = (kept[:, None, :] <= pos[None, :, None]).sum(-1) - 1
        before_first = pos[None] > kept[:, -1:]
    else:
        cover = (kept[:, None, :] < pos[None, :, None]).sum(-1)
        before_first = pos[None] < kept[:, :1]
    cover = cover.clamp(0, kept.shape[1] - 1)  # [b, length] index into the kept tokens
    u_full = u.gather(2, cover[:, None].expand(-1, d, -1)).masked_fill(before_first[:, None], 0.0)
    B_full = B.gather(2, cover[:, None].expand(-1, n, -1))
    C_full = C.gather(2, cover[:, None].expand(-1, n, -1))
    for A in (torch.zeros(d, n), -torch.rand(d, n, generator=g) - 0.5):
        full = selective_scan(u_full, torch.zeros(b, d, length), A, B_full, C_full, delta_bias=bias,
                              delta_softplus=True, impl="reference", reverse=reverse)  # fmt: skip
        delta, B_hold = gap_scaled(torch.zeros_like(u), B, bias, scan_gaps(kept, reverse), "hold")
        out = selective_scan(u, delta, A, B_hold, C, impl="reference", reverse=reverse)
        at_kept = full.gather(2, pick.expand(-1, d, -1))
        if not A.any():
            assert torch.allclose(out, at_kept, atol=1e-5)
        else:  # Mamba's step dt*B*u over g positions is g*dt*B*u, not the geometric sum of the decaying copies
            assert not torch.allclose(out, at_kept, atol=1e-3)
    delta_zero, B_zero = gap_scaled(torch.zeros_like(u), B, bias, scan_gaps(kept, reverse), "zero")
    assert torch.equal(delta_zero, delta)  # the same decay over each gap; only the input differs
    assert torch.allclose(B_zero * scan_gaps(kept, reverse)[:, None], B_hold)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("fill", ["zero", "hold"])
def test_gap_conv_is_the_full_sequence_conv_read_at_the_kept_tokens(reverse, fill):
    """The conv of a masked sequence with gap_aware_conv: the conv of the full sequence in which masked positions
    are zero (fill="zero") or hold the kept token whose step covers them (fill="hold"), read at the kept tokens."""
    from cavmae.config import MambaConfig
    from cavmae.models.mamba import _Direction, spread_to_full

    torch.manual_seed(0)
    d = 3
    direction = _Direction(d, MambaConfig(d_conv=4), dt_rank=1)
    direction.reset_parameters()
    kept = torch.tensor([[1, 2, 6, 7, 8, 11], [0, 3, 4, 5, 9, 10]])
    x = torch.randn(2, kept.shape[1], d)  # kept tokens, token-major
    full = torch.zeros(2, 12, d)
    for row in range(2):
        for q in range(12):
            pos = kept[row].tolist()
            if fill == "zero":
                src = pos.index(q) if q in pos else None
            elif reverse:
                src = max((i for i, p in enumerate(pos) if p <= q), default=None) if q <= pos[-1] else None
            else:
                src = min((i for i, p in enumerate(pos) if p >= q), default=None) if q >= pos[0] else None
            if src is not None:
                full[row, q] = x[row, src]
    assert torch.equal(spread_to_full(x, kept, reverse, fill), full)
    want = direction.conv(full.mT.unsqueeze(2), reverse).gather(1, kept.unsqueeze(-1).expand(-1, -1, d))
    got = direction.gap_conv(x.mT.unsqueeze(2), reverse, kept, fill)
    assert torch.allclose(got, want, atol=1e-6)
    adjacent = direction.conv(x.mT.unsqueeze(2), reverse)
    assert not torch.allclose(got, adjacent, atol=1e-3)  # not the conv of the kept tokens as neighbours


@pytest.mark.parametrize("order", ["freq_major", "time_major"])
@pytest.mark.parametrize(
    "gap",
    [{}, {"mamba.gap_fill": "hold", "mamba.gap_aware_conv": True}, {"mamba.gap_aware_conv": True}],
    ids=["steps", "hold+conv", "zero+conv"],
)
def test_gap_aware_model_is_the_plain_model_when_nothing_is_masked(order, gap):
    unmasked = {"audio_token_order": order, "mask_ratio_a": 0.0, "mask_ratio_v": 0.0}
    ref, _, _, _ = _numbers(_small("mamba", **unmasked))
    out, _, _, _ = _numbers(_small("mamba", **unmasked, **{"mamba.gap_aware_dt": True}, **gap))
    for key in ("loss_rec_a", "loss_rec_v", "loss_c", "pred_a", "pred_v"):
        assert torch.allclose(out[key], ref[key], atol=1e-5), key


def test_gap_aware_model_sees_the_gaps_when_masked_and_trains():
    steps = {"mamba.dt_min": 0.5, "mamba.dt_max": 1.0}  # steps large enough for the decay over a gap to show
    ref, ref_emb_a, _, _ = _numbers(_small("mamba", **steps))
    out, emb_a, _, _ = _numbers(_small("mamba", **steps, **{"mamba.gap_aware_dt": True}))
    for key in ("pred_a", "pred_v"):  # same weights and masks, other steps
        assert (out[key] - ref[key]).abs().max() > 1e-4, key
    assert torch.allclose(emb_a, ref_emb_a, atol=1e-5)  # unmasked embeddings: no gaps, the plain block
    torch.manual_seed(0)
    model = cavmae.create_model(_small("mamba", **{"mamba.gap_aware_dt": True}))
    model(torch.randn(2, 64, 32), torch.randn(2, 3, 32, 32))["loss"].backward()
    for name in ("fwd.dt_proj.bias", "bwd.dt_proj.bias", "fwd.A_log", "bwd.x_proj.weight"):
        grad = model.blocks_a[0].mixer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------------------
# mask tokens in the encoder (model.encoder_masking=mask_token)


def _pair(backbone: str, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A "drop" model and a "mask_token" model with the same weights (the latter's extra token at its init)."""
    torch.manual_seed(0)
    drop = cavmae.create_model(_small(backbone, **overrides))
    torch.manual_seed(0)
    token = cavmae.create_model(_small(backbone, encoder_masking="mask_token", **overrides))
    missing, unexpected = token.load_state_dict(drop.state_dict(), strict=False)
    assert missing == ["encoder_mask_token"] and not unexpected
    return drop, token


@pytest.mark.parametrize("backbone", ["vit", "mamba"])
@pytest.mark.parametrize("order", ["freq_major", "time_major"])
def test_mask_token_encoder_is_the_drop_encoder_when_nothing_is_masked(backbone, order):
    drop, token = _pair(backbone, mask_ratio_a=0.0, mask_ratio_v=0.0, audio_token_order=order)
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(2, 64, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    outs = []
    for model in (drop, token):
        torch.manual_seed(2)
        outs.append(model(audio, frames, return_outputs=True))
    for key in ("loss_rec_a", "loss_rec_v", "loss_c", "pred_a", "pred_v"):
        assert torch.allclose(outs[0][key], outs[1][key], atol=1e-5), key


def test_mask_token_encoder_sees_whole_sequences_with_the_token_where_masked():
    _, token = _pair("mamba")
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(2, 64, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    torch.manual_seed(3)
    enc = token.forward_encoder(audio, frames, 0.75, 0.75, "unstructured")
    n_a, n_v = token.patch_embed_a.num_patches, token.patch_embed_v.num_patches
    assert enc["latent"].shape[1] == n_a + n_v and enc["latent_a"].shape[1] == n_a
    assert enc["latent_v"].shape[1] == n_v
    assert enc["masked_a"].mask.sum() > 0  # something was masked, and the encoder still saw every position
    # the masked positions' content does not matter: changing the masked patches changes nothing
    mask_v = enc["masked_v"].mask.bool().view(2, 1, 2, 2)  # [B, 1, H/p, W/p] on the 2 x 2 patch grid of 32 px
    other = frames + 5.0 * mask_v.repeat_interleave(16, dim=2).repeat_interleave(16, dim=3)
    torch.manual_seed(3)
    second = token.forward_encoder(audio, other, 0.75, 0.75, "unstructured")["latent_v"]
    assert torch.allclose(enc["latent_v"], second, atol=1e-6)
    kept_too = frames + 5.0 * (~mask_v).repeat_interleave(16, dim=2).repeat_interleave(16, dim=3)
    torch.manual_seed(3)
    third = token.forward_encoder(audio, kept_too, 0.75, 0.75, "unstructured")["latent_v"]
    assert not torch.allclose(enc["latent_v"], third, atol=1e-3)  # the kept patches do matter
    out = token(audio, frames)
    out["loss"].backward()
    assert token.encoder_mask_token.grad is not None and token.encoder_mask_token.grad.abs().sum() > 0
    assert torch.isfinite(out["loss"])


def test_drop_is_the_default_and_leaves_the_state_dict_alone():
    assert ModelConfig().encoder_masking == "drop"
    assert "encoder_mask_token" not in cavmae.create_model(_small("vit")).state_dict()


@pytest.mark.parametrize("backbone", ["vit", "mamba"])
def test_unmasked_contrast_is_the_infonce_of_the_retrieval_embeddings(backbone):
    from cavmae.models.losses import info_nce

    torch.manual_seed(0)
    cfg = _small(backbone, contrast_input="unmasked")
    model = cavmae.create_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(3, 64, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    out = model(audio, frames)
    emb_a, emb_v = model.embed(audio, frames)
    want, _ = info_nce(emb_a, emb_v, cfg.temperature, cfg.symmetric_contrast, False)
    assert torch.allclose(out["loss_c"], want, atol=1e-6)
    torch.manual_seed(0)
    masked = cavmae.create_model(_small(backbone)).eval()
    assert not torch.allclose(masked(audio, frames)["loss_c"], want, atol=1e-4)  # the masked streams differ


def test_masked_view_retrieval_pools_masked_views_of_the_held_out_clips(ablate):
    from cavmae.eval.metrics import retrieval_metrics
    from cavmae.models.cavmae import pool_kept

    class Held:  # what the function reads of cavmae.demo.heldout.HeldOut: one batch of 6 clips
        def batches(self):
            yield {"audio": audio, "frames": frames}

    torch.manual_seed(0)
    model = cavmae.create_model(_small("mamba")).eval()
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(6, 64, 32, generator=g), torch.randn(6, 3, 32, 32, generator=g)
    got = ablate.masked_view_retrieval(model, Held(), views=2)
    emb_a = emb_v = 0.0
    with torch.no_grad():
        for i in range(2):  # the two seeded views, pooled over the kept tokens, averaged
            torch.manual_seed(1000 + i)
            enc = model.forward_encoder(audio, frames, 0.75, 0.75, "unstructured")
            emb_a = emb_a + pool_kept(enc["latent_a"], enc["masked_a"])
            emb_v = emb_v + pool_kept(enc["latent_v"], enc["masked_v"])
    normalize = torch.nn.functional.normalize
    assert got == retrieval_metrics(normalize(emb_a / 2, dim=-1), normalize(emb_v / 2, dim=-1))
    unmasked = retrieval_metrics(*(normalize(e, dim=-1) for e in model.embed(audio, frames)))
    assert got != unmasked  # masked views are not the unmasked embeddings
