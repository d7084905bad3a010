"""``cavmae info [--config RECIPE] [overrides] | --model PATH``: resolved config and parameter counts."""

from __future__ import annotations

import argparse
import json

import yaml

from cavmae.config import load_config
from cavmae.models.weights import build_model, describe, load_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="recipe YAML (default: the built-in CAV-MAE base)")
    p.add_argument("--model", help="a model directory or public .pth to describe instead")
    p.add_argument("--kind", choices=["pretrain", "classifier"], default="pretrain")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. model.backbone=vit")


def run(args: argparse.Namespace) -> int:
    if args.model:
        print(json.dumps(describe(load_model(args.model)), indent=2))
        return 0
    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    print(json.dumps(describe(build_model(args.kind, cfg.model)), indent=2))
    return 0
