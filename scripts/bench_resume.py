"""Resume cost: seconds to the first training batch when a run resumes at batch N of an epoch of shards.

Two ways to get there, timed in interleaved rounds (scripts/benchtools.py), both through the loop's
``make_batches`` on the same shards:

- skip: ``make_batches(skip=N)``, what the loop does: each loader worker drops its share of the skipped samples
  before decoding them (cavmae/data/loader.py);
- decode: ``make_batches(skip=0)`` with its first N batches read, decoded, collated and dropped, which is what
  resuming cost before the loader could skip (the same pipeline, so the same work as that code did).

Both must give the same first batch (checked every round). Data: ``--clips`` synthetic clips prepared into shards
of ``--samples-per-shard``, the shard files then repeated ``--copies`` times under one manifest, so an epoch holds
more than N batches without preparing as many clips. The loader runs in this process (``data.num_workers=0``) with
the shipped shuffle buffer and the model's input sizes of CAV-MAE base (1024 fbank frames, 224 px).

Printed: seconds to the first batch of each way, median (min-max) over the rounds, and the median (min-max) of
the per-round ratios decode / skip, with the machine and its load at start and end. The raw rounds go to
scripts/results/bench_resume_<cpu|cuda>.json (or --out).

    python scripts/bench_resume.py --position 200 --rounds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from benchtools import Record, default_out, ratios, rounds, spread, summary  # noqa: E402

from cavmae.config import Config, load_config  # noqa: E402
from cavmae.train.batches import batches_per_epoch, make_batches  # noqa: E402


def make_shards(root: Path, clips: int, classes: int, duration: float, size: int, per_shard: int, copies: int) -> str:
    """Synthetic clips -> prepared shards, repeated ``copies`` times under one manifest; returns the brace pattern."""
    from cavmae.data.clips import make_synthetic_dataset
    from cavmae.data.prepare import prepare_shards
    from cavmae.data.sources import plan_inputs

    synth = make_synthetic_dataset(
        root / "synth", num_clips=clips, num_classes=classes, duration=duration, size=size, fps=8, seed=0
    )
    plan = plan_inputs(videos=synth.videos, csv=synth.csv, label_csv=synth.label_csv)
    prepared = root / "prepared"
    manifest = prepare_shards(plan, prepared, name="bench", samples_per_shard=per_shard, workers=0)
    out = root / "shards"
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, shard in enumerate(s for _ in range(copies) for s in manifest["shards"]):
        name = f"bench-{i:06d}.tar"
        shutil.copyfile(prepared / shard["file"], out / name)
        shards.append({**shard, "file": name})
    repeated = {**manifest, "shards": shards, "num_samples": sum(s["count"] for s in shards)}
    repeated["label_counts"] = [c * copies for c in manifest.get("label_counts", [])]
    (out / "bench-manifest.json").write_text(json.dumps(repeated, indent=1))
    return str(out / f"bench-{{000000..{len(shards) - 1:06d}}}.tar")


def loader_config(pattern: str, batch_size: int, classes: int) -> Config:
    return load_config(
        None,
        [
            "data.synthetic=false",
            f"data.train_shards=[{pattern}]",
            f"data.batch_size={batch_size}",
            "data.num_workers=0",
            f"model.num_classes={classes}",
        ],
    )


def first_batch_after(cfg: Config, position: int, skip: bool) -> dict:
    """The epoch's batch number ``position`` (0-based), reached by the loader's skip or by reading up to it."""
    if skip:
        return next(iter(make_batches(cfg, "train", epoch=0, skip=position)))
    return next(itertools.islice(make_batches(cfg, "train", epoch=0), position, None))


def run_benchmark(cfg: Config, position: int, repeats: int) -> dict:
    """Seconds to the first batch after ``position`` batches, both ways, interleaved; raises if they differ."""
    want = batches_per_epoch(cfg, 1)
    if position >= want:
        raise SystemExit(f"--position {position}: the epoch holds only {want} batches (more --copies)")
    reference: dict = {}

    def way(skip: bool):
        def run() -> list[str]:
            batch = first_batch_after(cfg, position, skip)
            if not reference:
                reference.update(batch)
            same = batch["keys"] == reference["keys"] and all(
                torch.equal(batch[k], reference[k]) for k in ("audio", "frames", "labels")
            )
            if not same:
                raise RuntimeError(f"skip={skip}: the batch after {position} differs between the two ways")
            return batch["keys"]

        return run

    runs = rounds({"skip": way(True), "decode": way(False)}, repeats, warmup=1)
    skip_s = [r.wall_s for r in runs["skip"]]
    decode_s = [r.wall_s for r in runs["decode"]]
    return {
        "batches_per_epoch": want,
        "summary": {
            "skip_s": summary(skip_s),
            "decode_s": summary(decode_s),
            "decode_over_skip": summary(ratios(decode_s, skip_s)),
            "skip_cpu_s": summary([r.cpu_s for r in runs["skip"]]),
            "decode_cpu_s": summary([r.cpu_s for r in runs["decode"]]),
        },
        "raw": {name: [vars(r) for r in rs] for name, rs in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_resume"), help="where the data is written")
    p.add_argument("--clips", type=int, default=16, help="distinct synthetic clips")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per clip")
    p.add_argument("--size", type=int, default=320, help="synthetic video size (px)")
    p.add_argument("--samples-per-shard", type=int, default=16)
    p.add_argument("--copies", type=int, default=60, help="times the shard files are repeated")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--position", type=int, default=200, help="the batch of the epoch to resume at")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each times both ways once)")
    p.add_argument("--out", type=Path, help="JSON of the raw rounds (default: scripts/results/bench_resume_<dev>.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    pattern = make_shards(
        args.root, args.clips, args.classes, args.duration, args.size, args.samples_per_shard, args.copies
    )
    cfg = loader_config(pattern, args.batch_size, args.classes)
    record = Record("bench_resume", vars(args))  # the machine once the data is made: timing starts here
    result = run_benchmark(cfg, args.position, args.rounds)
    record.finish(raw=result["raw"], summary={"batches_per_epoch": result["batches_per_epoch"], **result["summary"]})
    s = result["raw"]
    print(record.machine_lines())
    print(
        f"resume at batch {args.position} of {result['batches_per_epoch']} (batch {args.batch_size}, shuffle buffer "
        f"{cfg.data.shuffle_buffer}, no worker processes), {args.rounds} interleaved rounds; median (min-max)"
    )
    skip_s, decode_s = [r["wall_s"] for r in s["skip"]], [r["wall_s"] for r in s["decode"]]
    skip_cpu, decode_cpu = [r["cpu_s"] for r in s["skip"]], [r["cpu_s"] for r in s["decode"]]
    print(f"skip before decoding  {spread(skip_s)} to the first batch, {spread(skip_cpu, 'CPU-s')}")
    print(f"decode and drop       {spread(decode_s)} to the first batch, {spread(decode_cpu, 'CPU-s')}")
    print(f"ratio decode / skip   {spread(ratios(decode_s, skip_s), 'x', 1)} (per-round ratios)")
    print(f"wrote {record.write(args.out or default_out('bench_resume'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
