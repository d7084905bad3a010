"""``cavmae finetune --config RECIPE [--resume auto|DIR] [key=value ...]``: fine-tune a classifier.

Start from a pre-trained model with ``train.init=runs/pretrain/model`` (ours) or a public CAV-MAE ``.pth``. The
recipe's ``finetune`` section holds what only fine-tuning reads (the defaults if it has none).
"""

from __future__ import annotations

import argparse
import logging

from cavmae.commands import pretrain

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    pretrain.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    return pretrain.run(args, task="finetune", logger=log)
