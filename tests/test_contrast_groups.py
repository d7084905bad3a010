"""train.contrast_group: InfoNCE within groups of the global batch, summed as the paper's DataParallel did."""

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
def test_groups_of_4_from_8_equal_two_batches_of_4_summed(symmetric):
    g = torch.Generator().manual_seed(0)
    a0, v0 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    a, v = a0.clone().requires_grad_(), v0.clone().requires_grad_()
    loss, acc, group = grouped_info_nce(a, v, 4, 0.05, symmetric)
    loss.backward()
    a2, v2 = a0.clone().requires_grad_(), v0.clone().requires_grad_()
    want = sum(info_nce(a2[s], v2[s], 0.05, symmetric)[0] for s in (slice(0, 4), slice(4, 8)))
    want.backward()
    assert group == 4
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.allclose(a.grad, a2.grad, atol=1e-6) and torch.allclose(v.grad, v2.grad, atol=1e-6)
    # and it is not the InfoNCE of the whole batch (other negatives)
    assert not torch.allclose(loss, 2 * info_nce(a0, v0, 0.05, symmetric)[0], atol=1e-4)


def _fixed_masking(tokens, ratio, mode="unstructured", grid=None):
    """Masking without randomness (keep the first tokens of each clip): a batch of 8 and two batches of 4 then
    see the same masks."""
    b, n, d = tokens.shape
    keep = int(n * (1 - ratio))
    ids = torch.arange(n).expand(b, n)
    mask = torch.ones(b, n)
    mask[:, :keep] = 0
    return Masked(tokens[:, :keep], mask, ids, ids[:, :keep])


def test_model_loss_and_gradients_equal_two_batches_summed(monkeypatch):
    monkeypatch.setattr(cavmae_module, "random_masking", _fixed_masking)
    cfg = tiny_cfg()
    audio, frames = batch(cfg, b=8)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    model.contrast_group = 4
    out = model(audio, frames)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.contrast_group = 0
    halves = [model(audio[s], frames[s]) for s in (slice(0, 4), slice(4, 8))]
    total = halves[0]["loss"] + halves[1]["loss"]
    total.backward()
    assert torch.allclose(out["loss"], total, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["loss_c"], (halves[0]["loss_c"] + halves[1]["loss_c"]) / 2, atol=1e-5)
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, rtol=1e-4, atol=1e-7), n


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
