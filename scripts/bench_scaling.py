"""Audio-encoder cost as the clip grows from 10 s to 60 s: ViT (attention, quadratic) vs Mamba (scan, linear).

    python scripts/bench_scaling.py                       # CPU: a narrow model (see --width), lengths 10..60 s
    python scripts/bench_scaling.py --seconds 10,60 --repeats 3 --no-memory          # a quicker CPU run
    python scripts/bench_scaling.py --width 768 --depth 12 --batch 8 --bf16     # on a GPU: the base encoder

Times forward+backward of the audio path of the encoder (patch embedding, the audio blocks and the shared block
with the audio norms) for each backbone and audio length (1024 fbank frames per 10 s -> 512 tokens). All points
are built in one process and timed interleaved: each round runs one step of every point (order rotating), after a
warm-up round, --repeats rounds. Printed: median (min-max) seconds per point, and the median (min-max) of the
per-round ratios Mamba / ViT at the same length (below 1 means Mamba is faster), with the machine and its load
average at start and end.

Peak memory is measured apart (unless --no-memory), one fresh child process per point so that earlier points do
not hide later peaks: CUDA's allocator peak on a GPU, the growth of the peak resident set size on the CPU. Writes
the raw rounds as JSON and a PNG of both curves (range as error bars), by default to
scripts/results/bench_scaling_<cpu|cuda>.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchtools import RESULTS, Record, interleaved, peak_rss_mib, ratio_spread, ratios, spread, summary  # noqa: E402


def build_point(backbone: str, seconds: int, args):
    """(model, audio) for one point: the audio path of a classifier of --width / --depth on `seconds` of audio."""
    import torch

    import cavmae

    device = torch.device(args.device)
    cfg = cavmae.ModelConfig(
        backbone=backbone,
        embed_dim=args.width,
        num_heads=max(args.width // 64, 1),
        modality_depth=args.depth - 1,
        shared_depth=1,
        audio_length=seconds * 1024 // 10,
    )
    torch.manual_seed(0)
    model = cavmae.create_model(cfg, kind="classifier").to(device).train()
    audio = torch.randn(args.batch, cfg.audio_length, cfg.num_mel_bins, device=device)
    return model, audio, cfg.audio_grid[0] * cfg.audio_grid[1]


def step(model, audio, bf16: bool) -> None:
    """One forward+backward of the audio path (synchronised on a GPU)."""
    import torch

    with torch.autocast(audio.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model.features(audio, None, mode="audio")
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    if audio.is_cuda:
        torch.cuda.synchronize()


def peak_memory(backbone: str, seconds: int, args) -> float:
    """MiB one step of one point needs beyond the model and input, measured in this (fresh) process."""
    import torch

    model, audio, _ = build_point(backbone, seconds, args)
    if audio.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = peak_rss_mib()
    for _ in range(2):
        step(model, audio, args.bf16)
    if audio.is_cuda:
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return peak_rss_mib() - rss0


def memory_in_child(backbone: str, seconds: int, args) -> float:
    cmd = [sys.executable, __file__, "--point", f"{backbone}:{seconds}", "--width", str(args.width)]
    cmd += ["--depth", str(args.depth), "--batch", str(args.batch), "--device", args.device]
    cmd += ["--bf16"] if args.bf16 else []
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"memory of point {backbone}:{seconds} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="vit,mamba", help="comma-separated; the first is the ratios' baseline")
    p.add_argument("--seconds", default="10,20,30,40,50,60", help="audio lengths (s), comma-separated")
    p.add_argument("--width", type=int, default=192, help="embedding width (768 = base)")
    p.add_argument("--depth", type=int, default=4, help="audio blocks + 1 shared block (12 = base)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", "--iters", type=int, default=5, help="timed rounds (each times every point once)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--memory-only", action="store_true", help="only the peak memory (writes <out>_memory.json)")
    p.add_argument("--out", help="prefix of the .json and .png outputs (default: scripts/results/bench_scaling_<dev>)")
    p.add_argument("--point", help=argparse.SUPPRESS)  # internal: peak memory of one backbone:seconds, as JSON
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.point:
        backbone, seconds = args.point.split(":")
        print(json.dumps({"peak_mib": peak_memory(backbone, int(seconds), args)}))
        return 0

    import cavmae

    record = Record("bench_scaling", vars(args))
    backbones = [b for b in args.backbones.split(",") if b in cavmae.list_blocks()]
    lengths = [int(s) for s in args.seconds.split(",")]
    prefix = args.out or str(RESULTS / f"bench_scaling_{'cuda' if args.device == 'cuda' else 'cpu'}")
    if args.memory_only:
        memory = {f"{b}:{s}": memory_in_child(b, s, args) for s in lengths for b in backbones}
        record.finish(raw={"peak_mib": memory}, summary={})
        print(record.machine_lines())
        for name, mib in memory.items():
            print(f"{name:>10}: peak memory {mib:.0f} MiB")
        print(f"wrote {record.write(prefix + '_memory.json')}")
        return 0
    points, tokens = {}, {}
    for seconds in lengths:
        for backbone in backbones:
            model, audio, tokens[seconds] = build_point(backbone, seconds, args)
            points[f"{backbone}:{seconds}"] = lambda m=model, a=audio: step(m, a, args.bf16)
    times = interleaved(points, args.repeats)
    memory = {} if args.no_memory else {name: memory_in_child(*_split(name), args) for name in points}

    base = backbones[0]
    rows = []
    for seconds in lengths:
        row = {"seconds": seconds, "tokens": tokens[seconds]}
        for b in backbones:
            row[b] = {"time_s": summary(times[f"{b}:{seconds}"]), "peak_mib": memory.get(f"{b}:{seconds}")}
            if b != base:
                row[b][f"ratio_vs_{base}"] = summary(ratios(times[f"{b}:{seconds}"], times[f"{base}:{seconds}"]))
        rows.append(row)
    record.finish(raw={"seconds_per_step": times, "peak_mib": memory}, summary={"rows": rows})

    print(record.machine_lines())
    print(f"width {args.width}, {args.depth} blocks, batch {args.batch}, bf16={args.bf16}; {args.repeats} rounds")
    for seconds in lengths:
        cells = []
        for b in backbones:
            t = times[f"{b}:{seconds}"]
            mem = f", {memory[f'{b}:{seconds}']:.0f} MiB" if memory else ""
            cells.append(f"{b} {spread(t)}{mem}")
            if b != base:
                cells.append(f"{b}/{base} {ratio_spread(t, times[f'{base}:{seconds}'])}")
        print(f"{seconds:>3} s ({tokens[seconds]:>5} tokens): " + "; ".join(cells))
    record.write(prefix + ".json")
    plot(times, memory, backbones, lengths, record.machine_lines().splitlines()[0], args, Path(prefix + ".png"))
    print(f"wrote {prefix}.json and {prefix}.png")
    return 0


def _split(name: str) -> tuple[str, int]:
    backbone, seconds = name.split(":")
    return backbone, int(seconds)


def plot(times, memory, backbones, lengths, where: str, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if memory else 1, figsize=(10 if memory else 5.5, 4), squeeze=False)
    ax_t = axes[0][0]
    for b in backbones:
        ts = [times[f"{b}:{s}"] for s in lengths]
        med = [statistics.median(t) for t in ts]
        err = [[m - min(t) for m, t in zip(med, ts)], [max(t) - m for m, t in zip(med, ts)]]
        ax_t.errorbar(lengths, med, yerr=err, marker="o", capsize=3, label=b)
        if memory:
            axes[0][1].plot(lengths, [memory[f"{b}:{s}"] for s in lengths], marker="o", label=b)
    ax_t.set(title="audio encoder forward+backward", xlabel="audio length (s)", ylabel="s per step, median (min-max)")
    if memory:
        axes[0][1].set(title="peak memory", xlabel="audio length (s)", ylabel="MiB")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"{where.removeprefix('machine: ')}\nwidth {args.width}, {args.depth} blocks, batch {args.batch}, "
        f"{args.repeats} interleaved rounds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
