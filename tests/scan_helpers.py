"""Shared pieces of the selective-scan tests: the cases, inputs, the float64 reference run and the error check.

Importing this module sets TRITON_INTERPRET=1 when there is no GPU, before any kernel is decorated.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from types import ModuleType

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    # Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when cavmae.kernels.triton_scan is imported
    # (lazily, on first use of impl="triton"): set it first so the kernels run on the CPU interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from cavmae.kernels import (  # noqa: E402
    selective_scan_reference,
)

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


def _nan_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def output_allocators() -> list[ModuleType]:
    """The kernel modules loaded now that allocate results through ``_common.new_output`` (bound by name in each)."""
    return [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("cavmae.kernels")
        and getattr(getattr(module, "new_output", None), "__module__", None) == "cavmae.kernels._common"
    ]


@contextlib.contextmanager
def nan_filled_outputs() -> Iterator[None]:
    """Within this block every result buffer an implementation allocates starts as NaN (``new_output`` patched in
    every kernel module), so an element a kernel never writes fails the comparison instead of passing by luck."""
    with pytest.MonkeyPatch.context() as patch:
        for module in output_allocators():
            patch.setattr(module, "new_output", _nan_output)
        yield


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


def flipped(x: torch.Tensor | None) -> torch.Tensor | None:
    return x.flip(-1) if x is not None else None
