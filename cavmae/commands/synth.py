"""``cavmae synth``: write a synthetic audio-visual dataset (H.264 + AAC files + CSVs; see cavmae.data.clips)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (videos/, <layout>.csv, class_labels_indices.csv)")
    parser.add_argument("--clips", type=int, default=64, help="number of clips")
    parser.add_argument("--classes", type=int, default=8, help="number of classes")
    parser.add_argument("--duration", type=float, help="seconds per clip (default 10; esc50: 5)")
    parser.add_argument(
        "--size", type=int, nargs="+", default=[96], metavar="PX", help="frame size: one value (square) or width height"
    )
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--sample-rate", type=int, help="audio sample rate of the files (default 16000; esc50: 44100)")
    parser.add_argument("--channels", type=int, choices=[1, 2], default=1)
    parser.add_argument(
        "--layout",
        choices=["audioset", "vggsound", "esc50"],
        default="audioset",
        help="esc50: audio-only wav files in audio/ and meta/esc50.csv with --folds folds (cavmae.data.synth_esc50)",
    )
    parser.add_argument("--folds", type=int, default=5, help="esc50 layout: number of folds")
    parser.add_argument("--multi-label", type=float, default=0.25, help="AudioSet layout: fraction of 2-class clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="rendering processes (0 = in this process)")
    parser.add_argument(
        "--overwrite", action="store_true", help="remove videos of an earlier dataset in --out (refused without it)"
    )


def run(args: argparse.Namespace) -> int:
    """Exit 2 for sizes out of range; 1 when --out cannot be written or holds an earlier dataset (--overwrite)."""
    from cavmae.data.clips import make_synthetic_dataset

    if len(args.size) not in (1, 2):
        log.error("--size takes one value (square) or two (width height), got %s", args.size)
        return 2
    if args.clips < 1 or args.classes < 1:
        log.error("--clips and --classes must be at least 1")
        return 2
    if args.layout == "esc50":
        return _run_esc50(args)
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    ds = make_synthetic_dataset(
        args.out,
        num_clips=args.clips,
        num_classes=args.classes,
        duration=args.duration or 10.0,
        size=size,
        fps=args.fps,
        seed=args.seed,
        layout=args.layout,
        sample_rate=args.sample_rate or 16000,
        channels=args.channels,
        multi_label=args.multi_label,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    log.info("next: cavmae prepare --videos %s --csv %s --label-csv %s --out <shards>", ds.videos, ds.csv, ds.label_csv)
    return 0


def _run_esc50(args: argparse.Namespace) -> int:
    from cavmae.data.synth_esc50 import make_esc50_dataset

    if args.folds < 1:
        log.error("--folds must be at least 1")
        return 2
    try:
        ds = make_esc50_dataset(
            args.out,
            num_clips=args.clips,
            num_classes=args.classes,
            folds=args.folds,
            duration=args.duration or 5.0,
            sample_rate=args.sample_rate or 44100,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except FileExistsError as e:
        log.error("%s", e)
        return 1
    log.info("next: cavmae prepare --videos %s --csv %s --out <shards>", ds.audio, ds.csv)
    return 0
