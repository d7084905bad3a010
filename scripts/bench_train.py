"""Throughput and peak memory of one CAV-MAE pre-training step (forward, backward, Adam step) on this machine.

    python scripts/bench_train.py                       # tiny and base; on a GPU also bf16 / torch.compile
    python scripts/bench_train.py --models base --batch-base 12 --steps 20

Each case runs in its own subprocess so that its peak memory is its own: CUDA max_memory_allocated on a GPU, the
process's peak resident set size (including Python and torch themselves, about 0.5 GB) on the CPU. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench the checkout this script belongs to


def model_config(name: str):
    from cavmae.config import Config, load_config

    return load_config(REPO / "configs" / "tiny.yaml") if name == "tiny" else Config()


def run_case(model_name: str, variant: str, batch: int, steps: int, warmup: int) -> dict:
    """Time `steps` training steps after `warmup` ones; variant is fp32, bf16, compile or bf16+compile."""
    import torch

    from cavmae.train.optim import build_optimizer
    from cavmae.train.tasks import PretrainTask

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = model_config(model_name)
    torch.manual_seed(0)
    task = PretrainTask()
    model = task.build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg.optim)
    step_model = torch.compile(model) if "compile" in variant else model
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in variant)
    data = task.example_batch(cfg, batch, device)

    def step() -> None:
        with amp:
            loss = task.step(step_model, data, cfg)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
        where = torch.cuda.get_device_name()
    else:
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        where = f"CPU ({torch.get_num_threads()} threads)"
    return {
        "model": model_name,
        "variant": variant,
        "batch": batch,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": elapsed / steps,
        "samples_per_s": batch * steps / elapsed,
        "peak_gib": peak_gib,
        "device": where,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    p.add_argument("--variants", nargs="+", help="default: fp32 on CPU; fp32 bf16 compile bf16+compile on a GPU")
    p.add_argument("--batch-tiny", type=int, default=16)
    p.add_argument("--batch-base", type=int, default=0, help="default: 2 on CPU, 12 (the paper's per-GPU) on GPU")
    p.add_argument("--steps", type=int, default=10, help="timed steps (base on the CPU: at most 4)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection, allocator)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # model:variant:batch, run in a subprocess
    args = p.parse_args()

    if args.case:
        model_name, variant, batch = args.case.split(":")
        print(json.dumps(run_case(model_name, variant, int(batch), args.steps, args.warmup)))
        return 0

    import torch

    gpu = torch.cuda.is_available()
    variants = args.variants or (["fp32", "bf16", "compile", "bf16+compile"] if gpu else ["fp32"])
    rows = []
    for model_name in args.models:
        batch = args.batch_tiny if model_name == "tiny" else (args.batch_base or (12 if gpu else 2))
        for variant in variants:
            cmd = [sys.executable, __file__, "--case", f"{model_name}:{variant}:{batch}"]
            steps = min(args.steps, 4) if model_name == "base" and not gpu else args.steps
            cmd += ["--steps", str(steps), "--warmup", str(args.warmup)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{model_name} {variant}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not rows:
        return 1
    mem = "peak GPU memory (GiB)" if gpu else "peak RSS (GiB)"
    print(f"\ndevice: {rows[0]['device']}, torch {torch.__version__}\n")
    print(f"| model | params (M) | variant | batch | s / step | samples / s | {mem} |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params_m']:.1f} | {r['variant']} | {r['batch']} | {r['step_s']:.3f} | "
            f"{r['samples_per_s']:.1f} | {r['peak_gib']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
