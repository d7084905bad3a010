"""Reconstruction figures of the pre-training model: original, masked input and reconstruction, per modality."""

from __future__ import annotations

from pathlib import Path

import torch

from cavmae.models.embed import audio_to_image, patchify, unpatchify

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _reconstruct(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, norm_pix: bool):
    """Patches [L, P] of target / prediction, mask [L] -> (masked input, visible + predicted) patches [L, P].

    With norm_pix_loss the model predicts per-patch normalised values; undo that with the target patch's own
    mean / std (as MAE's visualisation does). Masked patches of the input are NaN (drawn blank)."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        pred = pred * std + mean
    m = mask[:, None].bool()
    masked_input = target.masked_fill(m, float("nan"))
    pasted = torch.where(m, pred, target)
    return masked_input, pasted


@torch.no_grad()
def reconstruction_figure(model, audio: torch.Tensor, frames: torch.Tensor, path: str | Path) -> Path:
    """Run ``model`` (an unwrapped CAVMAE) on one clip (audio [1, T, F], frames [1, 3, H, W]) and save a 2 x 3 PNG:
    spectrogram and frame; each original, masked input, reconstruction. RNG state is left untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cfg = model.cfg
    p = cfg.patch_size
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        out = model(audio.float(), frames.float(), return_outputs=True)
    model.train(was_training)

    target_a = patchify(audio_to_image(audio.float()), p)[0].cpu()  # [La, p*p]
    target_v = patchify(frames.float(), p)[0].cpu()  # [Lv, p*p*3]
    rows = []
    for target, pred, mask, chans, grid in (
        (target_a, out["pred_a"][0].float().cpu(), out["mask_a"][0].cpu(), 1, cfg.audio_grid),
        (target_v, out["pred_v"][0].float().cpu(), out["mask_v"][0].cpu(), 3, cfg.video_grid),
    ):
        masked, pasted = _reconstruct(target, pred, mask, cfg.norm_pix_loss)
        rows.append([unpatchify(x[None], p, chans, grid)[0] for x in (target, masked, pasted)])

    fig = Figure(figsize=(12, 6))
    FigureCanvasAgg(fig)
    titles = ("original", "masked input", "reconstruction")
    for col, img in enumerate(rows[0]):  # [1, F, T]: frequency up, time right
        ax = fig.add_subplot(2, 3, col + 1)
        ax.imshow(img[0].numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(f"audio: {titles[col]}")
        ax.set_xlabel("time frame")
        ax.set_ylabel("mel bin")
    for col, img in enumerate(rows[1]):  # [3, H, W], ImageNet-normalised
        ax = fig.add_subplot(2, 3, col + 4)
        rgb = (img * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
        rgb = torch.where(torch.isnan(img), torch.ones_like(img), rgb)  # masked patches white
        ax.imshow(rgb.permute(1, 2, 0).numpy())
        ax.set_title(f"frame: {titles[col]}")
        ax.axis("off")
    fig.suptitle(f"loss_rec_a {float(out['loss_rec_a']):.3f}   loss_rec_v {float(out['loss_rec_v']):.3f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    return path
