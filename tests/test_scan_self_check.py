"""The compiled kernels' first-use check (kernels/self_check.py): on CUDA the first call of each Triton specialisation
runs it against the torch path on a small input, forward and gradients; a disagreement is logged once and the
specialisation falls back to the torch path. Here on the CPU: with the interpreted kernel (agrees, kept) and with
deliberately wrong kernels (one warning, the torch path from then on, no second check).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import pytest
import torch
from scan_helpers import NAMES, Case, make_inputs, triton_scan

import cavmae.kernels as kernels
from cavmae.kernels import selective_scan, selective_scan_bidirectional, selective_scan_torch, self_check

TINY = (1, 4, 21)  # batch, dim, L of the check's input where the kernel runs on the interpreter


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(self_check, "_verdicts", {})


def spec_of(case: Case, training: bool = True, bidirectional: bool = False) -> self_check.Specialisation:
    x = make_inputs(case, device="cpu")
    with torch.set_grad_enabled(training):
        return self_check.specialisation(
            x["u"], x["delta"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], case.softplus, False,
            case.reverse, bidirectional, (x["A"],),
        )  # fmt: skip


def doubling_du(scan: Callable[..., tuple]) -> Callable[..., tuple]:
    """``scan`` with a wrong gradient of u (twice the right one) and the right forward: the kind of bug that only a
    gradient check sees."""

    def wrong(u: torch.Tensor, *args: object, **kwargs: object) -> tuple:
        wrong.calls += 1
        return scan(u + (u - u.detach()), *args, **kwargs)

    wrong.calls = 0
    return wrong


def test_the_interpreted_kernel_agrees_with_the_torch_path_and_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    module = triton_scan()
    kernel = partial(module.selective_scan_triton, config=module.ScanConfig(block_l=16, block_d=4, block_d_fwd=4))
    case = Case(21, batch=1, dim=4, d_state=2, groups=2, strided=True, reverse=True)
    spec = spec_of(case)
    assert spec.training and spec.reverse and spec.grouped and spec.channels_last and spec.has_z
    with caplog.at_level(logging.WARNING):
        agrees = self_check.kernel_agrees(
            spec, self_check.one_direction(kernel, spec), self_check.one_direction(selective_scan_torch, spec), TINY
        )
    assert agrees and not caplog.records


def test_a_wrong_gradient_is_reported_once_and_the_torch_path_used(caplog: pytest.LogCaptureFixture) -> None:
    case = Case(21, batch=1, dim=4, d_state=2)
    spec = spec_of(case)
    wrong = doubling_du(selective_scan_torch)
    kernel, reference = (self_check.one_direction(f, spec) for f in (wrong, selective_scan_torch))
    with caplog.at_level(logging.WARNING):
        assert not self_check.kernel_agrees(spec, kernel, reference, TINY)
        assert wrong.calls == 1
        assert not self_check.kernel_agrees(spec, kernel, reference, TINY)  # remembered, not checked again
    assert wrong.calls == 1
    (record,) = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING and str(spec) in message and "torch path" in message
    assert "du (max relative error" in message
    assert not [name for name in NAMES if name != "u" and f" d{name} (" in message]  # only du disagreed


def test_a_kernel_that_raises_is_reported_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    spec = spec_of(Case(21, batch=1, dim=4, d_state=2), training=False)

    def broken(*args: object) -> tuple:
        raise RuntimeError("no kernel image is available for execution on the device")

    reference = self_check.one_direction(selective_scan_torch, spec)
    with caplog.at_level(logging.WARNING):
        assert not self_check.kernel_agrees(spec, self_check.one_direction(broken, spec), reference, TINY)
    assert "RuntimeError: no kernel image" in caplog.records[0].getMessage()


@pytest.fixture
def compiled_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """selective_scan as on CUDA (the kernels compiled, so the first use of a specialisation is checked)."""
    triton_scan()
    monkeypatch.setattr(kernels, "_runs_compiled", lambda u: True)


def test_selective_scan_checks_each_specialisation_once_and_falls_back(
    compiled_device: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = doubling_du(selective_scan_torch)
    monkeypatch.setattr(triton_scan(), "selective_scan_triton", wrong)
    case = Case(30, batch=1, dim=4, d_state=2)
    x = make_inputs(case, device="cpu")
    grad_out = torch.randn(x["u"].shape, generator=torch.Generator().manual_seed(0))
    expected = torch.autograd.grad(selective_scan_torch(**x, delta_softplus=True), x["u"], grad_out)[0]
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            out = selective_scan(**x, delta_softplus=True, impl="triton")
            (du,) = torch.autograd.grad(out, x["u"], grad_out)
            torch.testing.assert_close(du, expected)  # the torch path's gradient, not the wrong one
        assert wrong.calls == 1 and len(caplog.records) == 1  # one check, one warning
        selective_scan(**x, delta_softplus=True, impl="triton", reverse=True)  # another specialisation: checked
    assert wrong.calls == 2 and len(caplog.records) == 2 and "reverse" in caplog.records[1].getMessage()


def test_selective_scan_keeps_a_kernel_that_agrees(compiled_device: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def right(*args: object, **kwargs: object) -> tuple:
        calls.append(1)
        return selective_scan_torch(*args, **kwargs)

    monkeypatch.setattr(triton_scan(), "selective_scan_triton", right)
    x = make_inputs(Case(30, batch=1, dim=4, d_state=2), device="cpu")
    for _ in range(3):
        selective_scan(**x, delta_softplus=True, impl="triton")
    assert len(calls) == 1 + 3  # the check, then every call


def test_the_fused_bidirectional_kernel_is_checked_too(
    compiled_device: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def swapped_last_states(forward: tuple, backward: tuple, z: object, softplus: bool, out_scale: float) -> tuple:
        calls.append(1)
        out, last_f, last_b = kernels._torch_pair(forward, backward, z, softplus, out_scale)
        return out, last_b, last_f

    monkeypatch.setattr(triton_scan(), "selective_scan_bidirectional_triton", swapped_last_states)
    case = Case(30, batch=1, dim=4, d_state=2)
    fwd, bwd = make_inputs(case, seed=1, device="cpu"), make_inputs(case, seed=2, device="cpu")
    args = {k: (fwd[k], bwd[k]) for k in NAMES if k != "z"}
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            out, (last_f, last_b) = selective_scan_bidirectional(
                **args, z=fwd["z"], delta_softplus=True, return_last_state=True, impl="triton"
            )
    _, expected_f = selective_scan_torch(**fwd, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(last_f, expected_f)
    assert len(calls) == 1 and len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "bidirectional" in message and "last_state_fwd" in message and "last_state_bwd" in message


def test_rejected_lists_the_specialisations_on_the_torch_path() -> None:
    # what scripts/gpu_check.py reports as an error after its model steps
    agreeing, disagreeing = (spec_of(Case(21, batch=1, dim=4, d_state=2), training=t) for t in (True, False))

    def doubled_out(*args: object) -> tuple:
        out, last = selective_scan_torch(*args)
        return out * 2, last

    reference = self_check.one_direction(selective_scan_torch, agreeing)
    assert self_check.kernel_agrees(agreeing, reference, reference, TINY)
    assert not self_check.kernel_agrees(
        disagreeing, self_check.one_direction(doubled_out, disagreeing), reference, TINY
    )
    assert self_check.rejected() == [disagreeing]
