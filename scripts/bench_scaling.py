"""Audio-encoder cost as the clip grows from 10 s to 60 s: ViT (attention, quadratic) vs Mamba (scan, linear).

    python scripts/bench_scaling.py                       # CPU: a narrow model (see --width), lengths 10..60 s
    python scripts/bench_scaling.py --width 768 --depth 12 --batch 8 --bf16     # on a GPU: the base encoder

For each backbone and audio length (1024 fbank frames per 10 s -> 512 tokens) it times (best of --iters, the figure
least disturbed by other jobs on a shared machine) forward+backward of the
audio path of the encoder (patch embedding, the audio blocks and the shared block with the audio norms) and
records the peak memory: CUDA's allocator peak on a GPU, the peak resident set size of a fresh child process on
the CPU (one child per point, so earlier points do not hide later peaks). Writes a table, a JSON file and a PNG
plot of both curves; ratios are against ViT at the same length, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(backbone: str, seconds: int, args) -> dict:
    """One point, in this process: median forward+backward seconds and peak memory (MiB)."""
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
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for i in range(args.iters + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model.features(audio, None, mode="audio")
        out.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    return {
        "backbone": backbone,
        "seconds": seconds,
        "tokens": cfg.audio_grid[0] * cfg.audio_grid[1],
        "time_s": min(times),
        "peak_mib": peak,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="vit,mamba")
    p.add_argument("--seconds", default="10,20,30,40,50,60")
    p.add_argument("--width", type=int, default=192, help="embedding width (768 = base)")
    p.add_argument("--depth", type=int, default=4, help="audio blocks + 1 shared block (12 = base)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="bench_scaling", help="prefix of the .json and .png outputs")
    p.add_argument("--point", help=argparse.SUPPRESS)  # internal: measure one backbone:seconds and print JSON
    args = p.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.point:
        backbone, seconds = args.point.split(":")
        print(json.dumps(measure(backbone, int(seconds), args)))
        return

    import cavmae

    backbones = [b for b in args.backbones.split(",") if b in cavmae.list_blocks()]
    results = []
    for seconds in [int(s) for s in args.seconds.split(",")]:
        for backbone in backbones:
            cmd = [
                sys.executable,
                __file__,
                "--point",
                f"{backbone}:{seconds}",
                "--width",
                str(args.width),
                "--depth",
                str(args.depth),
                "--batch",
                str(args.batch),
                "--iters",
                str(args.iters),
                "--device",
                args.device,
            ] + (["--bf16"] if args.bf16 else [])
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"point {backbone}:{seconds} failed")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(
                f"{backbone:>6} {seconds:>3} s ({r['tokens']:>5} tokens): "
                f"{r['time_s']:8.3f} s  {r['peak_mib']:9.1f} MiB",
                flush=True,
            )

    import torch

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\ndevice: {device}; width {args.width}, {args.depth} blocks, batch {args.batch}, bf16={args.bf16}")
    print(
        f"{'seconds':>7} {'tokens':>6} "
        + " ".join(f"{b + ' s':>10} {b + ' MiB':>10}" for b in backbones)
        + ("  time mamba/vit" if len(backbones) == 2 else "")
    )
    by = {(r["backbone"], r["seconds"]): r for r in results}
    for seconds in sorted({r["seconds"] for r in results}):
        row = [by[(b, seconds)] for b in backbones]
        line = f"{seconds:>7} {row[0]['tokens']:>6} " + " ".join(
            f"{r['time_s']:>10.3f} {r['peak_mib']:>10.1f}" for r in row
        )
        if len(row) == 2:
            line += f"  {row[1]['time_s'] / row[0]['time_s']:>15.2f}"
        print(line)
    Path(args.out + ".json").write_text(
        json.dumps({"device": device, "args": vars(args), "results": results}, indent=2)
    )
    plot(results, backbones, device, args, Path(args.out + ".png"))
    print(f"wrote {args.out}.json and {args.out}.png")


def plot(results: list[dict], backbones: list[str], device: str, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for b in backbones:
        pts = sorted((r for r in results if r["backbone"] == b), key=lambda r: r["seconds"])
        x = [r["seconds"] for r in pts]
        ax_t.plot(x, [r["time_s"] for r in pts], marker="o", label=b)
        ax_m.plot(x, [r["peak_mib"] for r in pts], marker="o", label=b)
    ax_t.set(title="audio encoder forward+backward", xlabel="audio length (s)", ylabel="time per step (s)")
    ax_m.set(title="peak memory", xlabel="audio length (s)", ylabel="MiB")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{device}: width {args.width}, {args.depth} blocks, batch {args.batch}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
