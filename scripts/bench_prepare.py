"""Prepare benchmark: clips/s of ``prepare --engine ray`` with 1 and 2 Ray workers against the local engine.

The same synthetic clips (real H.264 + AAC files) are prepared into fresh folders by the local engine (a process
pool of 1 and 2 workers) and by the Ray engine (a local cluster of 1 and 2 CPUs, started and warmed up before
the timing, so the figure is steady-state decoding, not cluster start-up). Rounds alternate between the four
configurations; each reports the median and range of clips per wall-clock second, and the ratio Ray / local at
the same number of workers. Every run's shards are checked to be byte-identical to the first local run's.

    python scripts/bench_prepare.py --clips 16 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cavmae.data.clips import make_synthetic_dataset  # noqa: E402
from cavmae.data.engines import RayEngine, import_ray  # noqa: E402
from cavmae.data.prepare import prepare_shards  # noqa: E402
from cavmae.data.sources import plan_inputs  # noqa: E402

log = logging.getLogger("bench_prepare")


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--samples-per-shard", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    ray = import_ray()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        ds = make_synthetic_dataset(tmp / "syn", num_clips=args.clips, duration=args.duration, size=args.size)
        plan = plan_inputs(videos=ds.videos, csv=ds.csv, label_csv=ds.label_csv)
        configs = [("local", 1), ("ray", 1), ("local", 2), ("ray", 2)]
        rates: dict[str, list[float]] = {f"{e}x{w}": [] for e, w in configs}
        reference = None
        for r in range(args.rounds):
            for engine_name, workers in configs:
                out = tmp / f"out-{engine_name}-{workers}"
                shutil.rmtree(out, ignore_errors=True)
                engine = None
                if engine_name == "ray":
                    ray.shutdown()
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                    # warm-up: start the workers and import cavmae in them (one shard, thrown away)
                    prepare_shards(
                        plan_inputs(videos=ds.videos, csv=ds.csv, label_csv=ds.label_csv),
                        tmp / "warm",
                        samples_per_shard=args.samples_per_shard,
                        engine=RayEngine(block_size=1),
                        overwrite=True,
                    )
                    engine = RayEngine(block_size=args.samples_per_shard)
                t0 = time.perf_counter()
                prepare_shards(plan, out, samples_per_shard=args.samples_per_shard, workers=workers, engine=engine)
                rate = len(plan.inputs) / (time.perf_counter() - t0)
                rates[f"{engine_name}x{workers}"].append(rate)
                got = shard_bytes(out)
                reference = reference or got
                if got != reference:
                    raise SystemExit(f"{engine_name} x {workers}: shards differ from the local engine's")
                log.info("round %d %s x %d: %.2f clips/s", r, engine_name, workers, rate)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {"clips": args.clips, "duration_s": args.duration, "size": args.size, "rounds": args.rounds, "rates": {}}
    print(f"\n{args.clips} clips of {args.duration:g} s at {args.size} px; clips/s per wall-clock second")
    print(f"{'engine':>10} {'median':>8} {'range':>13} {'vs local':>9}")
    for name, values in rates.items():
        med = statistics.median(values)
        local = statistics.median(rates["local" + name[name.index("x") :]])
        result["rates"][name] = {"median": med, "min": min(values), "max": max(values), "vs_local": med / local}
        print(f"{name:>10} {med:8.2f} {min(values):6.2f}-{max(values):<6.2f} {med / local:8.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
