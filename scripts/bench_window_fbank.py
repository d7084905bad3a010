"""Fbank cost of CAV-MAE Sync's audio window against the whole clip, per clip, on one thread.

Times, on a random 10 s waveform at 16 kHz: the whole clip's fbank (1024 frames, what CAV-MAE computes and what
cutting a window from it would cost), one window of L frames computed alone (``cavmae.data.windows.window_fbank``,
what the loader does in training), and the loader's evaluation fbank (one fbank over the span of all N windows).
Interleaved rounds (benchtools): median (min-max) and per-round ratios to the whole clip; the raw rounds go to
scripts/results/bench_window_fbank_<dev>.json (or --out).

    python scripts/bench_window_fbank.py --window 416 --frames 16 --rounds 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from benchtools import Record, default_out, ratio_spread, ratios, rounds, spread, summary  # noqa: E402

from cavmae.data.fbank import kaldi_fbank  # noqa: E402
from cavmae.data.windows import CLIP_FBANK_FRAMES, frame_audio_window, window_fbank  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=416, help="L fbank frames (the released Sync model: 416)")
    p.add_argument("--frames", type=int, default=16, help="N frames per clip")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=20, help="fbank calls per timed variant and round")
    p.add_argument("--out", type=Path, help="raw JSON (default: scripts/results/bench_window_fbank_<dev>.json)")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one fbank per core, as a loader worker computes it
    try:
        return measure(args)
    finally:
        torch.set_num_threads(threads)  # an in-process caller (the smoke test) keeps its own thread count


def measure(args: argparse.Namespace) -> int:
    wave = torch.randn(160_000, generator=torch.Generator().manual_seed(0)) * 0.1
    wave -= wave.mean()
    starts = [frame_audio_window(k, args.frames, CLIP_FBANK_FRAMES, args.window) for k in range(args.frames)]
    middle = starts[args.frames // 2]
    span = max(starts) + args.window - min(starts)

    def repeat(fn):
        return lambda: [fn() for _ in range(args.calls)] and None

    variants = {
        "whole clip (1024)": repeat(lambda: kaldi_fbank(wave, 128, max_frames=CLIP_FBANK_FRAMES)),
        f"one window ({args.window})": repeat(lambda: window_fbank(wave, middle, args.window)),
        f"all {args.frames} windows (span {span})": repeat(lambda: window_fbank(wave, min(starts), span)),
    }
    record = Record("bench_window_fbank", vars(args))
    runs = rounds(variants, args.rounds)
    per_call = {n: [r.cpu_s / args.calls * 1e3 for r in rs] for n, rs in runs.items()}
    base = per_call["whole clip (1024)"]
    record.finish(
        raw={n: [{"wall_s": r.wall_s, "cpu_s": r.cpu_s} for r in rs] for n, rs in runs.items()},
        summary={n: {"ms_per_clip": summary(v), "vs_whole": summary(ratios(v, base))} for n, v in per_call.items()},
    )
    print(record.machine_lines())
    for n, v in per_call.items():
        print(f"{n}: {spread(v, 'ms', 2)} CPU per clip, {ratio_spread(v, base)} the whole clip's")
    print(f"raw: {record.write(args.out or default_out('bench_window_fbank'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
