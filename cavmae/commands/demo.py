"""``cavmae demo [--out DIR] [--backbone vit|mamba] [--recipe cavmae|sync] [--quick] [--seed N] [--seeds K]
[--jobs J]``: the whole pipeline on synthetic videos, ending in a report (see cavmae.demo.pipeline)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="runs/demo", help="output folder (default: runs/demo; an earlier demo there is replaced)"
    )
    p.add_argument("--backbone", default="vit", help="encoder block: vit or mamba (model.backbone)")
    p.add_argument(
        "--recipe",
        default="cavmae",
        help="what pre-training trains: cavmae, or sync (CAV-MAE Sync at the same size: 16-frame shards, one frame "
        "and its audio window per pair, global tokens and registers; retrieval scored per frame and per clip)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a shorter demo: fewer clips, classes and steps, one seed (what CI runs)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the clips, the initialisations and the data order")
    p.add_argument(
        "--seeds",
        type=int,
        help="training replicas on the same clips, seeds SEED, SEED+1, ... (default: 3; with --quick 1); "
        "the report gives mean ± sd",
    )
    p.add_argument("--jobs", type=int, help="replicas trained at a time, one process each (default: CPU cores)")


def run(args: argparse.Namespace) -> int:
    from cavmae.demo.settings import check_recipes

    # the recipes the runs start from, before torch loads (a ConfigError is exit 2)
    check_recipes(args.backbone, args.recipe)

    from cavmae.demo.pipeline import DemoError, check_backbone, run_demo
    from cavmae.train import TrainingStopped

    if args.seeds is not None and args.seeds < 1:
        log.error("--seeds must be at least 1, got %d", args.seeds)
        return 2
    try:
        check_backbone(args.backbone)
    except DemoError as e:  # an unknown backbone
        log.error("%s", e)
        return 2
    try:
        result = run_demo(
            args.out,
            backbone=args.backbone,
            quick=args.quick,
            seed=args.seed,
            seeds=args.seeds,
            jobs=args.jobs,
            recipe=args.recipe,
        )
    except (DemoError, TrainingStopped) as e:  # --out in the way (not an earlier demo), or a run diverged
        log.error("%s", e)
        return 1
    m = result.metrics
    pre, rnd = m["retrieval"]["pretrained"]["instance"], m["retrieval"]["random_init"]["instance"]
    cls = m["classification"]
    n = len(m["seeds"])

    def pm(mean: float, sd: float) -> str:
        return f"{mean:.1f} ± {sd:.1f} %" if n > 1 else f"{mean:.1f} %"

    print(f"\nreport: {result.report.resolve()}")
    data = m["data"]
    print(
        f"held-out clips: {data['heldout_clips']} ({len(data['classes'])} classes); {n} seed(s)"
        f"{' (mean ± sd)' if n > 1 else ''}; {m['timings_s']['total']:.0f} s"
    )
    ceiling = m["class_only_ceiling"]["instance"]
    for d, name in (("v2a", "video->audio"), ("a2v", "audio->video")):
        print(
            f"  retrieval {name} R@5: pre-trained {pm(pre[d]['r5']['mean'], pre[d]['r5']['sd'])}"
            f"  vs  random init {pm(rnd[d]['r5']['mean'], rnd[d]['r5']['sd'])}"
            f"  (class-only ceiling {ceiling[d]['r5']:.1f} %)"
        )
    c_pre, c_scr = cls["pretrained"], cls["scratch"]
    print(
        f"  classification after {c_pre['steps']} steps: fine-tuned {pm(c_pre['top1'], c_pre['top1_sd'])}"
        f"  vs  from scratch {pm(c_scr['top1'], c_scr['top1_sd'])}"
    )
    return 0
