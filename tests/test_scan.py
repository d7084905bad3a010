"""Selective scan: every implementation against the sequential reference, forward and every gradient.

Error measure: max|impl - ref| / max|ref| per tensor, the reference run in float64 on the same input values.
Bounds: 1e-4 with float32 inputs, 2e-2 with bfloat16 inputs. Every result buffer an implementation allocates starts
as NaN (``nan_filled_outputs``), so an element a kernel never writes fails the comparison.

The Triton kernels run here on Triton's CPU interpreter (TRITON_INTERPRET=1, set below before the kernels are
imported) at small sizes; on a machine with CUDA they run compiled, and the `gpu`-marked tests add larger shapes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if not CUDA:
    # Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when cavmae.kernels.triton_scan is imported
    # (lazily, on first use of impl="triton"): set it first so the kernels run on the CPU interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from cavmae.kernels import (  # noqa: E402
    _resolve,
    selective_scan,
    selective_scan_bidirectional,
    selective_scan_reference,
    selective_scan_torch,
)
from cavmae.kernels._common import nan_filled_outputs, new_output  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def triton_scan() -> ModuleType:
    """cavmae.kernels.triton_scan, its kernels interpreted when there is no GPU (re-imported if needed)."""
    from cavmae.kernels import triton_scan as module

    if not CUDA and not module.INTERPRETED:
        # Imported earlier in this process before TRITON_INTERPRET was set: decorate the kernels again (the kernel
        # files first, in import order, then the module that binds their launchers).
        for kernel_module in module.KERNEL_MODULES:
            importlib.reload(kernel_module)
        module = importlib.reload(module)
    assert CUDA or module.INTERPRETED, "TRITON_INTERPRET must be 1 to test the Triton kernels without a GPU"
    return module


def small_tiles() -> Callable[..., object]:
    """Triton scan with 16-position chunks and 4-channel blocks, so small tests cross chunk and block edges."""
    module = triton_scan()
    return partial(module.selective_scan_triton, config=module.ScanConfig(block_l=16, block_d=4, block_d_fwd=4))


@dataclass(frozen=True)
class Case:
    length: int
    batch: int = 2
    dim: int = 5
    d_state: int = 4
    groups: int = 0  # 0: B and C are (batch, N, L); G >= 1: (batch, G, N, L)
    z: bool = True
    D: bool = True
    bias: bool = True
    softplus: bool = True
    reverse: bool = False
    strided: bool = False  # activations are transposed views of (batch, L, channels) tensors
    dtype: torch.dtype = torch.float32
    delta_shift: float = -1.0  # centre of the raw delta: +6 makes every decay underflow

    def __str__(self) -> str:
        flags = [f"L{self.length}", f"b{self.batch}d{self.dim}n{self.d_state}"]
        flags += [f"G{self.groups}"] if self.groups else []
        flags += [name for name in ("z", "D", "bias", "softplus", "reverse", "strided") if getattr(self, name)]
        flags += ["bf16"] if self.dtype == torch.bfloat16 else []
        flags += [f"shift{self.delta_shift:g}"] if self.delta_shift != -1.0 else []
        return "-".join(flags)


def make_inputs(case: Case, seed: int = 0, device: str = DEVICE) -> dict[str, torch.Tensor | None]:
    """Leaf tensors for one case: activations in case.dtype, A / D / delta_bias in float32."""
    gen = torch.Generator().manual_seed(seed)
    b, d, L, n, G = case.batch, case.dim, case.length, case.d_state, case.groups

    def activation(*channels: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        # (batch, *channels, L); strided: a permuted view of a (batch, L, *channels) tensor
        x = torch.randn(b, L, *channels, generator=gen) * scale + shift
        x = x.movedim(1, -1)
        if not case.strided:
            x = x.contiguous()
        return x.to(device=device, dtype=case.dtype)

    if case.softplus:
        delta = activation(d, scale=0.5, shift=case.delta_shift)
    else:
        delta = activation(d, scale=0.05).abs() + 0.02
    bc_channels = (G, n) if G else (n,)
    inputs = {
        "u": activation(d),
        "delta": delta,
        "A": (-torch.arange(1, n + 1) * (0.5 + torch.rand(d, 1, generator=gen))).to(device),
        "B": activation(*bc_channels),
        "C": activation(*bc_channels),
        "D": torch.randn(d, generator=gen).to(device) if case.D else None,
        "z": activation(d) if case.z else None,
        "delta_bias": (torch.rand(d, generator=gen) * 0.2).to(device) if case.bias else None,
    }
    return {k: v.detach().requires_grad_() if v is not None else None for k, v in inputs.items()}


def run(fn: Callable[..., object], inputs: dict, case: Case, seed: int = 1) -> dict[str, torch.Tensor]:
    """Forward and backward of ``fn`` with fixed random cotangents; results and gradients as float64 on CPU."""
    out, last_state = fn(**inputs, delta_softplus=case.softplus, return_last_state=True, reverse=case.reverse)
    gen = torch.Generator().manual_seed(seed)
    d_out = torch.randn(out.shape, generator=gen).to(out)
    d_last = torch.randn(last_state.shape, generator=gen).to(last_state)
    leaves = {k: v for k, v in inputs.items() if v is not None}
    grads = torch.autograd.grad((out, last_state), tuple(leaves.values()), (d_out, d_last))
    results = {"out": out, "last_state": last_state}
    results.update({f"d{k}": g for k, g in zip(leaves, grads)})
    return {k: v.detach().double().cpu() for k, v in results.items()}


def reference_results(inputs: dict, case: Case) -> dict[str, torch.Tensor]:
    as64 = {k: v.detach().double().requires_grad_() if v is not None else None for k, v in inputs.items()}
    return run(selective_scan_reference, as64, case)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def check_against_reference(fn: Callable[..., object], case: Case, device: str = DEVICE) -> None:
    inputs = make_inputs(case, device=device)
    with nan_filled_outputs():
        actual = run(fn, inputs, case)
    expected = reference_results(inputs, case)
    assert actual.keys() == expected.keys()
    tol = TOLERANCE[case.dtype]
    errors = {k: relative_error(actual[k], expected[k]) for k in expected}
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= tol}  # `not <=` also catches NaN
    assert not bad, f"{case}: relative error above {tol:g} in {bad}"


# Sizes: odd channel counts and state sizes, lengths 1 / 7 / 63 / 64 / 300 / 1029, every optional input on and off.
TORCH_CASES = [
    Case(1),
    Case(7, dim=3, d_state=3, z=False, D=False, bias=False, softplus=False),
    Case(7, dim=5, d_state=5, groups=5, reverse=True),
    Case(63, dim=7, groups=7, strided=True),
    Case(63, dim=6, groups=3, z=False, reverse=True, dtype=torch.bfloat16),
    Case(64, dim=5, d_state=4, reverse=True),  # whole chunks only (the torch path works in chunks of 32)
    Case(300, dim=9, d_state=6, D=False, strided=True, reverse=True),
    Case(300, dim=3, softplus=False, bias=False, dtype=torch.bfloat16, strided=True),
    Case(300, dim=4, groups=2, delta_shift=6.0),
    Case(1029, batch=1, dim=5, d_state=4, groups=1),
    Case(1029, batch=1, dim=3, d_state=3, reverse=True, dtype=torch.bfloat16),
]

# The interpreter runs a scan's combine function once per element, in Python: sizes stay tiny.
TRITON_CASES = [
    Case(1),
    Case(7, dim=7, d_state=3, z=False, D=False, bias=False, softplus=False),
    Case(7, dim=6, groups=2, reverse=True, strided=True),
    Case(63, batch=1, dim=5, d_state=3, strided=True),
    Case(63, batch=1, dim=6, d_state=4, groups=3, reverse=True, dtype=torch.bfloat16),
    Case(63, batch=1, dim=3, d_state=5, D=False, z=False, delta_shift=6.0),
    Case(300, batch=1, dim=3, d_state=2),
    Case(300, batch=1, dim=2, d_state=3, groups=2, reverse=True, strided=True, dtype=torch.bfloat16),
    Case(300, batch=2, dim=8, d_state=8),
    Case(63, batch=1, dim=3, d_state=16, softplus=False, reverse=True),
    Case(1029, batch=1, dim=2, d_state=2),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_torch_path_matches_reference(case: Case) -> None:
    check_against_reference(selective_scan_torch, case, device="cpu")


@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_triton_matches_reference(case: Case) -> None:
    check_against_reference(small_tiles(), case)


@pytest.mark.parametrize(("block_l", "block_d"), [(8, 1), (64, 2), (16, 8)], ids=lambda v: str(v))
def test_triton_tile_sizes(block_l: int, block_d: int) -> None:
    module = triton_scan()
    config = module.ScanConfig(block_l=block_l, block_d=block_d)
    case = Case(70, batch=2, dim=6, d_state=3, groups=2, reverse=True)
    check_against_reference(partial(module.selective_scan_triton, config=config), case)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_gradients_of_a_subset_of_inputs(impl: str) -> None:
    # Frozen parameters (no requires_grad) must not break the backward, and the other gradients must not change.
    if impl == "triton":
        triton_scan()
    case = Case(40, batch=1, dim=3, d_state=2)
    inputs = make_inputs(case)
    for name in ("A", "C", "D", "z"):
        inputs[name] = inputs[name].detach()
    out = selective_scan(**inputs, delta_softplus=True, impl=impl)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out)
    leaves = [inputs[k] for k in ("u", "delta", "B", "delta_bias")]
    actual = torch.autograd.grad(out, leaves, grad_out)
    expected = torch.autograd.grad(selective_scan_reference(**inputs, delta_softplus=True), leaves, grad_out)
    for a, e in zip(actual, expected):
        assert relative_error(a.double().cpu(), e.double().cpu()) <= 1e-4


def test_public_op_dispatches_to_each_implementation() -> None:
    case = Case(40, batch=1, dim=3, d_state=3)
    triton_scan()
    for impl in ("reference", "torch", "triton", "auto"):
        check_against_reference(partial(selective_scan, impl=impl), case)
    cpu_inputs = make_inputs(case, device="cpu")
    assert _resolve("auto", cpu_inputs["u"]) is selective_scan_torch


def test_triton_passes_strided_inputs_to_the_kernels_without_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    module = triton_scan()
    launches: list[tuple] = []

    class Spy:
        def __init__(self, kernel: object) -> None:
            self.kernel = kernel

        def __getitem__(self, grid: tuple) -> Callable[..., None]:
            def launch(*args: object, **kwargs: object) -> None:
                launches.append(dict(zip(self.kernel.arg_names, args)))
                self.kernel[grid](*args, **kwargs)

            return launch

    for kernel_module in module.KERNEL_MODULES:
        for name in ("_scan_fwd_kernel", "_scan_bwd_kernel"):
            if hasattr(kernel_module, name):
                monkeypatch.setattr(kernel_module, name, Spy(getattr(kernel_module, name)))
    case = Case(9, batch=1, dim=3, d_state=2, strided=True)
    inputs = make_inputs(case)
    assert not inputs["u"].is_contiguous() and not inputs["B"].is_contiguous()
    out = module.selective_scan_triton(**inputs, delta_softplus=True)
    out.sum().backward()
    assert len(launches) == 2
    kernel_args = {"u": "u0_ptr", "delta": "dt0_ptr", "A": "A0_ptr", "B": "B0_ptr", "C": "C0_ptr", "D": "D0_ptr",
                   "z": "z_ptr", "delta_bias": "bias0_ptr"}  # fmt: skip
    for args in launches:
        for name in NAMES:
            passed, given = args[kernel_args[name]], inputs[name]
            assert passed.data_ptr() == given.data_ptr(), f"{name} was copied before the launch"
            assert passed.stride()[-1] == given.stride()[-1] and passed.dtype == given.dtype, name
    assert out.stride() == inputs["u"].stride(), "the output is not in the layout of u"


def flipped(x: torch.Tensor | None) -> torch.Tensor | None:
    return x.flip(-1) if x is not None else None


@pytest.mark.parametrize("impl", ["reference", "torch", "triton"])
def test_bidirectional_matches_flipping_by_hand(impl: str) -> None:
    if impl == "triton":
        triton_scan()
    case = Case(40, batch=2, dim=5, d_state=3, groups=0)
    fwd, bwd = make_inputs(case, seed=10), make_inputs(case, seed=11)
    z = fwd["z"]
    args = {k: (fwd[k], bwd[k]) for k in NAMES if k != "z"}
    with nan_filled_outputs():
        out, (last_f, last_b) = selective_scan_bidirectional(
            **args, z=z, delta_softplus=True, return_last_state=True, impl=impl
        )
    # By hand: the backward direction is the forward scan of the flipped sequence, flipped back.
    ref_f, ref_last_f = selective_scan_reference(**fwd, delta_softplus=True, return_last_state=True)
    flip_args = {k: flipped(v) if k in ("u", "delta", "B", "C", "z") else v for k, v in bwd.items()}
    flip_args["z"] = flipped(z)
    ref_b, ref_last_b = selective_scan_reference(**flip_args, delta_softplus=True, return_last_state=True)
    expected = ref_f + ref_b.flip(-1)

    tol = 1e-4
    for name, a, e in (("out", out, expected), ("last_f", last_f, ref_last_f), ("last_b", last_b, ref_last_b)):
        assert relative_error(a.detach().double().cpu(), e.detach().double().cpu()) <= tol, name
    leaves = [v for k in NAMES if k != "z" for v in (fwd[k], bwd[k])] + [z]
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    with nan_filled_outputs():
        actual = torch.autograd.grad(out, leaves, grad_out)
    wanted = torch.autograd.grad(expected, leaves, grad_out)
    for i, (a, e) in enumerate(zip(actual, wanted)):
        assert relative_error(a.double().cpu(), e.double().cpu()) <= tol, f"gradient {i}"


FUSED_CASES = [
    Case(70, batch=2, dim=6, d_state=3, groups=2, strided=True),
    Case(37, batch=1, dim=5, d_state=4, z=False, D=False, dtype=torch.bfloat16),
]


def fused_bidirectional(case: Case, combine: str = "add", block_l: int = 16) -> tuple[dict, dict]:
    """The fused Triton bidirectional scan (small tiles) and the float64 reference pair, results and gradients."""
    module = triton_scan()
    config = module.ScanConfig(block_l=block_l, block_d=4, block_d_fwd=4)
    fwd, bwd = make_inputs(case, seed=10), make_inputs(case, seed=11)
    z = fwd["z"]
    keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    scale = 0.5 if combine == "mean" else 1.0

    def triton_pair(f: dict, b: dict, z_: torch.Tensor | None) -> tuple:
        return module.selective_scan_bidirectional_triton(
            tuple(f[k] for k in keys), tuple(b[k] for k in keys), z_, case.softplus, out_scale=scale, config=config
        )

    def reference_pair(f: dict, b: dict, z_: torch.Tensor | None) -> tuple:
        out_f, last_f = selective_scan_reference(**{**f, "z": z_}, delta_softplus=case.softplus, return_last_state=True)
        out_b, last_b = selective_scan_reference(
            **{**b, "z": z_}, delta_softplus=case.softplus, return_last_state=True, reverse=True
        )
        return (out_f + out_b) * scale, last_f, last_b

    def results(fn: Callable, f: dict, b: dict, z_: torch.Tensor | None) -> dict:
        out, last_f, last_b = fn(f, b, z_)
        gen = torch.Generator().manual_seed(4)
        cotangents = [torch.randn(x.shape, generator=gen).to(x) for x in (out, last_f, last_b)]
        leaves = {f"{d}{k}": x[k] for d, x in (("f_", f), ("b_", b)) for k in keys if x[k] is not None}
        if z_ is not None:
            leaves["z"] = z_
        grads = torch.autograd.grad((out, last_f, last_b), tuple(leaves.values()), cotangents)
        found = {"out": out, "last_f": last_f, "last_b": last_b}
        found.update({f"d{k}": g for k, g in zip(leaves, grads)})
        return {k: v.detach().double().cpu() for k, v in found.items()}

    with nan_filled_outputs():
        actual = results(triton_pair, fwd, bwd, z)
    as64 = [
        {k: v.detach().double().requires_grad_() if v is not None else None for k, v in x.items()} for x in (fwd, bwd)
    ]
    z64 = as64[0]["z"]
    expected = results(reference_pair, as64[0], as64[1], z64)
    return actual, expected


@pytest.mark.parametrize("case", FUSED_CASES, ids=str)
def test_triton_fused_bidirectional_matches_reference(case: Case) -> None:
    actual, expected = fused_bidirectional(case, combine="mean" if case.z else "add")
    assert actual.keys() == expected.keys()
    tol = TOLERANCE[case.dtype]
    errors = {k: relative_error(actual[k], expected[k]) for k in expected}
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= tol}
    assert not bad, f"{case}: relative error above {tol:g} in {bad}"


def test_triton_backward_is_bitwise_deterministic() -> None:
    # No float atomics: two backward passes over the same inputs give the same bits, single and fused bidirectional.
    case = Case(70, batch=2, dim=8, d_state=3, groups=2)
    module = triton_scan()
    fn = partial(module.selective_scan_triton, config=module.ScanConfig(block_l=16, block_d=2, block_d_fwd=2))
    inputs = make_inputs(case)
    first, second = run(fn, inputs, case), run(fn, inputs, case)
    for k in first:
        assert torch.equal(first[k], second[k]), f"{k} differs between two identical runs"
    pair_1, _ = fused_bidirectional(case, block_l=32)
    pair_2, _ = fused_bidirectional(case, block_l=32)
    for k in pair_1:
        assert torch.equal(pair_1[k], pair_2[k]), f"bidirectional {k} differs between two identical runs"


def test_bidirectional_shared_inputs_and_mean() -> None:
    case = Case(20, batch=1, dim=3, d_state=2)
    inputs = make_inputs(case)
    both = selective_scan_bidirectional(**inputs, delta_softplus=True, impl="torch")
    mean = selective_scan_bidirectional(**inputs, delta_softplus=True, impl="torch", combine="mean")
    forward = selective_scan_reference(**inputs, delta_softplus=True)
    backward = selective_scan_reference(**inputs, delta_softplus=True, reverse=True)
    assert relative_error(both.detach().double(), (forward + backward).detach().double()) <= 1e-4
    torch.testing.assert_close(mean, both * 0.5)
    with pytest.raises(ValueError, match="combine"):
        selective_scan_bidirectional(**inputs, combine="max")
    with pytest.raises(ValueError, match="z"):
        selective_scan_bidirectional(**{**inputs, "z": (inputs["z"], inputs["z"])})


def test_reference_reverse_is_the_flipped_forward_scan() -> None:
    case = Case(12, batch=2, dim=4, d_state=3, groups=2)
    x = {k: v.detach().double() if v is not None else None for k, v in make_inputs(case, device="cpu").items()}
    out, last = selective_scan_reference(**x, delta_softplus=True, return_last_state=True, reverse=True)
    flip_x = {k: flipped(v) if k in ("u", "delta", "B", "C", "z") else v for k, v in x.items()}
    out_f, last_f = selective_scan_reference(**flip_x, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(out, out_f.flip(-1))
    torch.testing.assert_close(last, last_f)


def test_reference_matches_the_closed_form() -> None:
    # h_t = sum_{s<=t} exp(A * sum_{s<r<=t} delta_r) * delta_s * B_s * u_s, written out with explicit sums.
    case = Case(6, batch=1, dim=2, d_state=3, groups=2)
    x = {k: v.detach().double() if v is not None else None for k, v in make_inputs(case, device="cpu").items()}
    out = selective_scan_reference(**x, delta_softplus=True)
    delta = F.softplus(x["delta"] + x["delta_bias"][:, None])
    expected = torch.zeros_like(out)
    for d in range(case.dim):
        for t in range(case.length):
            h = torch.zeros(case.d_state, dtype=torch.float64)
            for s in range(t + 1):
                decay = torch.exp(x["A"][d] * delta[0, d, s + 1 : t + 1].sum())
                h += decay * delta[0, d, s] * x["B"][0, d, :, s] * x["u"][0, d, s]
            y = (h * x["C"][0, d, :, t]).sum() + x["D"][d] * x["u"][0, d, t]
            expected[0, d, t] = y * F.silu(x["z"][0, d, t])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("fn", [selective_scan_reference, selective_scan_torch], ids=["reference", "torch"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck_float64(fn: Callable[..., object], reverse: bool) -> None:
    case = Case(4, batch=1, dim=2, d_state=2, groups=2)
    x = {k: v.detach().double().requires_grad_() for k, v in make_inputs(case, device="cpu").items()}

    def scan(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fn(*args, delta_softplus=True, return_last_state=True, reverse=reverse)

    assert torch.autograd.gradcheck(scan, tuple(x[k] for k in NAMES))


def test_nan_filled_outputs_fills_new_buffers() -> None:
    with nan_filled_outputs():
        assert new_output((3, 4), torch.float32, torch.device("cpu")).isnan().all()
        assert new_output((2,), torch.bfloat16, torch.device("cpu")).isnan().all()


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("u", lambda x: x["u"][0], "u must be"),
        ("delta", lambda x: x["delta"][..., :-1], "delta must be"),
        ("A", lambda x: x["A"].to(torch.bfloat16), "A must be a float32"),
        ("A", lambda x: x["A"][:-1], "A must be"),
        ("B", lambda x: x["B"][..., :-1], "B must be"),
        ("C", lambda x: x["C"].unsqueeze(1).expand(-1, 2, -1, -1), "B and C must use the same number of groups"),
        ("B", lambda x: x["B"].unsqueeze(1).expand(-1, 3, -1, -1), "G dividing dim"),
        ("D", lambda x: x["D"][:-1], "D must be"),
        ("z", lambda x: x["z"].transpose(1, 2), "z must be"),
        ("delta_bias", lambda x: x["delta_bias"].half(), "delta_bias must be"),
    ],
)
def test_bad_inputs_name_the_argument(name: str, bad: Callable, message: str) -> None:
    x = {k: v.detach() for k, v in make_inputs(Case(5, batch=2, dim=4), device="cpu").items()}
    x[name] = bad(x)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x)


def test_unknown_impl_is_rejected() -> None:
    x = make_inputs(Case(3, batch=1, dim=2), device="cpu")
    with pytest.raises(ValueError, match="impl must be one of"):
        selective_scan(**x, impl="cuda")


# Larger shapes, compiled kernels: run where there is a GPU (deselected in CPU CI with -m "not gpu").
GPU_CASES = [
    Case(1029, batch=2, dim=48, d_state=16),
    Case(708, batch=2, dim=64, d_state=16, groups=2, reverse=True, strided=True, dtype=torch.bfloat16),
    Case(2048, batch=1, dim=24, d_state=16, z=False, delta_shift=2.0),
    Case(1, batch=3, dim=40, d_state=16),
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_gpu_matches_reference(case: Case, impl: str) -> None:
    fn = triton_scan().selective_scan_triton if impl == "triton" else selective_scan_torch
    check_against_reference(fn, case, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_gpu_triton_matches_torch_path_at_block_size() -> None:
    case = Case(708, batch=4, dim=256, d_state=16, dtype=torch.bfloat16)
    inputs = make_inputs(case, device="cuda")
    with nan_filled_outputs():
        actual = run(triton_scan().selective_scan_triton, inputs, case)
    expected = run(selective_scan_torch, inputs, case)
    for k in expected:
        assert relative_error(actual[k], expected[k]) <= 2e-2, k
