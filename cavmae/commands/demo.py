"""``cavmae demo [--out DIR] [--backbone vit|mamba] [--quick] [--seed N]``: the whole pipeline on synthetic videos,
ending in a report (see cavmae.demo.pipeline)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="runs/demo", help="output folder (default: runs/demo; an earlier demo there is replaced)"
    )
    p.add_argument("--backbone", default="vit", help="encoder block: vit or mamba (model.backbone)")
    p.add_argument("--quick", action="store_true", help="a shorter demo (about a minute; what CI runs)")
    p.add_argument("--seed", type=int, default=0, help="seeds the clips, the initialisations and the data order")


def run(args: argparse.Namespace) -> int:
    from cavmae.config import ConfigError
    from cavmae.demo.pipeline import DemoError, run_demo

    try:
        result = run_demo(args.out, backbone=args.backbone, quick=args.quick, seed=args.seed)
    except (DemoError, ConfigError) as e:
        log.error("%s", e)
        return 2
    m = result.metrics
    pre, rnd = m["retrieval"]["pretrained"], m["retrieval"]["random_init"]
    cls = m["classification"]
    print(f"\nreport: {result.report.resolve()}")
    data = m["data"]
    print(f"held-out clips: {data['heldout_clips']} ({len(data['classes'])} classes); {m['timings_s']['total']:.0f} s")
    for d, name in (("video_to_audio", "video->audio"), ("audio_to_video", "audio->video")):
        print(f"  retrieval {name} R@5: pre-trained {pre[d]['R@5']:.1f} %  vs  random init {rnd[d]['R@5']:.1f} %")
    print(
        f"  classification after {cls['pretrained']['steps']} steps: fine-tuned {cls['pretrained']['top1']:.1f} %"
        f"  vs  from scratch {cls['scratch']['top1']:.1f} %"
    )
    return 0
