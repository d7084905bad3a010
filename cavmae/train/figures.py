"""Reconstruction figures of the pre-training model: original, masked input and reconstruction, per modality."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from cavmae.models.embed import audio_to_image, patchify, unpatchify
from cavmae.train.state import rng_devices

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _reconstruct(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, norm_pix: bool):
    """Patches [L, P] of target / prediction, mask [L] (1 = masked) -> (visible input, prediction on the masked
    patches, |prediction - target| on the masked patches), each [L, P] with NaN where a panel shows nothing.

    With norm_pix_loss the model predicts per-patch normalised values; undo that with the target patch's own
    mean / std (as MAE's visualisation does). Only masked patches are predicted and scored; the visible ones were
    the model's input, so pasting them back would flatter the reconstruction."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        pred = pred * std + mean
    m = mask[:, None].bool()
    nan = torch.tensor(float("nan"))
    visible = target.masked_fill(m, float("nan"))
    predicted = torch.where(m, pred, nan)
    error = torch.where(m, (pred - target).abs(), nan)
    return visible, predicted, error


@torch.no_grad()
def reconstruction_figure(model, audio: torch.Tensor, frames: torch.Tensor, path: str | Path, note: str = "") -> Path:
    """Run ``model`` (an unwrapped CAVMAE) on one clip (audio [1, T, F], frames [1, 3, H, W]) and save a 2 x 4 PNG:
    spectrogram and frame; each original, visible input, prediction on the masked patches only, and its absolute
    error there, with colorbars. The RNG states of the CPU and of the model's device are left untouched (the
    training masks do not depend on how often figures are drawn). ``note``: text printed under the panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cfg = model.cfg
    p = cfg.patch_size
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=rng_devices(device)):
        out = model(audio.float(), frames.float(), return_outputs=True)
    model.train(was_training)

    target_a = patchify(audio_to_image(audio.float()), p)[0].cpu()  # [La, p*p]
    target_v = patchify(frames.float(), p)[0].cpu()  # [Lv, p*p*3]
    rows = []
    for target, pred, mask, chans, grid in (
        (target_a, out["pred_a"][0].float().cpu(), out["mask_a"][0].cpu(), 1, cfg.audio_grid),
        (target_v, out["pred_v"][0].float().cpu(), out["mask_v"][0].cpu(), 3, cfg.video_grid),
    ):
        panels = (target, *_reconstruct(target, pred, mask, cfg.norm_pix_loss))
        rows.append([unpatchify(x[None], p, chans, grid)[0] for x in panels])
    ratio_a = float(out["mask_a"][0].float().mean())
    ratio_v = float(out["mask_v"][0].float().mean())

    fig = Figure(figsize=(17, 6.5))
    FigureCanvasAgg(fig)
    titles = ("original", "visible input", "prediction, masked patches only", "|error|, masked patches")
    original = rows[0][0][0]
    vmin, vmax = float(original.min()), float(original.max())  # one scale for original, input and prediction
    for col, img in enumerate(rows[0]):  # [1, F, T]: frequency up, time right
        ax = fig.add_subplot(2, 4, col + 1)
        kwargs = {"cmap": "magma", "vmin": vmin, "vmax": vmax} if col < 3 else {"cmap": "viridis", "vmin": 0}
        im = ax.imshow(img[0].numpy(), origin="lower", aspect="auto", interpolation="nearest", **kwargs)
        ax.set_facecolor("white")  # NaN (not shown) patches
        ax.set_title(f"audio: {titles[col]}", fontsize=10)
        ax.set_xlabel("time frame")
        ax.set_ylabel("mel bin")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="normalised log-mel" if col < 3 else "abs. error")
    for col, img in enumerate(rows[1]):  # [3, H, W], ImageNet-normalised
        ax = fig.add_subplot(2, 4, col + 5)
        if col < 3:
            rgb = (img * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
            rgb = torch.where(torch.isnan(img), torch.ones_like(img), rgb)  # not-shown patches white
            ax.imshow(rgb.permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            im = ax.imshow(img.mean(dim=0).numpy(), cmap="viridis", vmin=0, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="abs. error (normalised, RGB mean)")
        ax.set_title(f"frame: {titles[col]}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Masked reconstruction ({100 * ratio_a:.0f} % of audio and {100 * ratio_v:.0f} % of frame patches masked; "
        f"white: not shown). Loss on masked patches: audio {float(out['loss_rec_a']):.3f}, "
        f"frame {float(out['loss_rec_v']):.3f} (norm-pix MSE)",
        fontsize=10,
    )
    if note:
        lines = [line for par in note.split("\n") for line in textwrap.wrap(par, 190)]
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=10, va="bottom")
        fig.tight_layout(rect=(0, 0.012 + 0.03 * len(lines), 1, 1))
    else:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    return path
