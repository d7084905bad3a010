"""The bidirectional scan (both directions in one call, the fused Triton launch): against flipping by hand and the
reference, bit-determinism of the Triton backward, shared inputs, the launcher's output scale. Helpers: scan_helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from scan_helpers import (
    NAMES,
    TOLERANCE,
    Case,
    flipped,
    make_inputs,
    nan_filled_outputs,
    relative_error,
    run,
    triton_scan,
)

from cavmae.kernels import (
    selective_scan_bidirectional,
    selective_scan_reference,
)


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
    # bf16 with the gate: dz from the ungated y_fwd + y_bwd the forward saved in bf16
    Case(45, batch=1, dim=6, d_state=3, dtype=torch.bfloat16, strided=True),
]


def fused_bidirectional(case: Case, out_scale: float = 1.0, block_l: int = 16) -> tuple[dict, dict]:
    """The fused Triton bidirectional scan (small tiles) and the float64 reference pair, results and gradients."""
    module = triton_scan()
    config = module.ScanConfig(block_l=block_l, block_d=4, block_d_fwd=4)
    fwd, bwd = make_inputs(case, seed=10), make_inputs(case, seed=11)
    z = fwd["z"]
    keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    scale = out_scale

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
    actual, expected = fused_bidirectional(case, out_scale=0.5 if case.z else 1.0)
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


def test_bidirectional_shared_inputs() -> None:
    case = Case(20, batch=1, dim=3, d_state=2)
    inputs = make_inputs(case)
    both = selective_scan_bidirectional(**inputs, delta_softplus=True, impl="torch")
    forward = selective_scan_reference(**inputs, delta_softplus=True)
    backward = selective_scan_reference(**inputs, delta_softplus=True, reverse=True)
    assert relative_error(both.detach().double(), (forward + backward).detach().double()) <= 1e-4
    with pytest.raises(ValueError, match="z"):
        selective_scan_bidirectional(**{**inputs, "z": (inputs["z"], inputs["z"])})


def test_fused_backward_with_gate_needs_the_saved_ungated_y() -> None:
    # Each backward program runs one direction, so dz comes from y_fwd + y_bwd saved by the forward: without it the
    # launcher refuses (before launching anything) instead of writing a dz that misses the other direction.
    module = triton_scan()
    case = Case(8, batch=1, dim=4, d_state=2)
    fwd, bwd = make_inputs(case, seed=1), make_inputs(case, seed=2)
    keys = ("u", "delta", "A", "B", "C", "D")
    pair = [(fwd[k].detach(), bwd[k].detach()) for k in keys]
    bias = (fwd["delta_bias"].detach(), bwd["delta_bias"].detach())
    z = fwd["z"].detach()
    out, _, chunks, y_ungated = module.scan_forward_bidirectional(*pair, z, bias, True, True)
    assert y_ungated is not None and y_ungated.shape == z.shape
    torch.testing.assert_close(y_ungated * torch.nn.functional.silu(z), out)  # out = (y_fwd + y_bwd) * silu(z)
    with pytest.raises(ValueError, match="y_ungated"):
        module.scan_backward_bidirectional(*pair, z, bias, True, chunks, None, torch.ones_like(out), None)


def test_both_backward_launchers_return_each_gradient_under_its_arguments_name() -> None:
    # One order for the backward's gradients, the arguments' (u, delta, A, B, C, D, z, delta_bias), named, in the
    # one-direction and the bidirectional launcher alike: each gradient (all distinct, D and delta_bias or u and z of
    # the same shape too) is checked by name against the reference's gradient of that argument.
    module = triton_scan()
    config = module.ScanConfig(block_l=16, block_d=4, block_d_fwd=4)
    case = Case(21, batch=1, dim=4, d_state=2)
    fwd, bwd = make_inputs(case, seed=20), make_inputs(case, seed=21)
    z = fwd["z"]
    dout = torch.randn(z.shape, generator=torch.Generator().manual_seed(22))
    x = {k: v.detach() for k, v in fwd.items()}

    def reference_grads(out: torch.Tensor, leaves: dict) -> dict:
        return dict(zip(leaves, torch.autograd.grad(out, tuple(leaves.values()), dout.double())))

    as64 = [{k: v.detach().double().requires_grad_() for k, v in inputs.items()} for inputs in (fwd, bwd)]
    z64 = as64[0]["z"]
    one = reference_grads(selective_scan_reference(**as64[0], delta_softplus=True), as64[0])
    _, _, chunks = module.scan_forward(*(x[k] for k in NAMES), True, False, True, config=config)
    grads = module.scan_backward(*(x[k] for k in NAMES), True, False, chunks, dout, None, config=config)
    assert grads._fields == NAMES
    for name in NAMES:
        assert relative_error(getattr(grads, name).double(), one[name]) <= 1e-4, f"one direction: d{name}"

    both_out = selective_scan_reference(**as64[0], delta_softplus=True) + selective_scan_reference(
        **{**as64[1], "z": z64}, delta_softplus=True, reverse=True
    )
    keys = [k for k in NAMES if k != "z"]
    leaves = {**{("f", k): as64[0][k] for k in keys}, **{("b", k): as64[1][k] for k in keys}, ("f", "z"): z64}
    both = reference_grads(both_out, leaves)
    pair = [(x[k], bwd[k].detach()) for k in ("u", "delta", "A", "B", "C", "D")]
    bias = (x["delta_bias"], bwd["delta_bias"].detach())
    out, _, chunks, y_ungated = module.scan_forward_bidirectional(*pair, z.detach(), bias, True, True, config=config)
    forward_grads, backward_grads = module.scan_backward_bidirectional(
        *pair, z.detach(), bias, True, chunks, y_ungated, dout, None, config=config
    )
    assert forward_grads._fields == backward_grads._fields == NAMES and backward_grads.z is None
    for direction, found in (("f", forward_grads), ("b", backward_grads)):
        for name in keys + (["z"] if direction == "f" else []):
            error = relative_error(getattr(found, name).double(), both[direction, name])
            assert error <= 1e-4, f"bidirectional, {direction} direction: d{name}"
