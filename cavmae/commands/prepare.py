"""``cavmae prepare``: videos + metadata -> WebDataset shards + manifest (see cavmae.data.prepare)."""

from __future__ import annotations

import argparse
import logging
import os
import re

log = logging.getLogger(__name__)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'500MB', '1G', '1.5GiB', '123' -> bytes (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500MB or 1G")
    return int(float(m.group(1)) * 1024 ** "kmgt".find(m.group(2).lower()) if m.group(2) else float(m.group(1)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("inputs (a media folder, optionally with a CSV; or a datafile)")
    src.add_argument(
        "--videos",
        help="folder of media files (searched recursively): videos, or audio-only files (wav, flac, mp3, ogg, m4a, "
        "an mp4 without video), which give samples without frames",
    )
    src.add_argument(
        "--csv",
        help="AudioSet segments CSV, VGGSound CSV or ESC-50 meta/esc50.csv (recognised by its header; each clip's "
        "fold is kept) naming the clips and their labels",
    )
    src.add_argument("--datafile", help="CAV-MAE datafile JSON (wav + frame_<i>/<video_id>.jpg)")
    src.add_argument(
        "--label-csv",
        help="label index CSV (index,mid,display_name). Default: the bundled AudioSet index (527 classes) for an "
        "AudioSet segments CSV, the bundled VGGSound list (309 classes) for a VGGSound CSV, ESC-50's target / "
        "category columns for an ESC-50 CSV, the one whose mids a "
        "datafile's labels are (AudioSet ids, or CAV-MAE's vgg_<k>), else built from the labels; 'build' builds "
        "one from the labels in any case",
    )
    src.add_argument("--layout", choices=["auto", "audioset", "vggsound", "esc50"], default="auto", help="CSV layout")
    src.add_argument("--split", help="VGGSound: keep only rows of this split (train / test)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder for the shards and the manifest")
    out.add_argument("--name", default="data", help="shard name prefix: <name>-000000.tar (default: data)")
    out.add_argument("--samples-per-shard", type=int, default=1000)
    out.add_argument("--max-shard-bytes", type=parse_size, default=0, help="e.g. 1G (default: no limit)")
    out.add_argument("--workers", type=int, default=4, help="decoding processes (0 = in this process)")
    eng = parser.add_argument_group("engine (where clips are decoded; the shards are the same)")
    eng.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help='local: a process pool of --workers; ray: one task per shard on a Ray cluster (pip install "cavmae[ray]")',
    )
    eng.add_argument("--ray-address", help="existing Ray cluster ('auto' or host:port); default: start a local one")
    eng.add_argument("--ray-num-cpus", type=int, help="CPUs of a local Ray cluster started here (default: all)")
    eng.add_argument("--ray-retries", type=int, default=3, help="extra tries of a failed Ray task (default 3)")
    out.add_argument("--frame-size", type=int, default=224, help="shorter side of stored frames (never enlarged)")
    out.add_argument("--jpeg-quality", type=int, default=90)
    out.add_argument("--audio-format", choices=["wav", "flac"], default="wav", help="16-bit PCM container")
    out.add_argument(
        "--store",
        choices=["decoded", "mp4", "both"],
        default="decoded",
        help="decoded audio + frames, the raw mp4 (decoded at load time), or both",
    )
    out.add_argument(
        "--audio-channel",
        choices=["first", "mean"],
        default="first",
        help="stored audio: the first channel at unit gain (CAV-MAE's preprocessing, default) or (L+R)/2",
    )
    out.add_argument("--clip-seconds", type=float, default=10.0, help="window per file when no end is given")
    out.add_argument("--overwrite", action="store_true", help="replace shards from other inputs or options")


def default_label_csv(args: argparse.Namespace) -> str | None:
    """--label-csv as given; unset with an AudioSet / VGGSound CSV, or a datafile whose labels are all mids of a
    bundled index (CAV-MAE's: AudioSet ids, vgg_<k>): the bundled index; 'build' (or unset otherwise): None."""
    from cavmae.data.labels import bundled_dataset_of_mids, bundled_label_csv, detect_csv_layout, read_datafile

    if args.label_csv == "build":
        return None
    if args.label_csv:
        return args.label_csv
    if args.datafile:
        # an index built from mids would sort them ("vgg_10" before "vgg_2"), which is no public head's order
        entries, _ = read_datafile(args.datafile)
        dataset = bundled_dataset_of_mids([m for e in entries for m in e.labels])
        if dataset is None:
            return None
        path = str(bundled_label_csv(dataset))
        log.info("label index: %s (the datafile's labels are %s mids; --label-csv to use another)", path, dataset)
        return path
    if not args.csv:
        return None
    layout = args.layout
    if layout == "auto":
        if not os.path.isfile(args.csv):
            return None  # plan_inputs reports the missing file
        layout = detect_csv_layout(args.csv)
    if layout == "esc50":
        return None  # the index comes from the CSV's target / category columns
    path = str(bundled_label_csv(layout))
    log.info("label index: %s (bundled for %s; --label-csv to use another)", path, layout)
    return path


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of inputs (exit 2 before any work), or None."""
    if args.datafile and (args.videos or args.csv):
        return "give either --datafile or --videos (with or without --csv), not both"
    if not args.datafile and not args.videos:
        return "nothing to prepare: give a video folder (--videos, with or without --csv) or a datafile (--datafile)"
    return None


def shard_pattern(out: str, name: str, num_shards: int) -> str:
    """The shards prepare wrote, as one path (one shard) or a brace pattern."""
    if num_shards == 1:
        return f"{out}/{name}-000000.tar"
    return f"{out}/{name}-{{000000..{num_shards - 1:06d}}}.tar"


def run(args: argparse.Namespace) -> int:
    """Exit 2 for inputs given wrongly; exit 1 when an input is missing or unreadable (raised to cavmae.cli), when
    the output folder holds other shards (--overwrite) or when no sample could be written."""
    from cavmae.data.prepare import PrepareError, PrepareOptions, failure_summary, prepare_shards
    from cavmae.data.sources import plan_inputs

    problem = usage_problem(args)
    if problem:
        log.error("%s", problem)
        return 2
    label_csv = default_label_csv(args)
    plan = plan_inputs(
        videos=args.videos,
        csv=args.csv,
        datafile=args.datafile,
        label_csv=label_csv,
        layout=args.layout,
        split=args.split,
        clip_seconds=args.clip_seconds,
    )
    if label_csv != args.label_csv and plan.failed and not plan.inputs:
        log.error(
            "none of the rows of %s could be used with the bundled label index %s (first problem: %s); pass "
            "--label-csv FILE, or --label-csv build",
            args.csv or args.datafile,
            label_csv,
            plan.failed[0]["reason"],
        )
        return 1
    options = PrepareOptions(
        frame_size=args.frame_size,
        jpeg_quality=args.jpeg_quality,
        store=args.store,
        audio_format=args.audio_format,
        audio_channel=args.audio_channel,
        clip_seconds=args.clip_seconds,
    )
    engine = None
    if args.engine == "ray":
        from cavmae.data.engines import RayEngine

        engine = RayEngine(
            address=args.ray_address,
            num_cpus=args.ray_num_cpus,
            block_size=args.samples_per_shard,
            max_retries=args.ray_retries,
        )
    try:
        manifest = prepare_shards(
            plan,
            args.out,
            name=args.name,
            samples_per_shard=args.samples_per_shard,
            max_shard_bytes=args.max_shard_bytes,
            workers=args.workers,
            options=options,
            overwrite=args.overwrite,
            engine=engine,
        )
    except PrepareError as e:  # the output folder holds other shards: --overwrite or another --out / --name
        log.error("%s", e)
        return 1
    manifest_file = f"{args.out}/{args.name}-manifest.json"
    if not manifest["num_samples"]:
        log.error("nothing was written: %s (each input and its reason: %s)", failure_summary(manifest), manifest_file)
        return 1
    unmatched = manifest.get("unmatched") or []
    if unmatched:  # files that no metadata row names are not in the shards: say so, not only in the manifest
        log.warning(
            "%d media file(s) in --videos are named by no metadata row and were left out: %s%s (all listed under "
            "'unmatched' in the manifest)",
            len(unmatched),
            ", ".join(unmatched[:5]),
            " ..." if len(unmatched) > 5 else "",
        )
    pattern = shard_pattern(args.out, args.name, len(manifest["shards"]))
    log.info("shards: %s (%d samples); manifest: %s", pattern, manifest["num_samples"], manifest_file)
    log.info("train on them with the override 'data.train_shards=[%s]'", pattern)
    return 0
