"""Throughput and peak memory of one CAV-MAE pre-training step (forward, backward, Adam step) on this machine.

    python scripts/bench_train.py                       # tiny and base; on a GPU also bf16 / torch.compile
    python scripts/bench_train.py --models tiny --variants fp32 bf16 --repeats 5
    python scripts/bench_train.py --models base --batch-base 12 --steps 20
    python scripts/bench_train.py --models tiny --pretrain-runs 3     # also the whole tiny pre-training, 3 times

Every case (model x variant) is built in one process and timed interleaved: after --warmup untimed steps of each,
each of --repeats rounds times --steps steps of every case (order rotating). Printed: seconds per step and
samples/s as median (min-max) over the rounds, and for each variant the median (min-max) of the per-round
speed-ups over fp32 of the same model, with the machine and its load average at start and end.

Peak memory is measured apart (unless --no-memory), one child process per case so that it is the case's own:
CUDA max_memory_allocated on a GPU, the process's peak resident set size (including Python and torch themselves,
about 0.5 GB) on the CPU. --pretrain-runs N also times N whole runs of ``cavmae pretrain --config
configs/tiny.yaml`` (fresh processes, wall clock from start to exit: imports, synthetic data, validation and
checkpoints included), median (min-max). The raw rounds go to scripts/results/bench_train_<cpu|cuda>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(REPO))  # bench the checkout this script belongs to

from benchtools import Record, default_out, peak_rss_mib, ratio_spread, ratios, rounds, spread, summary  # noqa: E402

VARIANTS = ("fp32", "bf16", "compile", "bf16+compile")


def model_config(name: str, overrides: list[str] = ()):
    from cavmae.config import load_config

    return load_config(REPO / "configs" / "tiny.yaml" if name == "tiny" else None, list(overrides))


def build_case(model_name: str, variant: str, batch: int, overrides: list[str] = ()):
    """A function running one training step of `model_name` in `variant` (fp32, bf16, compile, bf16+compile)."""
    import torch

    from cavmae.train.optim import build_optimizer
    from cavmae.train.tasks import PretrainTask

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = model_config(model_name, overrides)
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
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, sum(p.numel() for p in model.parameters()) / 1e6


def peak_memory(model_name: str, variant: str, batch: int, warmup: int, overrides: list[str]) -> float:
    """GiB peak of a few steps of one case, in this (fresh) process."""
    import torch

    step, _ = build_case(model_name, variant, batch, overrides)
    for _ in range(max(warmup, 1)):
        step()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() / 2**30
    step()
    return peak_rss_mib() / 1024


def memory_in_child(name: str, batch: int, args) -> float:
    """Peak memory of case `name` (model:variant) at `batch`, measured in a child process."""
    cmd = [sys.executable, __file__, "--case", f"{name}:{batch}", "--warmup", str(args.warmup)]
    cmd += [a for o in args.override for a in ("--override", o)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"memory of {name} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_gib"]


def time_pretrain(runs: int, overrides: list[str]) -> list[float]:
    """Wall seconds of `runs` whole ``cavmae pretrain --config configs/tiny.yaml`` runs, each in a fresh folder."""
    seconds = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            cmd = [sys.executable, "-m", "cavmae.cli", "pretrain", "--config", str(REPO / "configs" / "tiny.yaml")]
            cmd += [f"train.out_dir={tmp}/run", *overrides]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_env())
            seconds.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit("tiny pretrain failed")
    return seconds


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, help="default: fp32 on CPU; all four on a GPU")
    p.add_argument("--batch-tiny", type=int, default=16)
    p.add_argument("--batch-base", type=int, default=0, help="default: 2 on CPU, 12 (the paper's per-GPU) on GPU")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case per round (base on the CPU: at most 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (each times every case once)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each case first (kernels, allocator)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--pretrain-runs", type=int, default=0, help="also time N whole tiny pre-training runs")
    p.add_argument("--pretrain-override", action="append", default=[], help="override for those runs (repeatable)")
    p.add_argument("--override", action="append", default=[], help="config override for every case (repeatable)")
    p.add_argument("--out", type=Path, help="JSON of the raw rounds (default: scripts/results/bench_train_<dev>.json)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: peak memory of model:variant:batch, as JSON
    args = p.parse_args(argv)

    if args.case:
        model_name, variant, batch = args.case.split(":")
        print(json.dumps({"peak_gib": peak_memory(model_name, variant, int(batch), args.warmup, args.override)}))
        return 0

    import torch

    record = Record("bench_train", vars(args))
    gpu = torch.cuda.is_available()
    variants = args.variants or (list(VARIANTS) if gpu else ["fp32"])
    cases, batches, steps, params = {}, {}, {}, {}
    for model_name in args.models:
        batch = args.batch_tiny if model_name == "tiny" else (args.batch_base or (12 if gpu else 2))
        n = min(args.steps, 2) if model_name == "base" and not gpu else args.steps
        for variant in variants:
            name = f"{model_name}:{variant}"
            step, params[model_name] = build_case(model_name, variant, batch, args.override)
            for _ in range(args.warmup):
                step()
            cases[name] = lambda s=step, k=n: [s() for _ in range(k)]
            batches[name], steps[name] = batch, n
    runs = rounds(cases, args.repeats, warmup=0)
    step_s = {name: [r.wall_s / steps[name] for r in rs] for name, rs in runs.items()}
    rates = {name: [batches[name] / s for s in ts] for name, ts in step_s.items()}
    memory = {} if args.no_memory else {n: memory_in_child(n, batches[n], args) for n in cases}
    pretrain = time_pretrain(args.pretrain_runs, args.pretrain_override) if args.pretrain_runs else []

    table = {}
    for name in cases:
        model_name, variant = name.split(":")
        row = {"params_m": params[model_name], "batch": batches[name], "steps_per_round": steps[name]}
        row |= {"step_s": summary(step_s[name]), "samples_per_s": summary(rates[name]), "peak_gib": memory.get(name)}
        if variant != "fp32" and f"{model_name}:fp32" in cases:
            row["speedup_vs_fp32"] = summary(ratios(step_s[f"{model_name}:fp32"], step_s[name]))
        table[name] = row
    raw = {"step_s": step_s, "peak_gib": memory, "pretrain_s": pretrain}
    record.finish(raw=raw, summary={"cases": table} | ({"pretrain_s": summary(pretrain)} if pretrain else {}))

    print(record.machine_lines())
    mem = "peak GPU memory" if gpu else "peak RSS"
    per_round = ", ".join(f"{k} {v} steps" for k, v in steps.items())
    print(f"{args.repeats} interleaved rounds; per case and round: {per_round}")
    for name in cases:
        model_name, variant = name.split(":")
        line = f"{name:<18} {params[model_name]:6.1f} M  batch {batches[name]:>2}: {spread(step_s[name], 's/step')}"
        line += f", {spread(rates[name], 'samples/s', 1)}"
        if memory:
            line += f", {mem} {memory[name]:.2f} GiB"
        if "speedup_vs_fp32" in table[name]:
            line += f"; speed-up vs fp32 {ratio_spread(step_s[f'{model_name}:fp32'], step_s[name])}"
        print(line)
    if pretrain:
        print(f"tiny pretrain (configs/tiny.yaml, whole run, {len(pretrain)} runs): {spread(pretrain, 's', 1)}")
    print(f"wrote {record.write(args.out or default_out('bench_train'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
