"""train.contrast_group: InfoNCE within groups of the global batch (the paper's DataParallel negatives), averaged over
the groups so that the grouped loss has the scale of the ungrouped one (the paper summed them: G times the loss)."""

from __future__ import annotations

import pytest
import torch
from test_models import batch, tiny_cfg

import cavmae
import cavmae.models.cavmae as cavmae_module
from cavmae.config import ConfigError, load_config
from cavmae.models.losses import grouped_info_nce, info_nce
from cavmae.models.masking import Masked


@pytest.mark.parametrize("symmetric", [False, True])
def test_groups_of_4_from_8_equal_two_batches_of_4_averaged(symmetric):
    g = torch.Generator().manual_seed(0)
    a0, v0 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    a, v = a0.clone().requires_grad_(), v0.clone().requires_grad_()
    loss, acc = grouped_info_nce(a, v, 4, 0.05, symmetric)
    loss.backward()
    a2, v2 = a0.clone().requires_grad_(), v0.clone().requires_grad_()
    want = sum(info_nce(a2[s], v2[s], 0.05, symmetric)[0] for s in (slice(0, 4), slice(4, 8))) / 2
    want.backward()
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.allclose(a.grad, a2.grad, atol=1e-6) and torch.allclose(v.grad, v2.grad, atol=1e-6)
    # and it is not the InfoNCE of the whole batch (other negatives)
    assert not torch.allclose(loss, info_nce(a0, v0, 0.05, symmetric)[0], atol=1e-4)


def _fixed_masking(tokens, ratio, mode="unstructured", grid=None):
    """Masking without randomness (keep the first tokens of each clip): a batch of 8 and two batches of 4 then
    see the same masks."""
    b, n, d = tokens.shape
    keep = int(n * (1 - ratio))
    ids = torch.arange(n).expand(b, n)
    mask = torch.ones(b, n)
    mask[:, :keep] = 0
    return Masked(tokens[:, :keep], mask, ids, ids[:, :keep])


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_model_loss_and_gradients_equal_two_batches_averaged(monkeypatch):
    monkeypatch.setattr(cavmae_module, "random_masking", _fixed_masking)
    cfg = tiny_cfg()
    audio, frames = batch(cfg, b=8)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    model.contrast_group = 4
    out = model(audio, frames)
    out["loss"].backward()
    grads = _grads(model)
    model.zero_grad()
    model.contrast_group = 0
    halves = [model(audio[s], frames[s]) for s in (slice(0, 4), slice(4, 8))]
    mean = (halves[0]["loss"] + halves[1]["loss"]) / 2
    mean.backward()
    assert torch.allclose(out["loss"], mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["loss_c"], (halves[0]["loss_c"] + halves[1]["loss_c"]) / 2, atol=1e-5)
    assert grads.keys() == _grads(model).keys()
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, rtol=1e-4, atol=1e-7), n


def _grouped_and_plain(**overrides) -> tuple[dict, dict]:
    """One forward of the same weights, batch (8 clips) and masks: groups of 4 (G = 2) and no groups."""
    cfg = tiny_cfg(**overrides)
    audio, frames = batch(cfg, b=8)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    outs = []
    for group in (4, 0):
        model.contrast_group = group
        torch.manual_seed(1)  # the same masks
        outs.append(model(audio, frames))
    return outs[0], outs[1]


def test_grouped_loss_without_contrast_is_the_ungrouped_loss():
    """No factor G on the reconstruction: with contrast_weight=0 the grouped loss is the ungrouped one, and it is
    the limit of the grouped loss as contrast_weight goes to 0 (the old objective jumped from 2 * rec to rec)."""
    grouped, plain = _grouped_and_plain(contrast_weight=0.0)
    assert torch.equal(grouped["loss"], plain["loss"]) and torch.equal(grouped["loss"], plain["loss_rec"])
    tiny_c, _ = _grouped_and_plain(contrast_weight=1e-7)
    assert torch.allclose(tiny_c["loss"], plain["loss"], rtol=1e-5)


def test_grouped_loss_is_rec_plus_the_weighted_mean_of_the_groups_infonce_and_its_gradient_the_old_over_g():
    """The logged loss is k_rec * rec + k_c * mean(c_1, c_2), with c_g the InfoNCE of group g computed by hand from
    the embeddings the loss used (contrast_mask_ratio=0: the returned emb_a / emb_v); its gradient is that of the
    objective before the fix, G * k_rec * rec + k_c * (c_1 + c_2), divided by G = 2."""
    cfg = tiny_cfg(contrast_mask_ratio=0.0)
    audio, frames = batch(cfg, b=8)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    model.contrast_group = 4
    out = model(audio, frames, return_embeddings=True)
    c = [info_nce(out["emb_a"][s], out["emb_v"][s], cfg.temperature)[0] for s in (slice(0, 4), slice(4, 8))]
    k_rec, k_c = cfg.rec_weight, cfg.contrast_weight
    assert k_c > 0 and torch.allclose(out["loss_c"], (c[0] + c[1]) / 2, rtol=1e-6)
    assert torch.allclose(out["loss"], k_rec * out["loss_rec"] + k_c * (c[0] + c[1]) / 2, rtol=1e-6)
    old = 2 * k_rec * out["loss_rec"] + k_c * (c[0] + c[1])
    params = [p for p in model.parameters() if p.requires_grad]
    new_grads = torch.autograd.grad(out["loss"], params, retain_graph=True, allow_unused=True)
    old_grads = torch.autograd.grad(old, params, allow_unused=True)
    assert [g is None for g in new_grads] == [g is None for g in old_grads]
    new = torch.cat([g.flatten() for g in new_grads if g is not None])  # every gradient, one vector
    before = torch.cat([g.flatten() for g in old_grads if g is not None])
    assert new.numel() > 10_000
    # float32 sums in other orders: the error is relative to the whole gradient, not to each (tiny) element
    assert (new - before / 2).norm() <= 1e-5 * (before / 2).norm()


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="contrast_group"):
        a = torch.randn(5, 4)
        # a gathered batch that groups of 4 cannot cut: simulated by gather=True on one process with b % N != 0
        grouped_info_nce_strict(a)
    with pytest.raises(ConfigError, match="contrast_group"):
        load_config(None, ["train.contrast_group=4"], task="finetune")


def grouped_info_nce_strict(a):
    from cavmae.models import losses

    real = losses.gather_batch
    try:
        losses.gather_batch = lambda x: (torch.cat([x, x]), 0)  # pretend a second process holds 5 more clips
        return grouped_info_nce(a, a, 4, gather=True)
    finally:
        losses.gather_batch = real
