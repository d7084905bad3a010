"""Compile one recorded kernel launch for a GPU target on the CPU, and read what the compiled code costs.

A :class:`Launch` (a JIT function with the arguments a launcher passed it) becomes the specialisation Triton's JIT
would build (pointer dtypes, integers equal to 1 as constants, 16-divisibility hints, constexprs, num_warps) and is
lowered with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` to PTX and cubin.
``cuobjdump -res-usage`` (shipped in the Triton wheel) reads the cubin's registers and stack frame (spills);
``nvdisasm`` gives the SASS whose instructions :func:`sass_counts` counts. Used by the compile gate
(``compile_gate.py`` beside it) and the static cost report (``bench_scan.py --static``); tooling, not part of the
installed package.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

_TORCH_TO_TRITON = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float64: "fp64",
    torch.int32: "i32",
    torch.int64: "i64",
}


@dataclass
class Launch:
    kernel: object  # triton JITFunction
    args: tuple
    kwargs: dict
    grid: tuple = ()  # the launch grid (programs per axis)


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
    lane_layout_ok: bool | None = None  # see lane_shuffle_layouts_ok

    @property
    def role(self) -> str:
        return "bwd" if "bwd" in self.kernel else "fwd"


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


def _classify(ops: list[tuple[str, float]]) -> dict:
    """Instruction counts by class, each instruction counted ``weight`` times: MUFU (exp2/rcp/lg2/...), SHFL, BAR,
    shared-memory, global-memory and local-memory (spill) ops, atomics."""
    classes = {
        "mufu": ("MUFU",),
        "shfl": ("SHFL",),
        "bar": ("BAR",),
        "lds_sts": ("LDS", "STS"),
        "ldg_stg": ("LDG", "STG"),
        "local": ("LDL", "STL"),
        "atom": ("ATOM", "RED"),
    }
    found = {"total": sum(w for _, w in ops)}
    for name, prefixes in classes.items():
        found[name] = sum(w for op, w in ops if op.startswith(prefixes))
    return found


def sass_loops(sass: str) -> tuple[list[str], list[dict]]:
    """The SASS opcodes in order and its loops: a loop runs from a label to the last backward branch to it.

    Each loop is ``{"start", "end", "depth"}`` (row indices, inclusive; depth 1 = outermost), sorted by start."""
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
    ends: dict[int, int] = {}
    for index, (opcode, line) in enumerate(rows):
        if opcode.startswith("BRA"):
            target = _BRANCH_TARGET.search(line)
            if target and target.group(1) in labels and labels[target.group(1)] <= index:
                start = labels[target.group(1)]
                ends[start] = max(ends.get(start, index), index)
    # A one-instruction loop is the trap after EXIT (``BRA`` to itself), never executed.
    loops = [{"start": start, "end": end} for start, end in sorted(ends.items()) if end > start]
    for loop in loops:
        loop["depth"] = sum(o["start"] <= loop["start"] and loop["end"] <= o["end"] for o in loops)
    return [op for op, _ in rows], loops


def sass_counts(sass: str, trips: tuple[int, ...] = ()) -> dict:
    """SASS instruction counts of a kernel, static and weighted by how often each instruction runs.

    ``trips[k]`` is the trip count of every loop at nesting depth k + 1 (the chunk loop first, then the loops inside
    it); an instruction runs the product of the trip counts of the loops around it, once outside every loop. So
    ``weighted`` is the dynamic instruction count of one thread (branches taken or not alike: predicated-off
    instructions still issue). Loops deeper than ``trips`` gives are counted once and reported in
    ``unweighted_depths``, so a caller can tell the estimate is incomplete. ``static`` counts each instruction once
    and ``loops`` once per instruction inside any loop (the first, unweighted figure of earlier reports)."""
    ops, loops = sass_loops(sass)
    weight = [1.0] * len(ops)
    unweighted = set()
    for loop in loops:
        depth = loop["depth"]
        trip = trips[depth - 1] if depth <= len(trips) else 1
        if depth > len(trips):
            unweighted.add(depth)
        for i in range(loop["start"], loop["end"] + 1):
            weight[i] *= trip
    in_loops = {i for loop in loops for i in range(loop["start"], loop["end"] + 1)}
    return {
        "all": _classify([(op, 1.0) for op in ops]),
        "loops": _classify([(ops[i], 1.0) for i in sorted(in_loops)]),
        "weighted": _classify(list(zip(ops, weight))),
        "trips": list(trips),
        "loop_depths": [loop["depth"] for loop in loops],
        "unweighted_depths": sorted(unweighted),
        "n_loops": sum(loop["depth"] == 1 for loop in loops),
    }


_SHFL_OPERAND = re.compile(r'tt\.elementwise_inline_asm "[^"]*shfl\.sync[^"]*".*?: tensor<([0-9x]+)x\w+, (#[\w.]+)>')
_LAYOUT_DEF = re.compile(r"^(#[\w.]+) = #ttg\.(blocked|linear)<\{(.*)\}>", re.M)


def _lanes_are_consecutive(kind: str, body: str, rank: int) -> bool:
    """Whether a TTGIR layout puts lane l of each warp on index l (mod 32) of the last axis, nothing else, and a
    thread's registers on the first axis in order (what a packed asm over a thread's states assumes)."""
    if kind == "linear":

        def bases(name: str) -> list[list[int]]:
            found = re.search(name + r" = \[(.*?)\]\]", body)
            return [[int(v) for v in re.findall(r"-?\d+", b)] for b in found.group(1).split("],")] if found else []

        registers = bases("register")
        rows_in_order = registers == [[1 << i] + [0] * (rank - 1) for i in range(len(registers))]
        return rows_in_order and bases("lane") == [[0] * (rank - 1) + [1 << i] for i in range(5)]
    fields = {k: [int(v) for v in re.findall(r"\d+", val)] for k, val in re.findall(r"(\w+) = \[([^\]]*)\]", body)}
    return (
        fields.get("threadsPerWarp") == [1] * (rank - 1) + [32]
        and fields.get("sizePerThread", [0])[-1] == 1
        and fields.get("order", [None])[0] == rank - 1
    )


def lane_shuffle_layouts_ok(ttgir: str) -> bool | None:
    """For a kernel with inline-asm lane shuffles (the backward's dB / dC reduction), whether every shuffled tensor
    has lanes on consecutive channels, as the shuffle masks assume; None when the kernel has none. The layout is
    Triton's choice, invisible to the interpreter: this is where a change of it would show."""
    layouts = {name: (kind, body) for name, kind, body in _LAYOUT_DEF.findall(ttgir)}
    operands = _SHFL_OPERAND.findall(ttgir)
    if not operands:
        return None
    for shape, layout in operands:
        if layout not in layouts:
            return False
        kind, body = layouts[layout]
        if not _lanes_are_consecutive(kind, body, len(shape.split("x"))):
            return False
    return True


def compile_launch(
    launch: Launch, arch: int, spec_name: str, with_sass: bool = False, trips: tuple[int, ...] = ()
) -> Compiled:
    """Compile one launch for sm_<arch>; with ``with_sass``, count its SASS (loops weighted by ``trips``)."""
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
        result.lane_layout_ok = lane_shuffle_layouts_ok(compiled.asm["ttgir"])
        if with_sass:
            result.sass = sass_counts(disassemble(compiled.asm["cubin"]), trips)
        result.ok = True
    except Exception as exc:  # the gate reports every failure, not only the first
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        result.error = (" | ".join(lines[-3:]) or type(exc).__name__)[-400:]
    return result
