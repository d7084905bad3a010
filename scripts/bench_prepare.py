"""Prepare benchmark: clips/s of ``prepare --engine ray`` with 1 and 2 Ray workers against the local engine.

The same synthetic clips (real H.264 + AAC files) are prepared into fresh folders by the local engine (a process
pool of 1 and 2 workers) and by the Ray engine (a local cluster of 1 and 2 CPUs, started and warmed up before
the timing, so the figure is steady-state decoding, not cluster start-up). Each round runs every configuration
once, order rotating (scripts/benchtools.py); printed: clips per wall-clock second as median (min-max) over the
rounds and the median (min-max) of the per-round ratios Ray / local at the same number of workers, with the
machine and its load average at start and end; the raw rounds go to scripts/results/bench_prepare_<dev>.json
(or --out). Every run's shards are checked to be byte-identical to the first run's.

    python scripts/bench_prepare.py --clips 16 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from benchtools import Record, default_out, ratio_spread, ratios, rounds, spread, summary  # noqa: E402

from cavmae.data.clips import make_synthetic_dataset  # noqa: E402
from cavmae.data.engines import RayEngine, import_ray  # noqa: E402
from cavmae.data.prepare import prepare_shards  # noqa: E402
from cavmae.data.sources import plan_inputs  # noqa: E402

log = logging.getLogger("bench_prepare")


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--samples-per-shard", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (each runs every configuration once)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    p.add_argument(
        "--out", type=Path, help="JSON of the raw rounds (default: scripts/results/bench_prepare_<dev>.json)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    ray = import_ray()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    record = Record("bench_prepare", vars(args))
    try:
        ds = make_synthetic_dataset(tmp / "syn", num_clips=args.clips, duration=args.duration, size=args.size)
        plan = plan_inputs(videos=ds.videos, csv=ds.csv, label_csv=ds.label_csv)
        reference: dict[str, bytes] = {}

        def configuration(engine_name: str, workers: int):
            def prepare() -> float:
                """Seconds of one prepare of every clip (the Ray cluster's start and warm-up are not timed)."""
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
                seconds = time.perf_counter() - t0
                got = shard_bytes(out)
                reference.update(reference or got)
                if got != reference:
                    raise SystemExit(f"{engine_name} x {workers}: shards differ from the first run's")
                log.info("%s x %d: %.2f clips/s", engine_name, workers, len(plan.inputs) / seconds)
                return seconds

            return prepare

        configs = {f"{e}x{w}": configuration(e, w) for w in args.workers for e in ("local", "ray")}
        runs = rounds(configs, args.rounds, warmup=0)  # the first run of each is its own warm-up (Ray's above)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rates = {name: [len(plan.inputs) / r.value for r in rs] for name, rs in runs.items()}
    table = {}
    for w in args.workers:
        table[f"localx{w}"] = {"clips_per_s": summary(rates[f"localx{w}"])}
        table[f"rayx{w}"] = {"clips_per_s": summary(rates[f"rayx{w}"])}
        table[f"rayx{w}"]["ray_over_local"] = summary(ratios(rates[f"rayx{w}"], rates[f"localx{w}"]))
    record.finish(
        raw={"clips_per_s": rates, "runs": {n: [vars(r) for r in rs] for n, rs in runs.items()}}, summary=table
    )
    print(record.machine_lines())
    print(f"{args.clips} clips of {args.duration:g} s at {args.size} px, {args.rounds} interleaved rounds; clips/s")
    for w in args.workers:
        local, ray_rates = rates[f"localx{w}"], rates[f"rayx{w}"]
        print(
            f"{w} worker(s): local {spread(local, 'clips/s', 2)}, ray {spread(ray_rates, 'clips/s', 2)}; "
            f"ray / local {ratio_spread(ray_rates, local)} (per-round ratios)"
        )
    print(f"wrote {record.write(args.out or default_out('bench_prepare'))}")


if __name__ == "__main__":
    main()
