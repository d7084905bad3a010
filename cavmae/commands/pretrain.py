"""``cavmae pretrain --config RECIPE [--resume auto|DIR] [key=value ...]``: CAV-MAE pre-training.

The same code runs under ``python -m cavmae.cli pretrain``, ``accelerate launch scripts/pretrain.py`` and
``torchrun scripts/pretrain.py``: Accelerate reads the process layout from the launcher's environment.
"""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="recipe YAML (default: the built-in CAV-MAE base recipe)")
    p.add_argument(
        "--resume",
        help="'auto' (the newest complete, readable checkpoint of train.out_dir; none yet: a fresh start, with a "
        "warning) or a checkpoint directory",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="dotted config overrides, anywhere after the command: train.epochs=5"
    )


def run(args: argparse.Namespace, task: str = "pretrain", logger: logging.Logger = log) -> int:
    """Train ``task``. A config error is exit 2 and a missing or unusable input (init checkpoint, shards) exit 1,
    both raised to cavmae.cli; a run that stopped (diverged) is exit 1."""
    from cavmae.config import load_config

    main_process = int(os.environ.get("RANK", "0")) == 0
    if not main_process:  # one copy of the log is enough; warnings and errors still come from every process
        logging.getLogger().setLevel(logging.WARNING)
    # The config first, before torch loads (seconds): a typo in a key or value answers at once.
    cfg = load_config(args.config, args.overrides, task=task)

    from cavmae.train import TrainingStopped, train

    try:
        out_dir = train(cfg, task, resume=args.resume or "")
    except TrainingStopped as e:
        logger.error("%s", e)
        return 1
    if main_process:
        run_dir = out_dir.resolve()
        print(f"run directory: {run_dir}  (model: {run_dir / 'model'}, metrics: {run_dir / 'metrics.jsonl'})")
    return 0
