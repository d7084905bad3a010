"""``cavmae convert IN OUT [--to auto|cavmae|official] [--from auto|mae]``: convert checkpoints between layouts."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="our model directory, a public CAV-MAE .pth, or (with --from mae) an MAE ViT-B .pth")
    p.add_argument("output", help="a directory (--to cavmae) or a .pth file (--to official)")
    p.add_argument(
        "--to",
        choices=["auto", "cavmae", "official"],
        default="auto",
        help="output layout: our model directory or a public CAV-MAE .pth; auto: official for a .pth / .pt OUT",
    )
    p.add_argument(
        "--from",
        dest="source",
        choices=["auto", "mae"],
        default="auto",
        help="mae: initialise a CAV-MAE pre-training model from an ImageNet MAE checkpoint",
    )
    p.add_argument("--config", help="with --from mae: recipe giving the architecture (default: the CAV-MAE base)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted config overrides, with --from mae")


def output_layout(to: str, output: str) -> str:
    """``--to auto``: a ``.pth`` / ``.pt`` output is the public layout, anything else our model directory."""
    if to != "auto":
        return to
    return "official" if Path(output).suffix.lower() in (".pth", ".pt") else "cavmae"


def run(args: argparse.Namespace) -> int:
    """Errors escape to cavmae.cli: a config error is exit 2, an unreadable checkpoint exit 1."""
    from cavmae.config import Config, load_config
    from cavmae.models.weights import init_from_mae, load_model, save_official, save_pretrained

    to = output_layout(args.to, args.output)
    if args.source != "mae" and (args.config or args.overrides):
        log.error("--config and overrides choose the architecture of --from mae; a checkpoint brings its own")
        return 2
    if args.source == "mae":
        from cavmae.models.cavmae import CAVMAE

        cfg = load_config(args.config, args.overrides)
        model = CAVMAE(cfg.model)
        kept = init_from_mae(model, args.input)
        log.info("kept their own init: %s", ", ".join(kept))
    else:
        model = load_model(args.input)
        cfg = Config(model=model.cfg)
    if to == "cavmae":
        save_pretrained(model, args.output, cfg)
    else:
        save_official(model, Path(args.output))
    log.info("wrote %s (%s layout)", args.output, to)
    return 0
