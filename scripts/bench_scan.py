"""Selective-scan benchmark: implementations against each other and, on a GPU, against a hardware floor.

CPU (default shape batch 2, dim 256, L 512, N 16, float32): the PyTorch path against the sequential reference,
forward and forward + backward, timed interleaved and reported as the best of --reps runs each (the minimum is the
figure least disturbed by other load on a shared machine), in wall-clock time and in process CPU time. The
issue's acceptance figure is the forward + backward ratio (reference / PyTorch path >= 10).

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

At N = 16 the exp floor is the larger one (design notes section 2). Usage:

    python scripts/bench_scan.py                        # CPU, or the GPU shape when CUDA is available
    python scripts/bench_scan.py --device cuda --block-l 32 --block-d 8 --num-warps 4
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

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


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one run. CPU time sums every thread: the work done."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_cpu(args: argparse.Namespace) -> None:
    inputs = make_inputs(args, "cpu")
    reps = args.reps or 7
    rows = []
    for label, make in (("forward", forward_fn), ("forward+backward", forward_backward_fn)):
        ref_fn, fast_fn = make(selective_scan_reference, inputs), make(selective_scan_torch, inputs)
        ref_fn(), fast_fn()  # warm-up
        ref, fast = [], []
        # Interleaved, so that load from other jobs on a shared machine hits both alike; the best run of each.
        for _ in range(reps):
            ref.append(timed(ref_fn))
            fast.extend(timed(fast_fn) for _ in range(3))
        rows.append((label, tuple(map(min, zip(*ref))), tuple(map(min, zip(*fast)))))
    print(
        f"CPU, {torch.get_num_threads()} threads; batch {args.batch}, dim {args.dim}, L {args.length}, "
        f"N {args.d_state}, groups {args.groups}, {args.dtype}; best of {reps} (reference) / {reps * 3} (torch path), "
        "interleaved"
    )
    print(f"{'':<18} {'wall clock ms':^34}   {'CPU time ms (all threads)':^34}")
    columns = f"{'reference':>10} {'torch path':>11} {'speed-up':>11}"
    print(f"{'pass':<18} {columns}   {columns}")
    for label, (ref_wall, ref_cpu), (fast_wall, fast_cpu) in rows:
        print(
            f"{label:<18} {ref_wall * 1e3:>10.1f} {fast_wall * 1e3:>11.2f} {ref_wall / fast_wall:>10.1f}x   "
            f"{ref_cpu * 1e3:>10.1f} {fast_cpu * 1e3:>11.2f} {ref_cpu / fast_cpu:>10.1f}x"
        )


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


def main() -> None:
    args = parse_args()
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
