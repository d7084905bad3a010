"""Prepare-worker benchmark: clips/s of one decoding process and its memory growth per clip (RSS).

One process runs ``cavmae.data.prepare.process_clip`` (what each ``cavmae prepare`` worker does: decode audio and
ten frames, encode WAV + JPEGs) over synthetic 10 s clips, cycling through them for ``--clips`` clips. It prints
clips per CPU-second and per wall-clock second, and RSS after a warm-up and at the end, as MiB per clip.

With ``--compare DIR`` (another checkout of the project, e.g. ``git worktree add /tmp/old <commit>``) rounds
alternate between this tree and that one, each round in a fresh process, and the ratio this / other is the median
over rounds (range in brackets).

    python scripts/bench_prepare_worker.py --clips 300 --rounds 3 [--compare /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_prepare_worker")

_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from cavmae.data.prepare import PrepareOptions, process_clip
    from cavmae.data.sources import plan_inputs

    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    folder, clips, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    inputs = plan_inputs(videos=folder).inputs
    opts = PrepareOptions()
    for i in range(warmup):
        ok, result = process_clip(inputs[i % len(inputs)], opts)
        assert ok, result
    rss0, wall, cpu = rss_mib(), time.perf_counter(), time.process_time()
    for i in range(clips):
        ok, result = process_clip(inputs[i % len(inputs)], opts)
        assert ok, result
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"clips": clips, "wall": wall, "cpu": cpu, "rss0": rss0, "rss1": rss_mib(),
                      "torch": "torch" in sys.modules}))
    """
)


def make_clips(root: Path, num: int, size: tuple[int, int]) -> Path:
    """Synthetic 10 s clips (H.264 + stereo AAC at 44.1 kHz, as AudioSet's downloads) in root/videos."""
    folder = root / "videos"
    if folder.is_dir() and len(list(folder.glob("*.mp4"))) >= num:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num):
        tones = f"0.5*sin(2*PI*{300 + 50 * i}*t)|0.4*sin(2*PI*{500 + 30 * i}*t)"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y"]
            + ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate=25:duration=10"]
            + ["-f", "lavfi", "-i", f"aevalsrc={tones}:s=44100:d=10"]
            + ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
            + [str(folder / f"clip{i:03d}.mp4")],
            check=True,
        )
    return folder


def run_once(tree: Path, folder: Path, clips: int, warmup: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(folder), str(clips), str(warmup)],
        env=env,
        cwd=tree,  # `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["clips_per_cpu_s"] = r["clips"] / r["cpu"]
    r["clips_per_wall_s"] = r["clips"] / r["wall"]
    r["mib_per_clip"] = (r["rss1"] - r["rss0"]) / r["clips"]
    return r


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_prepare_worker"), help="where the clips are written")
    p.add_argument("--distinct", type=int, default=8, help="distinct synthetic clips (cycled)")
    p.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"))
    p.add_argument("--clips", type=int, default=200, help="clips decoded per round (after the warm-up)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare", type=Path, help="another checkout to compare with, interleaved")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    folder = make_clips(args.root, args.distinct, tuple(args.size))
    trees = {"this": REPO} if args.compare is None else {"this": REPO, "other": args.compare.resolve()}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            res = run_once(tree, folder, args.clips, args.warmup)
            results[name].append(res)
            log.info(
                "round %d %-5s %.2f clips/CPU-s, %.2f clips/s, RSS %.0f -> %.0f MiB (%.3f MiB/clip), torch loaded: %s",
                r,
                name,
                res["clips_per_cpu_s"],
                res["clips_per_wall_s"],
                res["rss0"],
                res["rss1"],
                res["mib_per_clip"],
                res["torch"],
            )
    for name, rs in results.items():
        log.info(
            "%-5s clips per CPU-second %s, per wall-second %s, RSS growth MiB/clip %s (median [range])",
            name,
            _summary([x["clips_per_cpu_s"] for x in rs]),
            _summary([x["clips_per_wall_s"] for x in rs]),
            _summary([x["mib_per_clip"] for x in rs]),
        )
    if "other" in results:
        ratios = [a["clips_per_cpu_s"] / b["clips_per_cpu_s"] for a, b in zip(results["this"], results["other"])]
        log.info("ratio this / other (clips per CPU-second): %s", _summary(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
