"""``cavmae info [--config RECIPE] [overrides] [--kind K] | --model PATH``: resolved config and parameter counts."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="recipe YAML (default: the built-in CAV-MAE base)")
    p.add_argument("--model", help="a model directory or public .pth to describe instead")
    p.add_argument(
        "--kind",
        choices=["auto", "pretrain", "classifier"],
        default="auto",
        help="model to build from the recipe; auto: the classifier for a fine-tuning recipe (one with a finetune "
        "section), else the pre-training model",
    )
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. model.backbone=vit")


def model_kind_for(kind: str, task: str) -> str:
    """``--kind auto`` follows the recipe's task: fine-tuning builds the classifier."""
    if kind != "auto":
        return kind
    return "classifier" if task == "finetune" else "pretrain"


def run(args: argparse.Namespace) -> int:
    """Errors escape to cavmae.cli: a config error is exit 2, an unreadable model exit 1."""
    if args.model and (args.config or args.overrides):
        log.error("give either --model (a saved model) or --config / overrides (a recipe), not both")
        return 2
    from cavmae.config import load_config

    # the recipe is checked before torch loads: a typo answers at once
    cfg = None if args.model else load_config(args.config, args.overrides)

    import yaml

    from cavmae.models.weights import build_model, describe, load_model

    if args.model:
        print(json.dumps(describe(load_model(args.model)), indent=2))
        return 0
    model = build_model(model_kind_for(args.kind, cfg.task), cfg.model)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    print(json.dumps(describe(model), indent=2))
    return 0
