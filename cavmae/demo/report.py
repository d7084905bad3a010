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


METHODS = {  # metrics.json's retrieval methods, as the report names them
    "pretrained": "pre-trained",
    "random_init": "random init",
    # --recipe sync: the rows above are scored per frame (diagonal_mean); these score one pair per clip
    "pretrained_clip": "pre-trained, one pair per clip (middle frame and its window)",
    "random_init_clip": "random init, one pair per clip",
    "features_linear": "hand-made features + linear map (CCA)",
    "event_times": "event times (from events.json)",
}
# the methods that depend on the training seed
TRAINED = ("pretrained", "random_init", "pretrained_clip", "random_init_clip")
LEVEL_KEYS = {"instance": ("r1", "r5", "r10", "median_rank"), "class": ("p1", "p5", "p10", "map")}
DIRECTIONS = {"v2a": "video -> audio", "a2v": "audio -> video"}


def _cell(values: dict, keys: Sequence[str], n_seeds: int) -> str:
    """'R@1 / R@5 / ...' of one method and direction: mean ± sd leaves (several seeds) or plain numbers."""
    parts = []
    for k in keys:
        v = values[k]
        parts.append(pm(v["mean"], v["sd"], n_seeds) if isinstance(v, dict) else f"{v:.1f}")
    return " / ".join(parts)


def retrieval_tables(metrics: dict[str, Any]) -> list[str]:
    """The instance- and class-level tables: every method, then chance (and, at the instance level, the ceiling)."""
    n_seeds = len(metrics["seeds"])
    lines = []
    for level, header in (
        ("instance", "instance level (own pair): R@1 / R@5 / R@10 (%) / median rank"),
        ("class", "class level (same class, own pair left out): P@1 / P@5 / P@10 / mAP (%)"),
    ):
        keys = LEVEL_KEYS[level]
        lines += [f"| {header} | video -> audio | audio -> video |", "| --- | --- | --- |"]
        for name, label in METHODS.items():
            if name not in metrics["retrieval"]:  # a method of another recipe
                continue
            result = metrics["retrieval"][name]
            if result is None:
                why = metrics.get("retrieval_unavailable", {}).get(name, "not run")
                lines.append(f"| {label} | unavailable: {why} | |")
                continue
            n = n_seeds if name in TRAINED else 1  # a baseline's value is the same for every seed: no ± 0
            lines.append(
                f"| {label} | {_cell(result[level]['v2a'], keys, n)} | {_cell(result[level]['a2v'], keys, n)} |"
            )
        chance = metrics["chance"][level]
        lines.append(f"| chance (random ranking) | {_cell(chance['v2a'], keys, 1)} | {_cell(chance['a2v'], keys, 1)} |")
        if level == "instance":
            ceiling = metrics["class_only_ceiling"]["instance"]
            lines.append(
                f"| class-only ceiling | {_cell(ceiling['v2a'], keys, 1)} | {_cell(ceiling['a2v'], keys, 1)} |"
            )
        lines.append("")
    if metrics.get("scoring", "clip") != "clip":  # --recipe sync
        lines += [
            f"The pre-trained and random-init rows score a pair of clips per frame ({metrics['scoring']}: the mean "
            "over frames k of the cosine of frame k's audio window and frame k), the rows 'one pair per clip' by "
            "the middle frame and its window alone.",
            "",
        ]
    return lines


def ceiling_statement(metrics: dict[str, Any]) -> str:
    """Whether pre-training beats the class-only ceiling at the instance level, and what it learns, from the numbers:
    "beats" means the mean over seeds minus one sd is above the ceiling (R@1 and R@5, both directions)."""
    ret, ceiling = metrics["retrieval"], metrics["class_only_ceiling"]["instance"]
    pre, cls_chance = ret["pretrained"], metrics["chance"]["class"]
    verdicts = []
    for d in DIRECTIONS:
        for k in ("r1", "r5"):
            v, c = pre["instance"][d][k], ceiling[d][k]
            verdicts.append((d, k, v["mean"], v["sd"], c, v["mean"] - v["sd"] > c, v["mean"] + v["sd"] < c))
    above = [x for x in verdicts if x[5]]
    below = [x for x in verdicts if x[6]]
    n_seeds = len(metrics["seeds"])
    detail = "; ".join(
        f"{DIRECTIONS[d]} R@{k[1:]} {pm(m, sd, n_seeds)} vs {c:.1f}" for d, k, m, sd, c, _, _ in verdicts
    )
    if len(above) == len(verdicts):
        verdict = (
            "**Pre-training beats the class-only ceiling at the instance level**: it tells apart clips of the same "
            "class, so it uses what happens in the clip, not only its class"
        )
    elif below and not above:
        verdict = (
            "**Pre-training does not beat the class-only ceiling at the instance level**: it ranks a clip's own "
            "pair lower than an embedding that knows only the classes would, so its instance retrieval shows no "
            "use of what tells two clips of one class apart"
        )
    else:
        verdict = (
            "**Pre-training is level with the class-only ceiling at the instance level** (within one sd, or above "
            "it in some directions and not in others): it shows no clear use of what happens in a clip beyond its "
            "class"
        )
    p1 = [pre["class"][d]["p1"]["mean"] for d in DIRECTIONS]
    text = f"{verdict} (pre-trained{' mean ± sd' if n_seeds > 1 else ''} vs ceiling: {detail}). "
    text += (
        f"At the class level it finds a clip of the query's class first in {p1[0]:.0f} % (video -> audio) and "
        f"{p1[1]:.0f} % (audio -> video) of the queries, where a random ranking does so in "
        f"{cls_chance['v2a']['p1']:.0f} %"
    )
    features = ret.get("features_linear")
    if features is not None:
        r1 = [features["instance"][d]["r1"]["mean"] for d in DIRECTIONS]
        top = max(ceiling[d]["r1"] for d in DIRECTIONS)
        side = "above" if min(r1) > top else "not above"
        text += (
            f". The hand-made features with a linear map reach R@1 {r1[0]:.1f} / {r1[1]:.1f} %, {side} the "
            f"ceiling's {top:.1f} %"
        )
    events = ret.get("event_times")
    if events is not None:
        r1 = [events["instance"][d]["r1"]["mean"] for d in DIRECTIONS]
        text += (
            f". The data allows far more: matching the event shown in the frame with the event sounding at the "
            f"frame's time (from the generator's event times) finds the own pair first in {r1[0]:.0f} % / "
            f"{r1[1]:.0f} % of the queries, so instance matching is solvable here, through when things happen"
        )
    return text + "."


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
        "| seed | v->a R@1 / R@5 pre-trained | a->v R@1 / R@5 pre-trained | v->a / a->v P@1 pre-trained "
        "| top-1 fine-tuned / scratch | CPU seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in metrics["per_seed"]:
        inst, cls, c = (
            p["retrieval"]["pretrained"]["instance"],
            p["retrieval"]["pretrained"]["class"],
            p["classification"],
        )
        lines.append(
            f"| {p['seed']} | {inst['v2a']['r1']:.1f} / {inst['v2a']['r5']:.1f} | {inst['a2v']['r1']:.1f} / "
            f"{inst['a2v']['r5']:.1f} | {cls['v2a']['p1']:.1f} / {cls['a2v']['p1']:.1f} | "
            f"{c['pretrained']['top1']:.1f} / {c['scratch']['top1']:.1f} | {p['timings_s'].get('cpu', math.nan):.0f} |"
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
    if metrics.get("recipe", "cavmae") != "cavmae":
        command += f" --recipe {metrics['recipe']}"
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
        *retrieval_tables(metrics),
        "Instance level: a query must find its own clip's other modality among all held-out clips. Class level: "
        "the own clip is left out and a hit is any clip of the query's class. The class-only ceiling is the best "
        "instance retrieval an embedding that knows only each clip's class can expect: it ranks the clips of the "
        "query's class first but cannot order them, so the own pair is anywhere among them. The two baselines "
        "train no network and are the same for every seed.",
        "",
        ceiling_statement(metrics),
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
        f"{len(d['classes'])} classes pairs a sound (timbre and base pitch) with a picture (colour, shape, motion). "
        "On top of its class, each clip holds a few events at random times (an object that appears while a sound "
        "plays, its colour, shape and size heard as pitch, timbre and loudness; `clips/events.json`): two clips of "
        "one class differ only in what happens when. Pre-training never sees the labels.",
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
        "This is one held-out clip under one random mask, while the curves above average the training batches over "
        "many clips and masks, so its error can sit above or below their last values. The decoder predicts the "
        "mean of what a masked patch could hold given the visible ones (what a squared error rewards): a patch "
        "whose content the visible ones do not reveal comes out as a blur of the likely colours.",
        "",
        "## 3. Retrieval",
        "",
        "Each held-out clip's audio is embedded by the audio stream and its middle frame by the video stream "
        "(unmasked, mean-pooled, L2-normalised); a query's true match is its own clip. The random-init model is "
        "the same network at step 0 of pre-training. The feature baseline learns no network: per-band means, "
        "spreads and the loudness envelope of the fbank and the spectrum around the middle frame's time, and "
        "colour moments, histograms and a 4 x 4 grid of mean colours of the frame, matched by a CCA fitted on "
        "the training clips. The event-times row reads the generator's ground truth (`clips/events.json`), not "
        "the decoded data: it matches the class and the event shown in the frame with the event sounding at the "
        "frame's time, which checks that the pairs can be told apart at all.",
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
