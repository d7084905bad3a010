"""The demo's report: :func:`write_report` draws every figure (:mod:`cavmae.demo.figures`) from the demo's plain
results and writes ``report.md``, which shows them with the measured numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from cavmae.demo.figures import (
    block_similarity,
    confusable_class_pairs,
    plot_examples,
    plot_finetune_curves,
    plot_per_class,
    plot_pretrain_losses,
    plot_recalls,
    plot_reconstruction,
    plot_retrieval_examples,
    plot_similarity,
)

if TYPE_CHECKING:
    from cavmae.demo.heldout import DemoData, HeldOut, SeedResult


def pm(mean: float, sd: float, n: int) -> str:
    """'36.5 ± 2.1' over several seeds, '36.5' for one."""
    return f"{mean:.1f} ± {sd:.1f}" if n > 1 else f"{mean:.1f}"


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _r(metrics: dict, name: str, direction: str) -> str:
    m, sd, n = metrics["retrieval"][name][direction], metrics["retrieval_sd"][name][direction], len(metrics["seeds"])
    return " / ".join(pm(m[k], sd[k], n) for k in ("R@1", "R@5", "R@10"))


def similarity_caption(blocks: dict[str, list[float]], pairs: dict[str, Any] | None = None) -> str:
    """What the matrices show, from their numbers: own clip vs same class vs other classes, and (``pairs``, from
    :func:`cavmae.demo.figures.confusable_class_pairs` on the pre-trained matrix) the class pairs as bright as a
    class with itself, which a reader sees as off-diagonal blocks."""
    (po, ps, pr), (ro, rs, rr) = blocks["pretrained"], blocks["random_init"]
    text = (
        "Mean cosine similarity of a clip's audio with its own video / with other clips of its class / with clips "
        f"of other classes: pre-trained {po:.2f} / {ps:.2f} / {pr:.2f}, random init {ro:.2f} / {rs:.2f} / {rr:.2f}. "
    )
    if po - pr > 0.05 and ps - pr < 0.3:
        text += (
            "The pre-trained model scores a clip's own video and same-class videos above other classes on average, "
            "but the contrast is modest: several off-diagonal blocks are nearly as bright as diagonal ones (classes "
            "whose sounds or pictures are alike). Retrieval depends on each query's ranking, which the recall "
            "figure measures, not on the absolute brightness of a block."
        )
    elif po - pr > 0.05:
        text += "Same-class blocks stand out clearly from the rest."
    else:
        text += "The matrices show no clear class structure."
    if pairs and pairs["brightest_off_diagonal"]:
        named = ", ".join(f"{a} / {v} {x:.2f}" for a, v, x in pairs["brightest_off_diagonal"])
        text += (
            f" Not every bright block is on the diagonal: {pairs['off_diagonal_at_least_same_class']} of the "
            f"{pairs['off_diagonal_blocks']} pairs of different classes are, on average, at least as similar as a "
            f"class with itself ({pairs['same_class_block']:.2f}); the brightest (audio class / video class, mean "
            f"cosine): {named}. A query from one class of such a pair ranks clips of the other high."
        )
    return text


def per_seed_table(metrics: dict[str, Any]) -> list[str]:
    """Every seed's headline numbers (the raw runs behind the means)."""
    if len(metrics["seeds"]) < 2:
        return []
    lines = [
        "## Every seed",
        "",
        "| seed | v->a R@5 pre-trained / random | a->v R@5 pre-trained / random | top-1 fine-tuned / scratch "
        "| CPU seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in metrics["per_seed"]:
        r, c = p["retrieval"], p["classification"]
        lines.append(
            f"| {p['seed']} | {r['pretrained']['video_to_audio']['R@5']:.1f} / "
            f"{r['random_init']['video_to_audio']['R@5']:.1f} | {r['pretrained']['audio_to_video']['R@5']:.1f} / "
            f"{r['random_init']['audio_to_video']['R@5']:.1f} | {c['pretrained']['top1']:.1f} / "
            f"{c['scratch']['top1']:.1f} | {p['timings_s'].get('cpu', math.nan):.0f} |"
        )
    return [*lines, ""]


def markdown(metrics: dict[str, Any], figures: dict[str, Path], out: Path) -> str:
    """The text of report.md (figures linked relative to ``out``)."""
    s, d, c = metrics["settings"], metrics["data"], metrics["classification"]
    rel = {k: p.relative_to(out).as_posix() for k, p in figures.items()}
    n_seeds = len(metrics["seeds"])
    per_seed = metrics["per_seed"]
    gain, gain_sd = _mean_sd(
        [p["classification"]["pretrained"]["top1"] - p["classification"]["scratch"]["top1"] for p in per_seed]
    )
    ratios = [
        _mean_sd(
            [
                p["retrieval"]["pretrained"][x]["R@5"] / max(p["retrieval"]["random_init"][x]["R@5"], 1e-9)
                for p in per_seed
            ]
        )
        for x in ("video_to_audio", "audio_to_video")
    ]
    t = metrics["timings_s"]
    p0, p1 = metrics["pretraining"]["start"], metrics["pretraining"]["end"]
    # an early point of the fine-tuning curves: where a pre-trained start shows most
    early = min((step for step, _ in c["pretrained"]["curve"] if step >= s["finetune_steps"] / 3), default=0)
    early_acc = {
        name: (
            dict(map(tuple, c[name]["curve"])).get(early, math.nan),
            dict(map(tuple, c[name]["curve_sd"])).get(early, 0.0),
        )
        for name in ("pretrained", "scratch")
    }
    seeds = metrics["seeds"]
    command = f"cavmae demo --seed {seeds[0]}" + (" --quick" if metrics["quick"] else "")
    if n_seeds != (1 if metrics["quick"] else 3):
        command += f" --seeds {n_seeds}"
    if metrics["backbone"] != "vit":
        command += f" --backbone {metrics['backbone']}"
    lines = [
        "# cavmae demo report",
        "",
        (f"Seeds {', '.join(map(str, seeds))}" if n_seeds > 1 else f"Seed {seeds[0]}")
        + f", backbone `{metrics['backbone']}`{', quick mode' if metrics['quick'] else ''}; "
        f"{t.get('total_before_report', 0):.0f} s from the first clip to the last evaluation. "
        f"Reproduce with `{command}`.",
        "",
        "## Headline",
        "",
        f"On {d['heldout_clips']} held-out clips that no model saw during training"
        + (
            f"; mean ± sample standard deviation over {n_seeds} training seeds (the same clips; each seed its own "
            "initialisation, masks and data order; every seed's numbers are in the last section):"
            if n_seeds > 1
            else ":"
        ),
        "",
        "| retrieval, R@1 / R@5 / R@10 (%) | pre-trained | random init | R@5 ratio |",
        "| --- | --- | --- | --- |",
        f"| video -> audio | {_r(metrics, 'pretrained', 'video_to_audio')} | "
        f"{_r(metrics, 'random_init', 'video_to_audio')} | {pm(*ratios[0], n_seeds)}x |",
        f"| audio -> video | {_r(metrics, 'pretrained', 'audio_to_video')} | "
        f"{_r(metrics, 'random_init', 'audio_to_video')} | {pm(*ratios[1], n_seeds)}x |",
        "",
        f"Chance R@5 is {metrics['retrieval_chance_R@5']:.1f} %.",
        "",
        *(
            ["Look at and listen to what it retrieves: [retrieval gallery](gallery/index.html).", ""]
            if (out / "gallery" / "index.html").is_file()
            else []
        ),
        f"| classification after {s['finetune_steps']} fine-tuning steps | top-1 (%) |",
        "| --- | --- |",
        f"| fine-tuned from the pre-trained model | {pm(c['pretrained']['top1'], c['pretrained']['top1_sd'], n_seeds)}"
        " |",
        f"| trained from scratch | {pm(c['scratch']['top1'], c['scratch']['top1_sd'], n_seeds)} |",
        f"| difference | {'+' if gain >= 0 else ''}{pm(gain, gain_sd, n_seeds)} points |",
        "",
        f"Chance is {100 / len(d['classes']):.1f} % ({len(d['classes'])} classes). One held-out clip is "
        f"{100 / max(d['heldout_clips'], 1):.1f} points of the overall accuracy and about "
        f"{100 * len(d['classes']) / max(d['heldout_clips'], 1):.0f} points of one class's.",
        "",
        "## 1. Data",
        "",
        f"{s['num_clips']} synthetic clips were written as real MP4 files (H.264 video, AAC audio, {s['duration']} s, "
        f"{s['frame_size']} px) in `clips/`, with a VGGSound-style CSV whose split column puts {d['train_clips']} "
        f"clips in `train` and {d['heldout_clips']} in `test` (the held-out split), then prepared into WebDataset "
        "shards in `shards/` exactly as `cavmae prepare` does for real videos. Each of the "
        f"{len(d['classes'])} classes pairs a sound (timbre and base pitch) with a picture (colour, shape, motion); "
        "within a clip the object's height sets the pitch, its size the loudness, and it is visible exactly while "
        "its sound plays. Pre-training never sees the labels.",
        "",
        f"![one clip per class]({rel['examples']})",
        "",
        "## 2. Pre-training",
        "",
        f"A tiny CAV-MAE (dim 64, 2 + 2 + 1 encoder blocks, decoder 2 x 32; {s['audio_length']} fbank frames x "
        f"{s['num_mel_bins']} mel bins, {s['frame_size']} px frames) trained for {s['pretrain_steps']} steps of "
        f"{s['pretrain_batch']} clips from the train shards (`runs/seed<N>/pretrain/`). From the first to the last "
        f"5 % of the steps ({'mean over seeds' if n_seeds > 1 else 'one seed'}), the masked reconstruction loss went "
        f"from {p0['loss_rec_a']:.2f} to {p1['loss_rec_a']:.2f} (audio) "
        f"and from {p0['loss_rec_v']:.2f} to {p1['loss_rec_v']:.2f} (video), the contrastive loss from "
        f"{p0['loss_c']:.2f} to {p1['loss_c']:.2f} (chance: ln {s['pretrain_batch']} = "
        f"{math.log(s['pretrain_batch']):.2f}) and the in-batch matching accuracy from {100 * p0['acc_c']:.0f} % to "
        f"{100 * p1['acc_c']:.0f} % (chance {100 / s['pretrain_batch']:.0f} %).",
        "",
        f"![pre-training losses]({rel['pretrain_losses']})",
        "",
        "Reconstruction of a held-out clip by the pre-trained model (first seed; 75 % of the patches of each "
        "modality masked). The third column shows the model's prediction on the masked patches only (the visible "
        "patches, which the model was given, are left blank), the fourth its absolute error there. Spectrogram "
        "colours are normalised log-mel units on one scale for all three panels; the error maps are in the same "
        "units (frames: ImageNet-normalised, averaged over RGB):",
        "",
        f"![reconstruction]({rel['reconstruction']})",
        "",
        "## 3. Retrieval",
        "",
        "Each held-out clip's audio is embedded by the audio stream and its middle frame by the video stream "
        "(unmasked, mean-pooled, L2-normalised); a query's true match is its own clip. The random-init model is "
        "the same network at step 0 of pre-training.",
        "",
        f"![recall]({rel['recalls']})",
        "",
        "The similarity matrices of the first seed, clips sorted by class. "
        + similarity_caption(metrics["similarity_blocks"], metrics.get("similar_class_pairs")),
        "",
        f"![similarity matrices]({rel['similarity']})",
        "",
        f"![video to audio examples]({rel['examples_v2a']})",
        "",
        f"![audio to video examples]({rel['examples_a2v']})",
        "",
        "## 4. Fine-tuning",
        "",
        f"The classifier (encoder + LayerNorm + linear head, audio-visual) trained for {s['finetune_steps']} steps "
        f"of {s['finetune_batch']} labelled clips from the train shards, once starting from the pre-trained "
        "encoder and once from a random initialisation, with the same seed, data order and learning rates "
        f"(`runs/seed<N>/finetune_pretrained/`, `runs/seed<N>/finetune_scratch/`). Held-out accuracy after {early} "
        f"steps: {pm(*early_acc['pretrained'], n_seeds)} % from the pre-trained encoder, "
        f"{pm(*early_acc['scratch'], n_seeds)} % from scratch.",
        "",
        f"![fine-tuning curves]({rel['finetune_curves']})",
        "",
        f"![per-class accuracy]({rel['per_class']})",
        "",
        "## Files",
        "",
        "- `metrics.json`: every number above, the settings and the time of each stage",
        "- `figures/`: the figures of this page",
        "- `runs/seed<N>/*/`: each seed's training runs (`config.yaml`, `metrics.jsonl`, `val_metrics.jsonl`, "
        "`model/`); load a model with `cavmae.load_model(" + f'"runs/seed{seeds[0]}/pretrain/model")`',
        "- `clips/`, `shards/`: the synthetic videos and the shards made from them",
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if not k.startswith("total")) + ".",
        "",
        *per_seed_table(metrics),
    ]
    return "\n".join(lines)


def write_report(
    out: Path,
    metrics: dict[str, Any],
    data: DemoData,
    held: HeldOut,
    pretrained: torch.nn.Module,
    results: Sequence[SeedResult],
) -> Path:
    """Draw every figure into ``out/figures`` and write ``out/report.md``; returns the report's path.

    Single-seed figures (reconstruction, similarity, retrieval examples) show the first seed; the others every seed.
    """
    fig_dir = out / "figures"
    names = data.class_names
    first = results[0]
    metrics["similarity_blocks"] = {
        name: [round(x, 3) for x in block_similarity(r.similarity, held.labels)] for name, r in first.retrieval.items()
    }
    sim = first.retrieval["pretrained"].similarity
    metrics["similar_class_pairs"] = confusable_class_pairs(sim, held.labels, names)
    jobs = {
        "examples": lambda p: plot_examples(held, names, p),
        "pretrain_losses": lambda p: plot_pretrain_losses(
            [r.runs_dir / "pretrain" for r in results], metrics["settings"]["pretrain_batch"], p
        ),
        "reconstruction": lambda p: plot_reconstruction(pretrained, held, p, seed=metrics["seeds"][0]),
        "recalls": lambda p: plot_recalls(metrics, len(held.keys), p),
        "similarity": lambda p: plot_similarity(first.retrieval, held.labels, names, p),
        "examples_v2a": lambda p: plot_retrieval_examples(sim, held, names, "video", p),
        "examples_a2v": lambda p: plot_retrieval_examples(sim, held, names, "audio", p),
        "finetune_curves": lambda p: plot_finetune_curves(results, metrics, p),
        "per_class": lambda p: plot_per_class(metrics, names, p),
    }
    figures = {}
    for name, draw in tqdm(jobs.items(), desc="drawing figures", unit="figure", dynamic_ncols=True):
        figures[name] = Path(draw(fig_dir / f"{name}.png"))
    report = out / "report.md"
    report.write_text(markdown(metrics, figures, out))
    return report
