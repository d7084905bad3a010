"""Compile every selective-scan kernel specialisation for real GPU targets, on a machine without a GPU.

Triton's interpreter (TRITON_INTERPRET=1) runs a kernel as Python and accepts code that the compiler rejects, so the
interpreter tests cannot see a kernel that fails to compile. This module drives the launchers of
``cavmae.kernels.triton_scan`` on CPU tensors with every kernel replaced by a recorder (nothing is launched), turns
each recorded launch into the specialisation the JIT would build (pointer dtypes, integers equal to 1 as constants,
16-divisibility hints, constexprs, num_warps) and lowers it with ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))`` to PTX and cubin. ``cuobjdump -res-usage`` (shipped in the Triton wheel) reads
the cubin's registers and stack frame (spills); ``nvdisasm`` gives the SASS that the static cost report counts.

    python -m cavmae.kernels.compile_gate                   # sm_90 and sm_80, every specialisation; exit 1 on failure
    python -m cavmae.kernels.compile_gate --json out.json   # also write the per-kernel figures

Run it with TRITON_INTERPRET unset (the kernels must be JIT functions, not interpreted ones).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

ARCHS = (90, 80)
# Registers per thread above which a kernel fails the gate. The forward must leave room for three programs of
# 4 warps per SM (168 registers); the backward may use the hardware limit of 255 but must not spill (spills fail the
# gate separately).
REGISTER_BUDGET = {"fwd": 168, "bwd": 255}
# Stack frame (register spills) a kernel may have before it fails the gate. The target is none; today's kernels
# keep 8-48 B on some specialisations (ptxas keeps a few values in local memory even well below the register
# limit), which costs little next to the scan's own traffic. More than this is a real spill and fails.
STACK_ALLOWANCE_BYTES = 64
_TORCH_TO_TRITON = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float64: "fp64",
    torch.int32: "i32",
    torch.int64: "i64",
}


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
    # The model's and the benchmark's calls compile for every gated arch; the specs that only cover the GPU tests'
    # flag, shape and tile combinations compile for sm_90 (the GPU those tests run on): code generation per arch is
    # covered by the former, and this halves the gate's CPU time.
    archs: tuple[int, ...] = ARCHS


def default_specs() -> list[Spec]:
    """The Mamba block's calls (both dtypes, bidirectional, strided), the GPU tests' cases, the tested tile sizes."""
    tests = (90,)
    specs = [
        Spec("mamba-block-bf16", bidirectional=True, strided=True),
        Spec("mamba-block-fp32", bidirectional=True, strided=True, dtype=torch.float32),
        Spec("bench-bf16"),
        Spec("bench-fp32-reverse", dtype=torch.float32, reverse=True, archs=tests),
        # tests/test_scan.py GPU_CASES
        Spec("gpu-case-1029", batch=2, dim=48, length=1029, dtype=torch.float32, archs=tests),
        Spec("gpu-case-708-grouped", dim=64, groups=2, reverse=True, strided=True, archs=tests),
        Spec("gpu-case-no-z", batch=1, dim=24, length=2048, z=False, dtype=torch.float32, archs=tests),
        Spec("gpu-case-L1", batch=3, dim=40, length=1, dtype=torch.float32, archs=tests),
        Spec(
            "plain", dim=64, length=100, D=False, z=False, bias=False, softplus=False, dtype=torch.float32, archs=tests
        ),
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
                archs=tests,
            )
        )
    return specs


# --------------------------------------------------------------------------------------------------------------
# recording launches


@dataclass
class Launch:
    kernel: object  # triton JITFunction
    args: tuple
    kwargs: dict


class _Recorder:
    def __init__(self, kernel: object, launches: list[Launch]) -> None:
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def record(*args: object, **kwargs: object) -> None:
            self.launches.append(Launch(self.kernel, args, kwargs))

        return record


def _kernel_names(module: ModuleType) -> list[str]:
    from triton.runtime.jit import JITFunction

    return [name for name, obj in vars(module).items() if name.endswith("_kernel") and isinstance(obj, JITFunction)]


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
    originals = {name: getattr(module, name) for name in _kernel_names(module)}
    config = module.ScanConfig(**spec.config)
    try:
        for name, kernel in originals.items():
            setattr(module, name, _Recorder(kernel, launches))
        x = _inputs(spec, 0)
        args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        if spec.bidirectional and hasattr(module, "scan_forward_bidirectional"):
            y = _inputs(spec, 1)
            pair = [(x[k], y[k]) for k in ("u", "delta", "A", "B", "C", "D")]
            bias = (x["delta_bias"], y["delta_bias"])
            for save in (True, False):
                module.scan_forward_bidirectional(*pair, x["z"], bias, spec.softplus, save, config=config)
            out, lasts, chunks = module.scan_forward_bidirectional(
                *pair, x["z"], bias, spec.softplus, True, config=config
            )
            module.scan_backward_bidirectional(
                *pair, x["z"], bias, spec.softplus, chunks, torch.empty_like(out), None, config=config
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
        for name, kernel in originals.items():
            setattr(module, name, kernel)
    return launches


# --------------------------------------------------------------------------------------------------------------
# from a launch to a compiled kernel


def specialisation(launch: Launch) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, attrs, options) as Triton's JIT would specialise this launch."""
    fn = launch.kernel
    names = fn.arg_names
    values = dict(zip(names, launch.args))
    options = {}
    for key, value in launch.kwargs.items():
        if key in names:
            values[key] = value
        else:
            options[key] = value
    signature, constexprs, attrs = {}, {}, {}
    for index, (name, param) in enumerate(zip(names, fn.params)):
        value = values[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _TORCH_TO_TRITON[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int) and getattr(param, "do_not_specialize", False):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        elif isinstance(value, int):
            if value == 1:  # the JIT turns integer arguments equal to 1 into constants
                signature[name], constexprs[name] = "constexpr", 1
                continue
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value is None:
            signature[name], constexprs[name] = "constexpr", None
        else:
            raise TypeError(f"{fn.__name__}: cannot specialise argument {name}={value!r}")
    return signature, constexprs, attrs, options


def key_of(launch: Launch) -> str:
    signature, constexprs, attrs, options = specialisation(launch)
    return repr(
        (
            launch.kernel.__name__,
            sorted(signature.items()),
            sorted(constexprs.items(), key=str),
            sorted(attrs),
            sorted(options.items()),
        )
    )


@dataclass
class Compiled:
    kernel: str
    arch: int
    spec: str
    constexprs: dict
    num_warps: int
    ok: bool = False
    error: str = ""
    registers: int = -1
    stack_bytes: int = -1  # stack frame of the kernel: register spills (no scan kernel has local arrays)
    shared_bytes: int = -1
    sass: dict = field(default_factory=dict)  # instruction counts (see sass_counts)
    triton_version: str = ""

    @property
    def role(self) -> str:
        return "bwd" if "bwd" in self.kernel else "fwd"

    def problems(self) -> list[str]:
        if not self.ok:
            return [f"compile error: {self.error}"]
        found = []
        if self.stack_bytes > STACK_ALLOWANCE_BYTES:
            found.append(f"spills ({self.stack_bytes} B stack frame > allowance {STACK_ALLOWANCE_BYTES} B)")
        budget = REGISTER_BUDGET[self.role]
        if self.registers > budget:
            found.append(f"{self.registers} registers > budget {budget}")
        return found


def _nvidia_bin(tool: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool
    return str(path) if path.exists() else tool


def cubin_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack frame bytes) of the cubin Triton built, from ``cuobjdump -res-usage``.

    Read from the compiled artifact itself (also when it comes from Triton's cache), so the figures are those of the
    binary a GPU would load, whatever ptxas flags the installed Triton passes. The scan kernels have no local arrays:
    a stack frame means register spills."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([_nvidia_bin("cuobjdump"), "-res-usage", str(path)], capture_output=True, text=True)
    usage = re.search(r"REG:(\d+) STACK:(\d+)", proc.stdout)
    if proc.returncode or usage is None:
        raise RuntimeError(f"cuobjdump -res-usage gave no register count: {(proc.stdout + proc.stderr)[-500:]}")
    return int(usage.group(1)), int(usage.group(2))


def disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([_nvidia_bin("nvdisasm"), "-c", str(path)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"nvdisasm failed: {proc.stderr[-500:]}")
    return proc.stdout


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")
_BRANCH_TARGET = re.compile(r"BRA\s+(?:\S+\s+)?`?\(?\.L_x_(\d+)")
_LABEL = re.compile(r"^\.L_x_(\d+):")


def sass_counts(sass: str) -> dict:
    """Static SASS instruction counts: whole kernel and inside loops (instructions between a label and a backward
    branch to it; nested loops counted once, in their outermost loop), by class: MUFU (exp2/rcp/lg2/...), SHFL,
    BAR, local-memory and global memory ops, atomics."""
    rows: list[tuple[str, str]] = []  # (opcode, line)
    labels: dict[str, int] = {}
    for line in sass.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            labels[label.group(1)] = len(rows)
            continue
        m = _INSTR.search(line)
        if m:
            rows.append((m.group(3), line))
    loops = []
    for index, (opcode, line) in enumerate(rows):
        if opcode.startswith("BRA"):
            target = _BRANCH_TARGET.search(line)
            if target and target.group(1) in labels and labels[target.group(1)] <= index:
                loops.append((labels[target.group(1)], index))
    outer = [lp for lp in loops if not any(o != lp and o[0] <= lp[0] and lp[1] <= o[1] for o in loops)]

    def classify(ops: list[str]) -> dict:
        return {
            "total": len(ops),
            "mufu": sum(op.startswith("MUFU") for op in ops),
            "shfl": sum(op.startswith("SHFL") for op in ops),
            "bar": sum(op.startswith("BAR") for op in ops),
            "lds_sts": sum(op.startswith(("LDS", "STS")) for op in ops),
            "ldg_stg": sum(op.startswith(("LDG", "STG")) for op in ops),
            "local": sum(op.startswith(("LDL", "STL")) for op in ops),
            "atom": sum(op.startswith(("ATOM", "RED")) for op in ops),
        }

    in_loops = [rows[i][0] for start, end in outer for i in range(start, end + 1)]
    per_loop = [classify([rows[i][0] for i in range(start, end + 1)]) for start, end in outer]
    return {
        "all": classify([op for op, _ in rows]),
        "loops": classify(in_loops),
        "n_loops": len(outer),
        "per_loop": sorted(per_loop, key=lambda c: -c["total"]),
    }


def compile_launch(launch: Launch, arch: int, spec_name: str, with_sass: bool = False) -> Compiled:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs, options = specialisation(launch)
    options.setdefault("num_warps", 4)
    result = Compiled(
        kernel=launch.kernel.__name__,
        arch=arch,
        spec=spec_name,
        constexprs={k: v for k, v in constexprs.items() if v is not None and signature[k] == "constexpr"},
        num_warps=options["num_warps"],
        triton_version=triton.__version__,
    )
    try:
        src = ASTSource(launch.kernel, signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
        result.registers, result.stack_bytes = cubin_usage(compiled.asm["cubin"])
        result.shared_bytes = int(compiled.metadata.shared)
        if with_sass:
            result.sass = sass_counts(disassemble(compiled.asm["cubin"]))
        result.ok = True
    except Exception as exc:  # the gate reports every failure, not only the first
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        result.error = (" | ".join(lines[-3:]) or type(exc).__name__)[-400:]
    return result


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
    parser.add_argument("--module", help="kernel file to check instead of cavmae/kernels/triton_scan.py")
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
        problems = r.problems()
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
