"""The demo's figures: PNGs drawn with matplotlib's object API (no pyplot state). Every function takes plain
tensors / paths / the demo's metrics and writes one PNG."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from cavmae.demo.heldout import HeldOut, RetrievalResult, SeedResult


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
COLOURS = {"pretrained": "tab:blue", "random_init": "tab:gray", "scratch": "tab:orange"}
LABELS = {"pretrained": "pre-trained", "random_init": "random init", "scratch": "from scratch"}
DPI = 100


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def frame_image(frame: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [3, H, W] -> displayable RGB [H, W, 3] in [0, 1]."""
    return (frame.float() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1).permute(1, 2, 0)


def _show_spectrogram(ax, audio: torch.Tensor) -> None:
    """Normalised fbank [T, F] with frequency up and time to the right."""
    ax.imshow(audio.t().float().numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-2.5, vmax=2.5)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (per-step losses of one batch are noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _curve(ax, steps: Sequence[int], runs: Sequence[Sequence[float]], label: str, colour: str | None = None) -> None:
    """One curve per seed (equal lengths): the first seed's raw values faint; the mean over seeds of their moving
    averages (over ~1/20 of the run) solid, with a band of +- one standard deviation across seeds."""
    n = min(len(r) for r in runs)
    steps, runs = list(steps)[:n], [list(r)[:n] for r in runs]
    line = ax.plot(steps, runs[0], color=colour, alpha=0.2, linewidth=0.8)[0]
    smoothed = torch.tensor([smooth(r, max(1, n // 20)) for r in runs])  # [seeds, steps]
    mean = smoothed.mean(dim=0)
    ax.plot(steps, mean.tolist(), color=line.get_color(), label=label)
    if len(runs) > 1:
        sd = smoothed.std(dim=0)
        ax.fill_between(steps, (mean - sd).tolist(), (mean + sd).tolist(), color=line.get_color(), alpha=0.25)


def _seed_note(n: int) -> str:
    return f"mean of {n} seeds, band / bars: +- 1 sd" if n > 1 else "one seed"


def visible_order(frames: torch.Tensor) -> list[int]:
    """Clip indices, the most varied frames first (the object is in view; an empty frame is one flat colour)."""
    return frames.flatten(1).std(dim=1).argsort(descending=True, stable=True).tolist()


# ---------------------------------------------------------------------------------------------------------------
# figures


def plot_examples(held: HeldOut, class_names: Sequence[str], path: Path, per_row: int = 8) -> Path:
    """One held-out clip per class: its middle frame above its spectrogram."""
    first: dict[int, int] = {}
    for i in visible_order(held.frames):
        first.setdefault(int(held.labels[i]), i)
    classes = sorted(first)
    rows = math.ceil(len(classes) / per_row)
    fig = _figure(1.7 * per_row, 3.0 * rows)
    for n, c in enumerate(classes):
        r, col = divmod(n, per_row)
        ax = fig.add_subplot(2 * rows, per_row, 2 * r * per_row + col + 1)
        ax.imshow(frame_image(held.frames[first[c]]).numpy())
        ax.set_title("\n".join(textwrap.wrap(class_names[c], 18)), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax = fig.add_subplot(2 * rows, per_row, (2 * r + 1) * per_row + col + 1)
        _show_spectrogram(ax, held.audio[first[c]])
        ax.set_xticks([])
        ax.set_yticks([])
        if col == 0:
            ax.set_ylabel("mel bin", fontsize=8)
        ax.set_xlabel("time", fontsize=8)
    fig.suptitle("One held-out clip per class: middle frame (top) and log-mel spectrogram (bottom)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_pretrain_losses(run_dirs: Sequence[Path], batch_size: int, path: Path) -> Path:
    """Reconstruction losses, contrastive loss and in-batch retrieval accuracy over pre-training steps (all seeds)."""
    runs = [_read_jsonl(d / "metrics.jsonl") for d in run_dirs]
    steps = [r["step"] for r in runs[0]]

    def series(key: str, scale: float = 1.0) -> list[list[float]]:
        return [[scale * r[key] for r in records] for records in runs]

    fig = _figure(15, 4)
    ax = fig.add_subplot(1, 3, 1)
    _curve(ax, steps, series("loss_rec_a"), "audio (spectrogram patches)", "tab:purple")
    _curve(ax, steps, series("loss_rec_v"), "video (frame patches)", "tab:red")
    ax.set(title="Masked reconstruction loss (75 % masked)", xlabel="pre-training step", ylabel="norm-pix MSE")
    ax.legend()
    ax = fig.add_subplot(1, 3, 2)
    _curve(ax, steps, series("loss_c"), "InfoNCE", "tab:green")
    ax.axhline(math.log(batch_size), color="black", linestyle=":", label=f"chance: ln {batch_size}")
    ax.set(title="Contrastive loss (audio vs video)", xlabel="pre-training step", ylabel="loss")
    ax.legend()
    ax = fig.add_subplot(1, 3, 3)
    _curve(ax, steps, series("acc_c", 100.0), "in-batch top-1", "tab:green")
    ax.axhline(100 / batch_size, color="black", linestyle=":", label=f"chance: 1/{batch_size}")
    ax.set(title="In-batch video->audio matching", xlabel="pre-training step", ylabel="accuracy (%)")
    ax.legend()
    fig.suptitle(
        f"Pre-training on the train clips (faint: each step's batch, first seed; solid: moving average, "
        f"{_seed_note(len(runs))})"
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_recalls(metrics: dict[str, Any], num_clips: int, path: Path) -> Path:
    """R@1/5/10 in both directions, pre-trained vs random init (mean over seeds, +- 1 sd), with chance (k / N)."""
    ks = (1, 5, 10)
    n_seeds = len(metrics["seeds"])
    fig = _figure(11, 4)
    width = 0.38
    for col, (direction, title) in enumerate(
        (("video_to_audio", "video -> audio"), ("audio_to_video", "audio -> video"))
    ):
        ax = fig.add_subplot(1, 2, col + 1)
        for j, name in enumerate(("pretrained", "random_init")):
            values = [metrics["retrieval"][name][direction][f"R@{k}"] for k in ks]
            sds = [metrics["retrieval_sd"][name][direction][f"R@{k}"] for k in ks] if n_seeds > 1 else None
            xs = [i + (j - 0.5) * width for i in range(len(ks))]
            ax.bar(xs, values, width, yerr=sds, capsize=3, color=COLOURS[name], label=LABELS[name])
            for x, v, e in zip(xs, values, sds or [0.0] * len(values)):  # exact value above its error bar
                ax.text(x, v + e + 1.5, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.scatter(range(len(ks)), [100 * min(k, num_clips) / num_clips for k in ks], marker="_", s=600, color="black")
        ax.plot([], [], color="black", label="chance (k / N)")
        ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
        ax.set(title=f"{title} retrieval, {num_clips} held-out clips", ylabel="recall (%)", ylim=(0, 105))
        ax.legend(loc="upper left")
    fig.suptitle(f"Held-out retrieval ({_seed_note(n_seeds)})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def block_similarity(sim: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """Mean cosine of (own clip, other clips of the same class, clips of other classes) in an audio x video matrix."""
    same = labels[:, None] == labels[None, :]
    own = torch.eye(len(labels), dtype=torch.bool)
    return (
        float(sim[own].mean()),
        float(sim[same & ~own].mean()) if (same & ~own).any() else math.nan,
        float(sim[~same].mean()) if (~same).any() else math.nan,
    )


def class_pair_similarity(sim: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cosine of each (audio class, video class) block of an audio x video matrix: (C, C), C = max label + 1.

    The diagonal excludes each clip's own pair (as ``block_similarity``'s "same class"); a block with no clips is NaN.
    """
    num_classes = int(labels.max()) + 1
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(sim.dtype)  # (n, C)
    not_own = 1.0 - torch.eye(len(labels), dtype=sim.dtype)
    sums = onehot.T @ (sim * not_own) @ onehot  # (C, C)
    counts = onehot.T @ not_own @ onehot
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.nan))


def confusable_class_pairs(
    sim: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], top: int = 3
) -> dict[str, Any]:
    """Off-diagonal class blocks as bright as the same-class blocks: what a reader sees in the matrix.

    Returns the mean same-class block, how many of the C * (C - 1) off-diagonal blocks reach it, and the ``top``
    brightest off-diagonal blocks as ``[audio class, video class, mean cosine]``.
    """
    blocks = class_pair_similarity(sim, labels)
    diagonal = blocks.diagonal()
    same_class = float(diagonal[~diagonal.isnan()].mean())
    off = ~torch.eye(len(blocks), dtype=torch.bool) & ~blocks.isnan()
    values = blocks[off]
    pairs = off.nonzero().tolist()
    order = values.argsort(descending=True)[:top].tolist()
    return {
        "same_class_block": round(same_class, 3),
        "off_diagonal_blocks": int(off.sum()),
        "off_diagonal_at_least_same_class": int((values >= same_class).sum()),
        "brightest_off_diagonal": [
            [class_names[pairs[i][0]], class_names[pairs[i][1]], round(float(values[i]), 3)] for i in order
        ],
    }


def plot_similarity(
    retrieval: dict[str, RetrievalResult], labels: torch.Tensor, class_names: Sequence[str], path: Path
) -> Path:
    """The held-out audio x video cosine similarity matrices of one seed, clips sorted by class, classes labelled."""
    order = labels.argsort(stable=True)
    sorted_labels = labels[order]
    borders = [i + 0.5 for i in range(len(order) - 1) if sorted_labels[i] != sorted_labels[i + 1]]
    classes = sorted_labels.unique().tolist()
    centres = [float((sorted_labels == c).nonzero().float().mean()) for c in classes]
    ticks = [f"{class_names[c][:18]} ({c})" for c in classes]
    fig = _figure(15, 7)
    for col, name in enumerate(("pretrained", "random_init")):
        ax = fig.add_subplot(1, 2, col + 1)
        sim = retrieval[name].similarity[order][:, order]
        own, same, other = block_similarity(sim, sorted_labels)
        im = ax.imshow(sim.numpy(), cmap="viridis", interpolation="nearest")
        for b in borders:
            ax.axhline(b, color="white", linewidth=0.4, alpha=0.6)
            ax.axvline(b, color="white", linewidth=0.4, alpha=0.6)
        ax.set_xticks(centres, ticks, rotation=90, fontsize=6)
        ax.set_yticks(centres, ticks, fontsize=6)
        ax.set_title(
            f"{LABELS[name]}: mean cosine own clip {own:.2f},\nsame class {same:.2f}, other classes {other:.2f}",
            fontsize=9,
        )
        ax.set_xlabel("video clip (sorted by class)")
        ax.set_ylabel("audio clip (sorted by class)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.suptitle("Held-out audio x video cosine similarity, first seed (white lines: class borders)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_retrieval_examples(
    sim: torch.Tensor,
    held: HeldOut,
    class_names: Sequence[str],
    query_modality: str,
    path: Path,
    num_queries: int = 3,
    k: int = 5,
) -> Path:
    """A few queries and their top-k matches with cosine scores. ``sim`` [N, N] is audio x video.

    query_modality "video": frames query spectrograms; "audio": spectrograms query frames. The true match's score
    is green, same-class matches orange. Queries: clips whose object is in view, of different classes.
    """
    scores = sim.t() if query_modality == "video" else sim  # [queries, gallery]
    queries: list[int] = []
    offset = 0 if query_modality == "video" else num_queries  # the two figures show different clips
    seen: set[int] = set()
    for i in visible_order(held.frames):
        c = int(held.labels[i])
        if c not in seen:
            seen.add(c)
            queries.append(i)
    queries = queries[offset : offset + num_queries]
    fig = _figure(2.0 * (k + 1), 2.3 * len(queries))
    for r, q in enumerate(queries):
        top = scores[q].topk(min(k, scores.shape[1]))
        cells = [(q, None)] + list(zip(top.indices.tolist(), top.values.tolist()))
        for c, (idx, score) in enumerate(cells):
            ax = fig.add_subplot(len(queries), k + 1, r * (k + 1) + c + 1)
            show_frame = (c == 0) == (query_modality == "video")
            if show_frame:
                ax.imshow(frame_image(held.frames[idx]).numpy())
            else:
                _show_spectrogram(ax, held.audio[idx])
            ax.set_xticks([])
            ax.set_yticks([])
            name = "\n".join(textwrap.wrap(class_names[int(held.labels[idx])], 16))
            if score is None:
                ax.set_title(f"query ({query_modality})", fontsize=9, fontweight="bold")
                for spine in ax.spines.values():
                    spine.set(color="tab:blue", linewidth=3)
            else:
                colour = "tab:green" if idx == q else ("tab:orange" if held.labels[idx] == held.labels[q] else "black")
                ax.set_title(f"#{c}  cos {score:.2f}", fontsize=9, color=colour)
            ax.set_xlabel(name, fontsize=7)
    other = "audio" if query_modality == "video" else "video"
    fig.suptitle(
        f"Pre-trained model, {query_modality} -> {other}: top {k} of {scores.shape[1]} held-out clips "
        "(green: the query's own clip, orange: same class)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_finetune_curves(results: Sequence[SeedResult], metrics: dict[str, Any], path: Path) -> Path:
    """Held-out top-1 (mean over seeds +- 1 sd) and training loss over fine-tuning steps, pre-trained vs scratch."""
    fig = _figure(12, 4)
    ax = fig.add_subplot(1, 2, 1)
    n_seeds = len(results)
    for name, c in metrics["classification"].items():
        steps, acc = zip(*c["curve"]) if c["curve"] else ((), ())
        sd = [x for _, x in c["curve_sd"]] if n_seeds > 1 else None
        ax.errorbar(steps, acc, yerr=sd, marker="o", capsize=3, color=COLOURS[name], label=LABELS[name])
    ax.set(title="Held-out accuracy during fine-tuning", xlabel="fine-tuning step", ylabel="top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    for name in metrics["classification"]:
        runs = [_read_jsonl(r.runs_dir / f"finetune_{name}" / "metrics.jsonl") for r in results]
        _curve(
            ax, [r["step"] for r in runs[0]], [[r["loss"] for r in rec] for rec in runs], LABELS[name], COLOURS[name]
        )
    ax.set(title="Training loss (cross-entropy)", xlabel="fine-tuning step", ylabel="loss")
    ax.legend()
    fig.suptitle(f"Fine-tuning ({_seed_note(n_seeds)})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class(metrics: dict[str, Any], class_names: Sequence[str], path: Path) -> Path:
    """Held-out accuracy of every class after fine-tuning (mean over seeds +- 1 sd): pre-trained vs from scratch."""
    n = len(class_names)
    n_seeds = len(metrics["seeds"])
    fig = _figure(max(8.0, 0.8 * n + 2), 5.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.4
    for j, (name, c) in enumerate(metrics["classification"].items()):
        values = [0.0 if v is None else v for v in c["per_class_top1"]]
        sds = [0.0 if v is None else v for v in c["per_class_top1_sd"]] if n_seeds > 1 else None
        xs = [i + (j - 0.5) * width for i in range(n)]
        bars = ax.bar(xs, values, width, yerr=sds, capsize=2, color=COLOURS[name], label=LABELS[name])
        ax.bar_label(bars, fmt="%.1f", fontsize=6, rotation=90, padding=3)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set(
        title=f"Held-out accuracy per class after fine-tuning ({_seed_note(n_seeds)})",
        ylabel="top-1 accuracy (%)",
        ylim=(0, 130),
    )
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# the page
