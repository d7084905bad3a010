"""``cavmae stats``: the fbank mean and std of a shard set, printed as the overrides that normalise with them."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", nargs="+", required=True, help="shards to measure (brace patterns allowed)")
    p.add_argument("--clips", type=int, default=0, help="measure a seeded sample of this many clips (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --clips sample")
    p.add_argument(
        "--audio-length",
        type=int,
        default=1024,
        help="fbank frames per clip, as model.audio_length (clips are cut or zero-padded to it, as the loader does)",
    )
    p.add_argument("--mel-bins", type=int, default=128, help="mel bins, as model.num_mel_bins")
    p.add_argument("--audio-channel", choices=["first", "mean"], default="first", help="as data.audio_channel")


def run(args: argparse.Namespace) -> int:
    """Prints one line: the overrides and the clip count. Exit 2 for a bad --clips; errors in the shards escape."""
    from cavmae.data.stats import fbank_statistics

    if args.clips < 0 or args.audio_length < 1 or args.mel_bins < 1:
        log.error("--clips must be >= 0, --audio-length and --mel-bins >= 1")
        return 2
    stats = fbank_statistics(
        args.shards,
        audio_length=args.audio_length,
        num_mel_bins=args.mel_bins,
        clips=args.clips,
        seed=args.seed,
        audio_channel=args.audio_channel,
    )
    if stats.skipped:
        log.warning("%d sample(s) could not be decoded and were not measured", stats.skipped)
    print(f"{stats.overrides()}  # {stats.clips} clips, {args.audio_length} frames x {args.mel_bins} bins")
    return 0
