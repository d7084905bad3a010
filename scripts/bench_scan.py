"""Selective-scan benchmark: implementations against each other and, on a GPU, against a hardware floor.

CPU (default shape batch 2, dim 256, L 512, N 16, float32): the PyTorch path against the sequential reference,
forward and forward + backward, in --reps interleaved rounds (order rotating), reported as median (min-max) of the
times and of the per-round ratios reference / PyTorch path, in wall-clock and process CPU time, with the machine and
its load at start and end; the raw rounds go to JSON (bench_scan_cpu.json in --out, default scripts/results/).

GPU (default shape batch 32, dim 1536, L 708, N 16, bfloat16): the Triton kernels against the PyTorch path (and
the reference with --with-reference), median times from triton.testing.do_bench, and the achieved fraction of a floor:

    bytes floor  = bytes that must cross DRAM / --bandwidth (default 4.8 TB/s, H200 HBM3e)
                   forward: read u, delta, z, B, C; write out (+ chunk-start states when training)
                   backward: read u, delta, z, dout, B, C, chunk states; write du, ddelta, dz, dB, dC
    exp floor    = transcendentals / --exp-rate (default 4.18e12 /s)
                   each pass evaluates batch*dim*L*N decays exp2(delta*A) (the backward recomputes them), plus
                   4 (forward) or 6 (backward) per (batch, dim, position): softplus (ex2, lg2), sigmoid (ex2, rcp)
                   H200 estimate: 16 MUFU results / SM / clock (CUDA guide, compute capability 9.0)
                   x 132 SMs x 1.98 GHz boost = 4.18e12 /s
    floor        = max(bytes floor, exp floor); achieved = floor / measured time

At N = 16 the exp floor is the larger one. Usage:

    python scripts/bench_scan.py                        # CPU, or the GPU shape when CUDA is available
    python scripts/bench_scan.py --device cuda --block-l 32 --block-d 8 --num-warps 4
    python scripts/bench_scan.py --static [--module old=path/to/triton_scan.py]   # no GPU needed

--static compiles the kernels at the GPU shape for sm_90 with Triton's real compiler on the CPU (TRITON_INTERPRET
must be unset) and reports, per kernel: registers, spills, shared memory, and per (t, d, n) element of its chunk
loop the SASS instructions, exp-unit (MUFU) ops and lane shuffles; then an ESTIMATE of the time at the GPU shape
from those counts (not a measurement):

    issue   = warps x loop instructions x chunks / (4 schedulers x SMs x clock)
    mufu    = lanes x MUFU ops x chunks / (16 per SM per clock x SMs x clock)
    shuffle = lanes x SHFL ops x chunks / (32 per SM per clock x SMs x clock)
    memory  = the bytes floor above
    estimate = max(issue, mufu, shuffle, memory)       (latency, occupancy and tails are not modelled)

against the floor above. The results go to scripts/results/bench_scan_static.{md,json}.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from benchtools import Record, default_out, ratio_spread, ratios, rounds, spread, summary  # noqa: E402

from cavmae.kernels import selective_scan_reference, selective_scan_torch  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_SHAPE = {"batch": 2, "dim": 256, "length": 512, "d_state": 16, "dtype": "fp32"}
GPU_SHAPE = {"batch": 32, "dim": 1536, "length": 708, "d_state": 16, "dtype": "bf16"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch", type=int)
    p.add_argument("--dim", type=int)
    p.add_argument("--length", type=int)
    p.add_argument("--d-state", type=int)
    p.add_argument("--groups", type=int, default=1, help="B/C groups (1: B, C of shape (batch, N, L))")
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--reps", type=int, default=None, help="timed runs per measurement (CPU: best of)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--bandwidth", type=float, default=4.8e12, help="peak DRAM bandwidth in bytes/s (H200: 4.8e12)")
    p.add_argument("--exp-rate", type=float, default=4.18e12, help="peak exp2/MUFU results per second")
    p.add_argument("--block-l", type=int, default=None, help="Triton chunk length (power of two)")
    p.add_argument("--block-d", type=int, default=None, help="Triton channels per program (power of two)")
    p.add_argument("--num-warps", type=int, default=None)
    p.add_argument("--with-reference", action="store_true", help="GPU: also time the sequential reference")
    p.add_argument("--static", action="store_true", help="static cost report from the compiled code (no GPU)")
    p.add_argument(
        "--module",
        action="append",
        default=[],
        help="LABEL=PATH of a triton_scan.py to report beside the current one (repeatable)",
    )
    p.add_argument("--sms", type=int, default=132, help="--static: streaming multiprocessors (H200: 132)")
    p.add_argument("--clock", type=float, default=1.98e9, help="--static: SM clock in Hz (H200 boost: 1.98e9)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="folder of the outputs (--static: the report; CPU: the raw rounds as JSON)",
    )
    return p.parse_args()


def make_inputs(args: argparse.Namespace, device: str) -> list[torch.Tensor]:
    """Mamba-block-like inputs: A = -(1..N), D = 1, dt bias = softplus^-1 of log-uniform [1e-3, 1e-1]."""
    gen = torch.Generator().manual_seed(0)
    b, d, L, n, g = args.batch, args.dim, args.length, args.d_state, args.groups
    dtype = DTYPES[args.dtype]
    bc_shape = (b, n, L) if g == 1 else (b, g, n, L)
    dt = torch.exp(torch.rand(d, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    tensors = [
        torch.randn(b, d, L, generator=gen).to(dtype),  # u
        (torch.randn(b, d, L, generator=gen) * 0.5).to(dtype),  # delta (raw, before bias and softplus)
        -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),  # A
        torch.randn(bc_shape, generator=gen).to(dtype),  # B
        torch.randn(bc_shape, generator=gen).to(dtype),  # C
        torch.ones(d),  # D
        torch.randn(b, d, L, generator=gen).to(dtype),  # z
        dt + torch.log(-torch.expm1(-dt)),  # delta_bias = softplus^-1(dt)
    ]
    return [t.to(device).requires_grad_() for t in tensors]


def forward_fn(scan: Callable, inputs: list[torch.Tensor]) -> Callable[[], torch.Tensor]:
    detached = [t.detach() for t in inputs]
    return lambda: scan(*detached, delta_softplus=True)


def forward_backward_fn(scan: Callable, inputs: list[torch.Tensor]) -> Callable[[], None]:
    grad = torch.ones(inputs[0].shape, dtype=inputs[0].dtype, device=inputs[0].device)

    def run() -> None:
        for t in inputs:
            t.grad = None
        scan(*inputs, delta_softplus=True).backward(grad)

    return run


def bench_cpu(args: argparse.Namespace) -> None:
    inputs = make_inputs(args, "cpu")
    reps = args.reps or 7
    record = Record("bench_scan", vars(args))
    raw, summaries, lines = {}, {}, []
    for label, make in (("forward", forward_fn), ("forward+backward", forward_backward_fn)):
        # Interleaved rounds (order rotating), so that load from other jobs on a shared machine hits both alike.
        runs = rounds(
            {"reference": make(selective_scan_reference, inputs), "torch": make(selective_scan_torch, inputs)}, reps
        )
        wall = {name: [r.wall_s for r in rs] for name, rs in runs.items()}
        cpu = {name: [r.cpu_s for r in rs] for name, rs in runs.items()}
        raw[label] = {"wall_s": wall, "cpu_s": cpu}
        summaries[label] = {
            "wall_s": {name: summary(v) for name, v in wall.items()},
            "speedup_wall": summary(ratios(wall["reference"], wall["torch"])),
            "speedup_cpu": summary(ratios(cpu["reference"], cpu["torch"])),
        }
        lines.append(
            f"{label:<17} reference {spread([t * 1e3 for t in wall['reference']], 'ms', 1)}, "
            f"torch path {spread([t * 1e3 for t in wall['torch']], 'ms', 2)}: "
            f"{ratio_spread(wall['reference'], wall['torch'])} wall, {ratio_spread(cpu['reference'], cpu['torch'])} CPU"
        )
    record.finish(raw=raw, summary=summaries)
    print(record.machine_lines())
    print(
        f"batch {args.batch}, dim {args.dim}, L {args.length}, N {args.d_state}, groups {args.groups}, {args.dtype}; "
        f"{reps} interleaved rounds, median (min-max); speed-up = reference / torch path per round"
    )
    print("\n".join(lines))
    print(f"wrote {record.write(Path(args.out) / default_out('bench_scan').name)}")


def floors(args: argparse.Namespace, n_chunks: int) -> dict[str, tuple[float, float]]:
    """(bytes, transcendentals) that each pass must at least move / evaluate."""
    b, d, L, n, g = args.batch, args.dim, args.length, args.d_state, args.groups
    size = DTYPES[args.dtype].itemsize
    bdl, bgnl = b * d * L, b * g * n * L
    chunk_states = b * d * n_chunks * n * 4
    fwd_bytes = 4 * bdl * size + 2 * bgnl * size + chunk_states  # u, delta, z, out; B, C; states
    bwd_bytes = 7 * bdl * size + 4 * bgnl * size + chunk_states  # u, delta, z, dout, du, ddelta, dz; B, C, dB, dC
    fwd_exp = bdl * n + 4 * bdl
    bwd_exp = bdl * n + 6 * bdl
    return {
        "forward": (fwd_bytes, fwd_exp),
        "forward+backward": (fwd_bytes + bwd_bytes, fwd_exp + bwd_exp),
    }


def bench_gpu(args: argparse.Namespace) -> None:
    import triton
    import triton.testing

    from cavmae.kernels.triton_scan import DEFAULT_CONFIG, ScanConfig, selective_scan_triton

    config = ScanConfig(
        block_l=args.block_l or DEFAULT_CONFIG.block_l,
        block_d=args.block_d or DEFAULT_CONFIG.block_d,
        num_warps=args.num_warps or DEFAULT_CONFIG.num_warps,
    )
    inputs = make_inputs(args, "cuda")
    reps = args.reps or 50

    def triton_scan(*xs: torch.Tensor, **kw: object) -> torch.Tensor:
        return selective_scan_triton(*xs, config=config, **kw)

    impls = [("triton", triton_scan), ("torch path", selective_scan_torch)]
    if args.with_reference:
        impls.append(("reference", selective_scan_reference))
    times: dict[tuple[str, str], float] = {}
    for name, scan in impls:
        for label, make in (("forward", forward_fn), ("forward+backward", forward_backward_fn)):
            fn = make(scan, inputs)
            times[(name, label)] = triton.testing.do_bench(fn, warmup=5, rep=reps, return_mode="median") * 1e-3
            torch.cuda.empty_cache()

    n_chunks = triton.cdiv(args.length, config.block_l)
    print(
        f"{torch.cuda.get_device_name()}; batch {args.batch}, dim {args.dim}, L {args.length}, N {args.d_state}, "
        f"groups {args.groups}, {args.dtype}; Triton {config}"
    )
    print(
        f"floor inputs: {args.bandwidth / 1e12:.2f} TB/s, {args.exp_rate / 1e12:.2f} T transcendentals/s "
        "(set with --bandwidth / --exp-rate)"
    )
    columns = ("pass", "impl", "ms", "vs triton", "bytes floor", "exp floor", "achieved")
    print("{:<18} {:<11} {:>9} {:>10} {:>12} {:>10} {:>9}".format(*columns))
    for label, (n_bytes, n_exp) in floors(args, n_chunks).items():
        byte_floor, exp_floor = n_bytes / args.bandwidth, n_exp / args.exp_rate
        floor = max(byte_floor, exp_floor)
        for name, _ in impls:
            t = times[(name, label)]
            print(
                f"{label:<18} {name:<11} {t * 1e3:>9.3f} {t / times[('triton', label)]:>9.1f}x "
                f"{byte_floor * 1e3:>10.3f}ms {exp_floor * 1e3:>8.3f}ms {floor / t:>8.1%}"
            )
    print("achieved = max(bytes floor, exp floor) / measured median")


def loop_trips(kernel: str, kwargs: dict, length: int) -> tuple[int, ...]:
    """Trip counts of this checkout's kernels' loops by nesting depth at ``length``, read off their code: the chunk
    loop, then inside it the forward's loop over steps of UNROLL positions and the backward's two walks over
    sub-chunks of triton_scan_bwd.SUB positions. Any other kernel (an older version given with --module) is counted
    by its chunk loop only."""
    chunks = math.ceil(length / kwargs["BLOCK_L"])
    if kernel == "_scan_fwd_kernel":
        return (chunks, kwargs["BLOCK_L"] // kwargs["UNROLL"])
    if kernel == "_scan_bwd_kernel":
        from cavmae.kernels.triton_scan_bwd import SUB

        return (chunks, kwargs["BLOCK_L"] // SUB.value)
    return (chunks,)


def disjoint_branches(kernel: str, kwargs: dict) -> int:
    """Code branches of which each program runs one: this checkout's bidirectional backward holds both directions
    and runs one per program (the grid's last axis), so its per-thread counts are divided by 2."""
    return 2 if kernel == "_scan_bwd_kernel" and kwargs.get("BIDIRECTIONAL") else 1


def static_report(args: argparse.Namespace) -> None:
    import json

    import compile_gate  # scripts/compile_gate.py, beside this script

    for key, value in GPU_SHAPE.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    modules = [("current", None)] + [tuple(m.split("=", 1)) for m in args.module]
    rows = []
    for label, path in modules:
        module = compile_gate.load_module(path)
        specs = [compile_gate.Spec("one direction", batch=2, d_state=args.d_state, dtype=DTYPES[args.dtype])]
        if hasattr(module, "scan_forward_bidirectional"):
            specs.append(
                compile_gate.Spec(
                    "bidirectional, fused",
                    batch=2,
                    d_state=args.d_state,
                    dtype=DTYPES[args.dtype],
                    bidirectional=True,
                    strided=True,
                )  # fmt: skip
            )
        for spec in specs:
            launches = compile_gate.record_launches(module, spec)
            fwd = next(x for x in launches if "fwd" in x.kernel.__name__ and x.kwargs.get("SAVE_CHUNKS"))
            bwd = next(x for x in launches if "bwd" in x.kernel.__name__)
            for role, launch in (("forward (saving chunk states)", fwd), ("backward", bwd)):
                name = launch.kernel.__name__ if path is None else "(other version)"
                trips = loop_trips(name, launch.kwargs, args.length)
                result = compile_gate.compile_launch(launch, 90, spec.name, with_sass=True, trips=trips)
                branches = disjoint_branches(name, launch.kwargs)
                rows.append(static_row(args, label, spec, role, launch, result, branches))
                log_row(rows[-1])
    n_chunks = math.ceil(args.length / 64)
    floor_s = max(b / args.bandwidth if i == 0 else b / args.exp_rate
                  for i, b in enumerate(floors(args, n_chunks)["forward+backward"]))  # fmt: skip
    summary = {}
    for label, _ in modules:
        for direction in ("one direction", "bidirectional, fused"):
            picked = [r for r in rows if r["module"] == label and r["spec"] == direction]
            if len(picked) == 2 and all(r["ok"] for r in picked):
                per_direction = sum(r["estimate_s"] for r in picked) / (2 if direction.startswith("bi") else 1)
                summary[f"{label}, {direction}"] = {
                    "estimate_fwd_bwd_ms_per_direction": per_direction * 1e3,
                    "floor_ms": floor_s * 1e3,
                    "x_floor": per_direction / floor_s,
                }
    report = {"shape": GPU_SHAPE | {"d_state": args.d_state, "dtype": args.dtype}, "sms": args.sms,
              "clock_hz": args.clock, "exp_rate": args.exp_rate, "bandwidth": args.bandwidth, "floor_ms": floor_s * 1e3,
              "modules": {label: path or "kernels/ (this checkout)" for label, path in modules},
              "kernels": rows, "summary": summary}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_scan_static.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "bench_scan_static.md").write_text(static_markdown(report))
    print(static_markdown(report))


def static_row(args, label, spec, role, launch, result, branches: int = 1) -> dict:
    """Per-element counts of a compiled kernel and its estimated time at the GPU shape.

    The SASS counts are dynamic per thread: each instruction weighted by the trip counts of the loops around it at
    the GPU shape (kernel_sass.sass_counts), divided by ``branches`` where the code holds that many disjoint
    branches of which each program runs one (the bidirectional backward: one direction per program; the few
    instructions before the branch are divided too). Scaled to the GPU shape's grid (the launch was recorded at the
    spec's batch) they give the thread-instructions of the whole launch; per element = that / (batch x dim x L x N
    x directions). The memory time of a bidirectional call with z includes the ungated y_fwd + y_bwd that the
    forward saves and the backward reads (for dz)."""
    kw = launch.kwargs
    warps = kw.get("num_warps", 4)
    directions = 2 if kw.get("BIDIRECTIONAL") else 1
    row = {"module": label, "spec": spec.name, "kernel": role, "ok": result.ok, "error": result.error,
           "registers": result.registers, "spill_bytes": result.stack_bytes, "shared_bytes": result.shared_bytes,
           "block_l": kw["BLOCK_L"], "block_d": kw["BLOCK_D"], "num_warps": warps, "branches": branches}  # fmt: skip
    if not result.ok:
        return row
    programs = math.prod(launch.grid) * args.batch / spec.batch
    threads = programs * 32 * warps
    weighted = {k: v / branches for k, v in result.sass["weighted"].items()}
    elements = args.batch * args.dim * args.length * args.d_state * directions
    per = {k: weighted[k] * threads / elements for k in ("total", "mufu", "shfl", "ldg_stg", "local")}
    cycles = {
        "issue": threads / 32 * weighted["total"] / (4 * args.sms),
        "mufu": threads * weighted["mufu"] / (16 * args.sms),
        "shuffle": threads * weighted["shfl"] / (32 * args.sms),
    }
    seconds = {k: v / args.clock for k, v in cycles.items()}
    n_chunks = math.ceil(args.length / kw["BLOCK_L"])
    fwd_bytes, bwd_bytes = (floors(args, n_chunks)[p][0] for p in ("forward", "forward+backward"))
    pass_bytes = fwd_bytes if role.startswith("forward") else bwd_bytes - fwd_bytes
    if kw.get("BIDIRECTIONAL") and kw.get("HAS_Z"):
        pass_bytes += args.batch * args.dim * args.length * DTYPES[args.dtype].itemsize / directions  # saved y
    seconds["memory"] = pass_bytes * directions / args.bandwidth
    row.update({"per_element": per, "trips": result.sass["trips"], "loop_depths": result.sass["loop_depths"],
                "unweighted_depths": result.sass["unweighted_depths"], "estimate_parts_s": seconds,
                "estimate_s": max(seconds.values()), "bound": max(seconds, key=seconds.get)})  # fmt: skip
    return row


def log_row(row: dict) -> None:
    if row["ok"]:
        p = row["per_element"]
        print(f"{row['module']:<10} {row['spec']:<22} {row['kernel']:<30} regs {row['registers']:>3} spills "
              f"{row['spill_bytes']:>5} B  SASS/elem {p['total']:6.1f} MUFU/elem {p['mufu']:5.2f} SHFL/elem "
              f"{p['shfl']:5.2f}  est {row['estimate_s'] * 1e3:7.3f} ms ({row['bound']})")  # fmt: skip
    else:
        print(f"{row['module']:<10} {row['spec']:<22} {row['kernel']:<30} does not compile: {row['error'][:200]}")


def static_markdown(report: dict) -> str:
    shape = report["shape"]
    lines = [
        "# Selective scan: static cost report (ESTIMATES from compiled code, not measurements)",
        "",
        f"Shape b{shape['batch']} d{shape['dim']} L{shape['length']} N{shape['d_state']} {shape['dtype']}, sm_90 "
        f"({report['sms']} SMs at {report['clock_hz'] / 1e9:.2f} GHz, {report['exp_rate'] / 1e12:.2f} T exp/s, "
        f"{report['bandwidth'] / 1e12:.1f} TB/s). Floor of forward+backward, one direction: "
        f"{report['floor_ms']:.3f} ms. Per-element counts are per (t, d, n) element of the whole launch: every SASS "
        "instruction of the compiled kernel weighted by the trip counts of the loops around it at this shape (the "
        "column 'loop trips', outermost first; a loop deeper than those counts once and is flagged), times the "
        "threads of the grid, over batch x dim x L x N x directions. The bidirectional backward runs each direction "
        "in its own programs: its code holds both directions, a thread runs one, so its per-thread counts are "
        "halved (column 'branches'). Estimate = max(issue, MUFU, shuffle, memory) "
        "with issue = warp-instructions / (4 schedulers x SMs x clock), MUFU = lane-ops / (16 per SM per clock), "
        "shuffle = lane-ops / (32 per SM per clock), memory = the bytes floor (the fused bidirectional pair: plus "
        "the ungated y_fwd + y_bwd the forward saves for the backward's dz); latency, occupancy and tails are not "
        "modelled.",
        "",
        "| kernels | call | kernel | regs | stack (spill) B | smem B | tile L x D, warps | loop trips | branches "
        "| SASS/elem | MUFU/elem | SHFL/elem | estimate ms | bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sources = [f"- {label}: {path}" for label, path in report.get("modules", {}).items()]
    lines[3:3] = ["", "Kernels:", *sources] if sources else []
    for r in report["kernels"]:
        if not r["ok"]:
            lines.append(f"| {r['module']} | {r['spec']} | {r['kernel']} | does not compile: "
                         f"{r['error'][:160]} | | | | | | | | | | |")  # fmt: skip
            continue
        p = r["per_element"]
        trips = " x ".join(map(str, r["trips"])) + (" (deeper loops once)" if r["unweighted_depths"] else "")
        lines.append(
            f"| {r['module']} | {r['spec']} | {r['kernel']} | {r['registers']} | {r['spill_bytes']} | "
            f"{r['shared_bytes']} | {r['block_l']} x {r['block_d']}, {r['num_warps']} | {trips} | "
            f"{r.get('branches', 1)} | {p['total']:.1f} | "
            f"{p['mufu']:.2f} | {p['shfl']:.2f} | {r['estimate_s'] * 1e3:.3f} | {r['bound']} |"
        )
    lines += ["", "| kernels | estimated forward+backward per direction, ms | floor ms | x floor |"]
    lines += ["|---|---|---|---|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['estimate_fwd_bwd_ms_per_direction']:.3f} | {s['floor_ms']:.3f} | "
                     f"{s['x_floor']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.static:
        static_report(args)
        return
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    for key, value in (GPU_SHAPE if device == "cuda" else CPU_SHAPE).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cpu":
        bench_cpu(args)
    else:
        bench_gpu(args)


if __name__ == "__main__":
    main()
