"""Compile every selective-scan kernel specialisation for real GPU targets, on a machine without a GPU.

Triton's interpreter (TRITON_INTERPRET=1) runs a kernel as Python and accepts code that the compiler rejects, so the
interpreter tests cannot see a kernel that fails to compile. This script holds what is gated (the calls the GPU
path and the GPU tests make, :func:`default_specs`, the register budgets and the no-spill rule) and drives the
launchers of ``cavmae.kernels.triton_scan`` on CPU tensors with every kernel replaced by a recorder (nothing is
launched); ``kernel_sass.py`` beside it turns each recorded launch into the specialisation the JIT would build and
compiles it with the real compiler for sm_90 / sm_80, reading registers and spills from the cubin. Tooling, not part
of the installed package: run it from a checkout (tests/test_scan_compile.py runs it in CI).

    python scripts/compile_gate.py                   # sm_90 and sm_80, every specialisation; exit 1 on failure
    python scripts/compile_gate.py --json out.json   # also write the per-kernel figures

Run it with TRITON_INTERPRET unset (the kernels must be JIT functions, not interpreted ones).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's cavmae, installed or not

from kernel_sass import Compiled, Launch, compile_launch, key_of  # noqa: E402

__all__ = ["Compiled", "Launch", "Spec", "compile_launch", "default_specs", "record_launches", "run_gate"]

log = logging.getLogger(__name__)

ARCHS = (90, 80)
# Registers per thread above which a kernel fails the gate. The forward must leave room for three programs of
# 4 warps per SM (168 registers); the backward may use the hardware limit of 255 but must not spill (spills fail the
# gate separately).
REGISTER_BUDGET = {"fwd": 168, "bwd": 255}
# The scan kernels have no local arrays, so any stack frame is spilled registers: none is allowed, for any kernel.


@dataclass(frozen=True)
class Spec:
    """One call of the Triton scan path that the GPU code or the GPU tests make."""

    name: str
    batch: int = 2
    dim: int = 1536
    length: int = 708
    d_state: int = 16
    groups: int = 0
    dtype: torch.dtype = torch.bfloat16
    D: bool = True
    z: bool = True
    bias: bool = True
    softplus: bool = True
    reverse: bool = False
    bidirectional: bool = False
    strided: bool = False
    config: dict = field(default_factory=dict)  # ScanConfig overrides
    # Every spec compiles for every gated arch (sm_90 and sm_80), the GPU tests' flag, shape and tile combinations
    # too: a spill or a register overflow can appear on one arch only. A narrower tuple is for ad-hoc checks.
    archs: tuple[int, ...] = ARCHS


def default_specs() -> list[Spec]:
    """The Mamba block's calls (both dtypes, bidirectional, strided), the GPU tests' cases, the tested tile sizes."""
    specs = [
        Spec("mamba-block-bf16", bidirectional=True, strided=True),
        Spec("mamba-block-fp32", bidirectional=True, strided=True, dtype=torch.float32),
        Spec("bench-bf16"),
        Spec("bench-fp32-reverse", dtype=torch.float32, reverse=True),
        # tests/test_scan.py GPU_CASES
        Spec("gpu-case-1029", batch=2, dim=48, length=1029, dtype=torch.float32),
        Spec("gpu-case-708-grouped", dim=64, groups=2, reverse=True, strided=True),
        Spec("gpu-case-no-z", batch=1, dim=24, length=2048, z=False, dtype=torch.float32),
        Spec("gpu-case-L1", batch=3, dim=40, length=1, dtype=torch.float32),
        Spec("plain", dim=64, length=100, D=False, z=False, bias=False, softplus=False, dtype=torch.float32),
    ]
    # tile sizes the interpreter tests use, compiled as well
    for block_l, block_d in ((16, 4), (8, 1), (64, 2), (16, 8)):
        specs.append(
            Spec(
                f"tiles-{block_l}x{block_d}",
                dim=64,
                length=100,
                d_state=3,
                groups=2,
                reverse=True,
                dtype=torch.float32,
                config={"block_l": block_l, "block_d": block_d, "block_d_fwd": 4},
            )
        )
    return specs


# --------------------------------------------------------------------------------------------------------------
# recording launches


class _Recorder:
    def __init__(self, kernel: object, launches: list[Launch]) -> None:
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def record(*args: object, **kwargs: object) -> None:
            self.launches.append(Launch(self.kernel, args, kwargs, tuple(grid)))

        return record


def _kernels(module: ModuleType) -> list[tuple[ModuleType, str]]:
    """(module, name) of every ``*_kernel`` JIT function the launchers call: in the modules ``module.KERNEL_MODULES``
    lists (the split kernel files), or in ``module`` itself (a one-file kernel such as an older version)."""
    from triton.runtime.jit import JITFunction

    return [
        (owner, name)
        for owner in getattr(module, "KERNEL_MODULES", (module,))
        for name, obj in vars(owner).items()
        if name.endswith("_kernel") and isinstance(obj, JITFunction)
    ]


def _inputs(spec: Spec, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    b, d, L, n, G = spec.batch, spec.dim, spec.length, spec.d_state, spec.groups

    def act(*channels: int) -> torch.Tensor:
        x = torch.randn(b, L, *channels, generator=gen).to(spec.dtype).movedim(1, -1)
        return x if spec.strided else x.contiguous()

    bc = (G, n) if G else (n,)
    return {
        "u": act(d),
        "delta": act(d),
        "A": -torch.rand(d, n, generator=gen),
        "B": act(*bc),
        "C": act(*bc),
        "D": torch.ones(d) if spec.D else None,
        "z": act(d) if spec.z else None,
        "delta_bias": torch.zeros(d) if spec.bias else None,
    }


def record_launches(module: ModuleType, spec: Spec) -> list[Launch]:
    """Forward (with and without chunk saves) and backward launches of one spec, nothing launched."""
    launches: list[Launch] = []
    originals = {(owner, name): getattr(owner, name) for owner, name in _kernels(module)}
    config = module.ScanConfig(**spec.config)
    try:
        for (owner, name), kernel in originals.items():
            setattr(owner, name, _Recorder(kernel, launches))
        x = _inputs(spec, 0)
        args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        if spec.bidirectional and hasattr(module, "scan_forward_bidirectional"):
            y = _inputs(spec, 1)
            pair = [(x[k], y[k]) for k in ("u", "delta", "A", "B", "C", "D")]
            bias = (x["delta_bias"], y["delta_bias"])
            for save in (True, False):
                module.scan_forward_bidirectional(*pair, x["z"], bias, spec.softplus, save, config=config)
            out, lasts, chunks, y_ungated = module.scan_forward_bidirectional(
                *pair, x["z"], bias, spec.softplus, True, config=config
            )
            module.scan_backward_bidirectional(
                *pair, x["z"], bias, spec.softplus, chunks, y_ungated, torch.empty_like(out), None, config=config
            )
        else:
            directions = (False, True) if spec.bidirectional else (spec.reverse,)
            for reverse in directions:
                for save in (True, False):
                    module.scan_forward(*args, spec.softplus, reverse, save, config=config)
                _, last, chunks = module.scan_forward(*args, spec.softplus, reverse, True, config=config)
                module.scan_backward(
                    *args,
                    spec.softplus,
                    reverse,
                    chunks,
                    torch.empty_like(x["u"]),
                    torch.empty_like(last),
                    config=config,
                )
    finally:
        for (owner, name), kernel in originals.items():
            setattr(owner, name, kernel)
    return launches


def problems_of(result: Compiled) -> list[str]:
    """Why a compiled kernel fails the gate (empty when it passes)."""
    if not result.ok:
        return [f"compile error: {result.error}"]
    found = []
    if result.stack_bytes != 0:
        found.append(f"spills ({result.stack_bytes} B stack frame)")
    if result.lane_layout_ok is False:
        found.append("lane shuffles on a layout whose lanes are not consecutive channels (wrong sums on a GPU)")
    budget = REGISTER_BUDGET[result.role]
    if result.registers > budget:
        found.append(f"{result.registers} registers > budget {budget}")
    return found


def unique_launches(
    module: ModuleType, specs: list[Spec], archs: tuple[int, ...]
) -> Iterator[tuple[Spec, Launch, int]]:
    """(spec, launch, arch) for every distinct specialisation (the JIT's cache key) and arch, each once."""
    seen = set()
    for spec in specs:
        for launch in record_launches(module, spec):
            key = key_of(launch)
            for arch in archs:
                if arch in spec.archs and (key, arch) not in seen:
                    seen.add((key, arch))
                    yield spec, launch, arch


def load_module(path: str | None) -> ModuleType:
    """cavmae.kernels.triton_scan, or a kernel file at ``path`` loaded as a module of the cavmae.kernels package."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("compile_gate: unset TRITON_INTERPRET (the kernels must be compiled, not interpreted)")
    if path is None:
        return importlib.import_module("cavmae.kernels.triton_scan")
    name = "cavmae.kernels._gate_" + Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_gate(module: ModuleType, archs: tuple[int, ...], specs: list[Spec], with_sass: bool = False) -> list[Compiled]:
    results = []
    for spec, launch, arch in unique_launches(module, specs, archs):
        result = compile_launch(launch, arch, spec.name, with_sass=with_sass)
        log.info("sm_%d %s [%s] %s", arch, result.kernel, spec.name, "ok" if result.ok else "FAILED")
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90 (default: 90 and 80)")
    parser.add_argument("--module", help="kernel file to check instead of kernels/triton_scan.py")
    parser.add_argument("--only", action="append", help="only the specs with these names")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import triton

    module = load_module(args.module)
    specs = [s for s in default_specs() if not args.only or s.name in args.only]
    results = run_gate(module, tuple(args.arch or ARCHS), specs)
    failed = 0
    for r in results:
        problems = problems_of(r)
        failed += bool(problems)
        status = "; ".join(problems) if problems else "ok"
        print(
            f"sm_{r.arch} {r.kernel:<22} {r.spec:<22} warps {r.num_warps} regs {r.registers:>4} "
            f"stack {max(r.stack_bytes, 0):>4} smem {r.shared_bytes:>6}  {status}"
        )
    print(f"Triton {triton.__version__}: {len(results)} compiled kernel specialisations, {failed} failing")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
