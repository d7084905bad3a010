"""``cavmae synth``: write a synthetic audio-visual dataset (H.264 + AAC files + CSVs; see cavmae.data.clips)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        help="output folder (videos/, <layout>.csv, class_labels_indices.csv, events.json: each clip's events)",
    )
    parser.add_argument("--clips", type=int, default=64, help="number of clips")
    parser.add_argument("--classes", type=int, default=8, help="number of classes")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per clip")
    parser.add_argument(
        "--size", type=int, nargs="+", default=[96], metavar="PX", help="frame size: one value (square) or width height"
    )
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate of the files")
    parser.add_argument("--channels", type=int, choices=[1, 2], default=1)
    parser.add_argument("--layout", choices=["audioset", "vggsound"], default="audioset")
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
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    ds = make_synthetic_dataset(
        args.out,
        num_clips=args.clips,
        num_classes=args.classes,
        duration=args.duration,
        size=size,
        fps=args.fps,
        seed=args.seed,
        layout=args.layout,
        sample_rate=args.sample_rate,
        channels=args.channels,
        multi_label=args.multi_label,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    log.info("next: cavmae prepare --videos %s --csv %s --label-csv %s --out <shards>", ds.videos, ds.csv, ds.label_csv)
    return 0
