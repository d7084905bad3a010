"""Selective scan: every implementation against the sequential reference, forward and every gradient.

Error measure: max|impl - ref| / max|ref| per tensor, the reference run in float64 on the same input values.
Bounds: 1e-4 with float32 inputs, 2e-2 with bfloat16 inputs. Every result buffer an implementation allocates starts
as NaN (``nan_filled_outputs``), so an element a kernel never writes fails the comparison.

The Triton kernels run here on Triton's CPU interpreter (TRITON_INTERPRET=1, set below before the kernels are
imported) at small sizes; on a machine with CUDA they run compiled, and the `gpu`-marked tests add larger shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from scan_helpers import (
    CUDA,
    NAMES,
    Case,
    check_against_reference,
    flipped,
    make_inputs,
    nan_filled_outputs,
    output_allocators,
    relative_error,
    run,
    small_tiles,
    triton_scan,
)

from cavmae.kernels import (
    _resolve,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)

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


def test_nan_filled_outputs_reaches_every_implementation_and_shows_an_unwritten_element() -> None:
    from cavmae.kernels import torch_scan as torch_module

    triton_scan()
    patched = {module.__name__ for module in output_allocators()}
    implementations = ("torch_scan", "_triton_common", "triton_scan_fwd", "triton_scan_bwd")
    assert patched >= {f"cavmae.kernels.{name}" for name in implementations}, patched
    with nan_filled_outputs():
        for module in output_allocators():
            assert module.new_output((3, 4), torch.float32, torch.device("cpu")).isnan().all(), module.__name__

    def leaves_one_element_unwritten(**kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        out, last = selective_scan_torch(**kwargs)
        result = torch_module.new_output(tuple(out.shape), out.dtype, out.device)
        result.view(-1)[1:] = out.reshape(-1)[1:]
        return result, last

    check_against_reference(selective_scan_torch, Case(5, batch=1, dim=2))
    with pytest.raises(AssertionError, match="relative error above"):
        check_against_reference(leaves_one_element_unwritten, Case(5, batch=1, dim=2))


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
