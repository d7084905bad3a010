"""``cavmae convert IN OUT --to cavmae|official [--from auto|cavmae|official|mae]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cavmae.config import Config, load_config
from cavmae.models.weights import (
    CheckpointError,
    init_from_mae,
    load_model,
    save_official,
    save_pretrained,
)

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="our model directory, a public CAV-MAE .pth, or (with --from mae) an MAE ViT-B .pth")
    p.add_argument("output", help="a directory (--to cavmae) or a .pth file (--to official)")
    p.add_argument("--to", choices=["cavmae", "official"], default="cavmae")
    p.add_argument(
        "--from",
        dest="source",
        choices=["auto", "mae"],
        default="auto",
        help="mae: initialise a CAV-MAE pre-training model from an ImageNet MAE checkpoint",
    )
    p.add_argument("--config", help="with --from mae: recipe giving the architecture (default: CAV-MAE base)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted config overrides, with --from mae")


def run(args: argparse.Namespace) -> int:
    try:
        if args.source == "mae":
            from cavmae.models.cavmae import CAVMAE

            cfg = load_config(args.config, args.overrides)
            model = CAVMAE(cfg.model)
            kept = init_from_mae(model, args.input)
            log.info("kept their own init: %s", ", ".join(kept))
        else:
            model = load_model(args.input)
            cfg = Config(model=model.cfg)
        if args.to == "cavmae":
            save_pretrained(model, args.output, cfg)
        else:
            save_official(model, Path(args.output))
    except CheckpointError as e:
        log.error("%s", e)
        return 1
    log.info("wrote %s (%s layout)", args.output, args.to)
    return 0
