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


@torch.no_grad()
def reconstruction_losses(model: torch.nn.Module, held: HeldOut, seed: int = 0) -> torch.Tensor:
    """Masked reconstruction loss of every held-out clip [N, 2] (audio, frame), each clip run alone with the masks
    drawn after ``torch.manual_seed(seed)`` (the same masks for every clip, and for the figure drawn after the same
    seeding). The global RNG state is left as it was."""
    was_training = model.training
    model.eval()
    losses = []
    with torch.random.fork_rng():
        for i in range(len(held.keys)):
            torch.manual_seed(seed)
            out = model(held.audio[i : i + 1].float(), held.frames[i : i + 1].float(), return_outputs=True)
            losses.append([float(out["loss_rec_a"]), float(out["loss_rec_v"])])
    model.train(was_training)
    return torch.tensor(losses)


def median_clip(losses: torch.Tensor) -> int:
    """The clip closest to the median loss of both modalities (losses [N, 2]; distance relative to the medians)."""
    median = losses.median(dim=0).values
    return int(((losses - median).abs() / median.clamp(min=1e-9)).sum(dim=1).argmin())


def plot_reconstruction(model: torch.nn.Module, held: HeldOut, path: Path, seed: int = 0) -> Path:
    """The reconstruction figure (:func:`cavmae.train.figures.reconstruction_figure`) of a representative held-out
    clip: the one nearest the median reconstruction loss over all held-out clips (same masks for all), with a note
    giving its loss beside the held-out mean and median and saying what the panels show."""
    from cavmae.train.figures import reconstruction_figure

    losses = reconstruction_losses(model, held, seed)
    i = median_clip(losses)
    mean, median = losses.mean(dim=0), losses.median(dim=0).values
    note = (
        f"Clip shown: {held.keys[i]}, the one nearest the median loss of the {len(held.keys)} held-out clips (each "
        f"with the same masks). Its loss: audio {losses[i, 0]:.3f}, frame {losses[i, 1]:.3f}; held-out median "
        f"{median[0]:.3f} / {median[1]:.3f}, mean {mean[0]:.3f} / {mean[1]:.3f} (the training curves are "
        "training batches).\n"
        "Masked patches: the encoder sees only the visible patches; the decoder predicts the masked ones. The loss "
        "compares each patch normalised by its own mean and spread, and the panels undo that with the true patch's; "
        "a patch predicted as flat therefore shows as a uniform block of the true patch's mean brightness (the grey "
        "blur): the model gets coarse layout, not colour or edges."
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the masks the losses above were measured with
        return reconstruction_figure(model, held.audio[i : i + 1], held.frames[i : i + 1], path, note=note)


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


RETRIEVAL_METHODS = {  # metrics.json "retrieval" methods, in the order drawn: label, colour
    "pretrained": ("pre-trained", "tab:blue"),
    "random_init": ("random init", "tab:gray"),
    "features_linear": ("hand-made features + linear map", "tab:olive"),
    "event_times": ("event times (solvability check)", "tab:purple"),
}
RETRIEVAL_LEVELS = {  # level -> (metric keys, their axis labels, title)
    "instance": (("r1", "r5", "r10"), ("R@1", "R@5", "R@10"), "instance level: the query's own clip"),
    "class": (("p1", "p5", "p10", "map"), ("P@1", "P@5", "P@10", "mAP"), "class level: clips of the query's class"),
}
DIRECTION_TITLES = {"v2a": "video -> audio", "a2v": "audio -> video"}
OLD_DIRECTIONS = {"v2a": "video_to_audio", "a2v": "audio_to_video"}


def _mean(x: Any) -> float | None:
    """A number or a ``{"mean": ...}`` leaf -> float (None when absent)."""
    if isinstance(x, dict):
        x = x.get("mean")
    return None if x is None else float(x)


def _reference(table: Any, direction: str, key: str) -> float | None:
    """A chance / ceiling value, keyed by direction then metric or by metric alone."""
    if not isinstance(table, dict):
        return None
    if direction in table:
        table = table[direction]
    return _mean(table.get(key)) if isinstance(table, dict) else None


def retrieval_leaves(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics["retrieval"]`` as {method: {level: {direction: {metric: {"mean", "sd", "per_seed"}}}}}.

    metrics.json written before the instance / class split (``retrieval[method]["video_to_audio"]["R@k"]``, sds in
    ``retrieval_sd``) is read as instance level, so figures of older demo folders can be redrawn."""
    out = {}
    for method, levels in metrics.get("retrieval", {}).items():
        if "instance" in levels or "class" in levels:
            out[method] = levels
            continue
        sd = metrics.get("retrieval_sd", {}).get(method, {})
        inst = {}
        for d, old in OLD_DIRECTIONS.items():
            if old in levels:
                inst[d] = {
                    f"r{k}": {
                        "mean": levels[old][f"R@{k}"],
                        "sd": sd.get(old, {}).get(f"R@{k}", 0.0),
                        "per_seed": [p["retrieval"][method][old][f"R@{k}"] for p in metrics.get("per_seed", [])],
                    }
                    for k in (1, 5, 10)
                }
        out[method] = {"instance": inst}
    return out


def spread(leaf: dict[str, Any]) -> tuple[float, float, float]:
    """(mean, low, high) of a metric leaf in percent: low / high are the lowest and highest seed where there are
    several, else mean -+ sd; always clipped to [0, 100]."""
    mean = float(leaf["mean"])
    seeds = [float(v) for v in leaf.get("per_seed") or [] if v is not None]
    if len(seeds) > 1:
        low, high = min(seeds), max(seeds)
    else:
        sd = float(leaf.get("sd") or 0.0)
        low, high = mean - sd, mean + sd
    return mean, min(max(low, 0.0), 100.0), min(max(high, 0.0), 100.0)


def recalls_figure(metrics: dict[str, Any], num_clips: int):
    """The figure of :func:`plot_recalls` (returned for inspection)."""
    leaves = retrieval_leaves(metrics)
    methods = [m for m in RETRIEVAL_METHODS if m in leaves] + [m for m in leaves if m not in RETRIEVAL_METHODS]
    levels = [lv for lv in RETRIEVAL_LEVELS if any(leaves[m].get(lv) for m in methods)]
    n_seeds = len(metrics.get("seeds", [])) or 1
    chance = dict(metrics.get("chance", {}))
    if not chance.get("instance") and num_clips:  # the own clip among num_clips: k / N
        chance["instance"] = {f"r{k}": 100.0 * min(k, num_clips) / num_clips for k in (1, 5, 10)}
    ceiling = metrics.get("class_only_ceiling", {})
    fig = _figure(13, 4.2 * len(levels) + 1.0)
    legend: dict[str, Any] = {}
    for row, level in enumerate(levels):
        keys, names, level_title = RETRIEVAL_LEVELS[level]
        drawn = [m for m in methods if leaves[m].get(level)]
        width = 0.8 / max(len(drawn), 1)
        for col, direction in enumerate(DIRECTION_TITLES):
            ax = fig.add_subplot(len(levels), 2, 2 * row + col + 1)
            for j, method in enumerate(drawn):
                cells = leaves[method].get(level, {}).get(direction, {})
                got = [(i, spread(cells[k])) for i, k in enumerate(keys) if k in cells]
                if not got:
                    continue
                xs = [i + (j - (len(drawn) - 1) / 2) * width for i, _ in got]
                means = [m for _, (m, _, _) in got]
                err = [[m - lo for _, (m, lo, _) in got], [hi - m for _, (m, _, hi) in got]]
                label, colour = RETRIEVAL_METHODS.get(method, (method, None))
                ax.bar(xs, means, width, yerr=err if n_seeds > 1 else None, capsize=3, color=colour, label=label)
                for x, (m, _, hi) in zip(xs, (s for _, s in got)):
                    ax.text(x, hi + 1.0, f"{m:.1f}" if m < 10 else f"{m:.0f}", ha="center", va="bottom", fontsize=7)
            for refs, style, label in (
                (chance.get(level), {"color": "black", "linestyle": ":"}, "chance"),
                (ceiling.get(level), {"color": "tab:red", "linestyle": "--"}, "class-only ceiling"),
            ):
                values = [(i, _reference(refs, direction, k)) for i, k in enumerate(keys)]
                values = [(i, v) for i, v in values if v is not None]
                for n, (i, v) in enumerate(values):
                    ax.hlines(v, i - 0.45, i + 0.45, linewidth=1.6, label=label if n == 0 else None, **style)
            ax.set_xticks(range(len(keys)), names)
            ax.set_ylim(0, 112)
            ax.set_yticks(range(0, 101, 20))
            ax.set_ylabel("%")
            ax.set_title(f"{DIRECTION_TITLES[direction]}, {level_title}", fontsize=10)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
    spread_note = f"mean of {n_seeds} seeds, whiskers: lowest to highest seed" if n_seeds > 1 else "one seed"
    fig.suptitle(f"Held-out retrieval, {num_clips} clips ({spread_note})", fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if len(levels) > 1 else 0.1, 1, 1))
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 6), fontsize=9)
    return fig


def plot_recalls(metrics: dict[str, Any], num_clips: int, path: Path) -> Path:
    """Held-out retrieval of every method in ``metrics["retrieval"]`` (those present): instance level (R@1/5/10, the
    query's own clip) and class level (P@1/5/10, mAP), both directions, as bars (mean over seeds, whiskers lowest to
    highest seed, inside [0, 100]) with ``metrics["chance"]`` and ``metrics["class_only_ceiling"]`` as reference lines
    where metrics hold them. Values are percentages."""
    return _save(recalls_figure(metrics, num_clips), path)


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


def similarity_figure(retrieval: dict[str, RetrievalResult], labels: torch.Tensor, class_names: Sequence[str]):
    """The figure of :func:`plot_similarity` (returned for inspection): one panel per model, ONE colour scale.

    Both panels share vmin / vmax (the range over both matrices) and one colourbar, so a panel whose cosines span a
    narrow range looks flat instead of being stretched to look as structured as the other. Class names are shown in
    full (never cut), one tick per class at the centre of its block; the figure grows with the longest name.
    """
    order = labels.argsort(stable=True)
    sorted_labels = labels[order]
    borders = [i + 0.5 for i in range(len(order) - 1) if sorted_labels[i] != sorted_labels[i + 1]]
    classes = sorted_labels.unique().tolist()
    centres = [float((sorted_labels == c).nonzero().float().mean()) for c in classes]
    ticks = [class_names[c] for c in classes]
    names = [n for n in ("pretrained", "random_init") if n in retrieval]
    matrices = [retrieval[n].similarity[order][:, order] for n in names]
    vmin = min(float(m.min()) for m in matrices)
    vmax = max(float(m.max()) for m in matrices)
    label_inches = 0.1 * max(len(t) for t in ticks)  # 11 pt characters, rotated or not
    panel = max(6.0, 0.22 * len(classes))
    fig = _figure(len(names) * (panel + 0.6) + label_inches + 1.6, panel + label_inches + 1.4)
    axes = []
    for col, (name, sim) in enumerate(zip(names, matrices)):
        ax = fig.add_subplot(1, len(names), col + 1)
        axes.append(ax)
        own, same, other = block_similarity(sim, sorted_labels)
        im = ax.imshow(sim.numpy(), cmap="viridis", interpolation="nearest", vmin=vmin, vmax=vmax)
        for b in borders:
            ax.axhline(b, color="white", linewidth=0.5, alpha=0.7)
            ax.axvline(b, color="white", linewidth=0.5, alpha=0.7)
        ax.set_xticks(centres, ticks, rotation=90, fontsize=11)
        ax.set_yticks(centres, ticks if col == 0 else [], fontsize=11)
        ax.set_title(
            f"{LABELS[name]}: mean cosine own clip {own:.2f},\nsame class {same:.2f}, other classes {other:.2f}",
            fontsize=13,
        )
        ax.set_xlabel("video clip (sorted by class)", fontsize=12)
        if col == 0:
            ax.set_ylabel("audio clip (sorted by class)", fontsize=12)
    fig.suptitle(
        "Held-out audio x video cosine similarity, first seed: one colour scale for both panels "
        "(white lines: class borders)",
        fontsize=13,
    )
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.945, 0.25, 0.012, 0.5))
    fig.colorbar(im, cax=cax).set_label("cosine similarity (both panels)", fontsize=12)
    return fig


def plot_similarity(
    retrieval: dict[str, RetrievalResult], labels: torch.Tensor, class_names: Sequence[str], path: Path
) -> Path:
    """The held-out audio x video cosine similarity matrices of one seed (:func:`similarity_figure`) as a PNG."""
    return _save(similarity_figure(retrieval, labels, class_names), path)


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
                same = bool(held.labels[idx] == held.labels[q])
                colour, mark = (
                    ("tab:green", "  own clip")
                    if idx == q
                    else ("tab:orange", "  same class")
                    if same
                    else ("black", "")
                )
                ax.set_title(f"#{c}  cos {score:.2f}{mark}", fontsize=9, color=colour)
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
    """Held-out top-1 (mean over seeds +- 1 sd, clipped to [0, 100]) and training loss over fine-tuning steps,
    pre-trained vs scratch."""
    return _save(finetune_figure(results, metrics), path)


def finetune_figure(results: Sequence[SeedResult], metrics: dict[str, Any]):
    """The figure of :func:`plot_finetune_curves` (returned for inspection)."""
    fig = _figure(12, 4)
    ax = fig.add_subplot(1, 2, 1)
    n_seeds = len(results)
    for name, c in metrics["classification"].items():
        steps, acc = zip(*c["curve"]) if c["curve"] else ((), ())
        sd = None
        if n_seeds > 1:  # +- 1 sd, clipped to [0, 100] (an accuracy near 0 or 100 has a one-sided bar)
            sds = [x for _, x in c["curve_sd"]]
            sd = [[min(x, a) for a, x in zip(acc, sds)], [min(x, 100.0 - a) for a, x in zip(acc, sds)]]
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
    return fig


def per_class_spread(metrics: dict[str, Any], name: str) -> tuple[list[float], list[float], list[float], list[list]]:
    """For fine-tuning run ``name`` (``metrics["classification"]``): per class the mean top-1 over the seeds, the
    lowest and the highest seed, and every seed's value (``metrics["per_seed"]``), all within [0, 100].

    Without per-seed values the spread is mean +- sd clipped to [0, 100]. A class without held-out clips is NaN.
    """
    c = metrics["classification"][name]
    means = [math.nan if v is None else float(v) for v in c["per_class_top1"]]
    seeds = [
        p["classification"][name]["per_class_top1"] for p in metrics.get("per_seed", []) if name in p["classification"]
    ]
    if seeds:
        points = [[float(s[k]) for s in seeds if s[k] is not None] for k in range(len(means))]
        lows = [min(v) if v else math.nan for v in points]
        highs = [max(v) if v else math.nan for v in points]
    else:
        sds = [0.0 if v is None else float(v) for v in c.get("per_class_top1_sd", [0.0] * len(means))]
        points = [[] for _ in means]
        lows = [max(0.0, m - sd) for m, sd in zip(means, sds)]
        highs = [min(100.0, m + sd) for m, sd in zip(means, sds)]
    return means, lows, highs, points


def per_class_figure(metrics: dict[str, Any], class_names: Sequence[str]):
    """The figure of :func:`plot_per_class` (returned for inspection)."""
    n = len(class_names)
    n_seeds = len(metrics["seeds"])
    fig = _figure(max(8.0, 0.8 * n + 2), 5.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.4
    for j, name in enumerate(metrics["classification"]):
        means, lows, highs, points = per_class_spread(metrics, name)
        xs = [i + (j - 0.5) * width for i in range(n)]
        shown = [0.0 if math.isnan(m) else m for m in means]
        ax.bar(xs, shown, width, color=COLOURS[name], label=LABELS[name], alpha=0.85)
        for x, m in zip(xs, means):  # the mean at the foot of its bar, clear of whiskers and dots
            tall = not math.isnan(m) and m >= 8
            text = "-" if math.isnan(m) else f"{m:.0f}"
            ax.text(x, 1.5, text, ha="center", va="bottom", fontsize=7, color="white" if tall else "black")
        if n_seeds > 1:
            err = [
                [0.0 if math.isnan(m) else m - lo for m, lo in zip(means, lows)],
                [0.0 if math.isnan(m) else hi - m for m, hi in zip(means, highs)],
            ]
            ax.errorbar(xs, shown, yerr=err, fmt="none", ecolor="black", capsize=3, linewidth=1)
            px = [x + 0.08 * (s - (len(v) - 1) / 2) for x, v in zip(xs, points) for s in range(len(v))]
            py = [y for v in points for y in v]
            ax.scatter(px, py, s=9, color="black", zorder=3, label="one seed" if j == 0 and py else None)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    spread = (
        f"bars and numbers: mean of {n_seeds} seeds; whiskers: lowest to highest seed; dots: each seed"
        if n_seeds > 1
        else "one seed"
    )
    ax.set(title=f"Held-out accuracy per class after fine-tuning\n({spread})", ylabel="top-1 accuracy (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_per_class(metrics: dict[str, Any], class_names: Sequence[str], path: Path) -> Path:
    """Held-out accuracy of every class after fine-tuning, pre-trained vs from scratch: mean over seeds with the
    lowest-to-highest seed as whiskers (inside [0, 100] by construction) and every seed as a dot."""
    return _save(per_class_figure(metrics, class_names), path)


# ---------------------------------------------------------------------------------------------------------------
# the page
