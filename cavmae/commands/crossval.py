"""``cavmae crossval --config RECIPE [--fold K | --gather] [key=value ...]``: k-fold cross-validation (ESC-50).

Without --fold: splits data.train_shards by each sample's json ``fold`` into ``train.out_dir/folds/``, fine-tunes
one model per fold that is not finished yet (trained on the other folds, evaluated on it after each epoch), then
writes ``train.out_dir/crossval.json`` and prints the table. ``--fold K`` runs fold K alone (separate processes or
machines sharing train.out_dir); ``--gather`` only reads the finished folds. See cavmae/train/crossval.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="fine-tuning recipe YAML (e.g. configs/finetune_esc50.yaml)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, help="run this fold only (its json 'fold' value), into train.out_dir/foldK")
    which.add_argument(
        "--gather", action="store_true", help="only gather the finished folds of train.out_dir into crossval.json"
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="dotted config overrides: data.train_shards=[...] train.out_dir=DIR"
    )


def run(args: argparse.Namespace) -> int:
    from cavmae.config import load_config

    cfg = load_config(args.config, args.overrides, task="finetune")

    from cavmae.train import TrainingStopped
    from cavmae.train.crossval import SUMMARY, crossval, format_table, gather_folds

    try:
        summary = gather_folds(cfg.train.out_dir) if args.gather else crossval(cfg, args.fold)
    except TrainingStopped as e:
        log.error("%s", e)
        return 1
    if summary is None:
        print(f"fold {args.fold} done: {Path(cfg.train.out_dir) / f'fold{args.fold}'}")
        return 0
    print(format_table(summary))
    print(f"written: {Path(cfg.train.out_dir) / SUMMARY}")
    return 0
