"""The first use of each compiled Triton specialisation checks itself against the torch path.

The Triton kernels are tested on Triton's CPU interpreter, and the compile gate compiles them (without running them)
for sm_90 and sm_80: what the compiled code computes on a GPU is seen only when it runs there. So on CUDA the first
call of each specialisation in a process (:class:`Specialisation`: what selects a compiled kernel variant) runs the
kernel and the torch path on a small input of that specialisation (same flags, dtypes, state size and layout), the
forward and, when training, the gradients of every input. If any output or gradient differs beyond the tolerance
(or the kernel raises), one WARNING names the specialisation and what disagreed, and the specialisation runs on the
torch path for the rest of the process. One check per specialisation per process; nothing is re-checked.

The check takes the two implementations as arguments (:func:`kernel_agrees`), so it runs on the CPU too: the tests
give it the interpreted kernel and deliberately wrong ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# Max |kernel - torch path| / max |torch path| per output and gradient: both accumulate in fp32, so they differ by
# rounding (results in bf16 / fp16: a few units of the last place); a wrong kernel is off by order 1.
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-3, torch.bfloat16: 3e-2, torch.float16: 3e-2}

Leaves = dict[str, Tensor]
Scan = Callable[[Leaves], dict[str, Tensor]]  # named inputs -> named outputs ("out", "last_state", ...)


@dataclass(frozen=True)
class Specialisation:
    """What selects a compiled kernel variant (sizes do not: the kernels are not specialised on them)."""

    bidirectional: bool
    reverse: bool
    softplus: bool
    has_D: bool
    has_z: bool
    has_bias: bool
    training: bool  # forward saving chunk states, then the backward
    last_state: bool  # the last state is returned (its gradient enters the backward)
    d_state: int
    grouped: bool  # B, C of shape (batch, G, N, L)
    channels_last: bool  # u, delta, z are transposed (batch, L, dim) tensors
    dtypes: tuple[str, ...]  # of u, delta, B, C (and z)
    device: str

    def __str__(self) -> str:
        flags = ["bidirectional" if self.bidirectional else "reverse" if self.reverse else "forward"]
        flags += [
            name for name in ("softplus", "training", "last_state", "grouped", "channels_last") if getattr(self, name)
        ]
        present = (("D", self.has_D), ("z", self.has_z), ("delta_bias", self.has_bias))
        inputs = [name for name, given in present if given]
        return (
            f"selective_scan[{', '.join(flags)}; N={self.d_state}; dtypes {'/'.join(self.dtypes)}; "
            f"inputs {', '.join(inputs) or 'none of D, z, delta_bias'}; {self.device}]"
        )


def specialisation(
    u: Tensor,
    delta: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
    reverse: bool,
    bidirectional: bool,
    params: tuple[Tensor | None, ...] = (),
) -> Specialisation:
    """The specialisation of a call (``params``: further inputs whose gradients make it a training call)."""
    inputs = [t for t in (u, delta, B, C, D, z, delta_bias, *params) if t is not None]
    return Specialisation(
        bidirectional=bidirectional,
        reverse=reverse,
        softplus=delta_softplus,
        has_D=D is not None,
        has_z=z is not None,
        has_bias=delta_bias is not None,
        training=torch.is_grad_enabled() and any(t.requires_grad for t in inputs),
        last_state=return_last_state,
        d_state=B.shape[-2],
        grouped=B.dim() == 4,
        channels_last=u.stride(1) == 1 and u.shape[1] > 1,
        dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in (u, delta, B, C, z) if t is not None),
        device=str(u.device),
    )


# (batch, dim, L) of the check's input: 75 positions are two and a third chunks of the default 32
SMALL = (2, 48, 75)


def small_inputs(spec: Specialisation, shape: tuple[int, int, int] = SMALL, seed: int = 0) -> Leaves:
    """A small input of ``spec`` and ``shape`` (batch, dim, L; dim even), every input the spec has, in its dtypes
    and layout. A bidirectional spec's inputs have the suffixes _fwd / _bwd (z is shared)."""
    gen = torch.Generator().manual_seed(seed)
    (batch, dim, length), n = shape, spec.d_state
    groups = 2 if spec.grouped else 0
    dtypes = iter(getattr(torch, name) for name in spec.dtypes)
    u_dtype, delta_dtype, B_dtype, C_dtype = (next(dtypes) for _ in range(4))
    z_dtype = next(dtypes, None)

    def activation(dtype: torch.dtype, channels: tuple[int, ...], scale: float = 1.0, shift: float = 0.0) -> Tensor:
        x = torch.randn(batch, length, *channels, generator=gen) * scale + shift  # (batch, L, ...)
        x = x.movedim(1, -1)  # a transposed view: channels-last
        return x.to(dtype) if spec.channels_last else x.contiguous().to(dtype)

    def direction() -> Leaves:
        bc = (groups, n) if groups else (n,)
        x = {
            "u": activation(u_dtype, (dim,)),
            "delta": activation(delta_dtype, (dim,), 0.5, -1.0)
            if spec.softplus
            else activation(delta_dtype, (dim,), 0.05).abs() + 0.02,
            "A": -torch.arange(1, n + 1) * (0.5 + torch.rand(dim, 1, generator=gen)),
            "B": activation(B_dtype, bc),
            "C": activation(C_dtype, bc),
        }
        if spec.has_D:
            x["D"] = torch.randn(dim, generator=gen)
        if spec.has_bias:
            x["delta_bias"] = torch.rand(dim, generator=gen) * 0.2
        return x

    leaves = {f"{k}_fwd": v for k, v in direction().items()} if spec.bidirectional else direction()
    if spec.bidirectional:
        leaves.update({f"{k}_bwd": v for k, v in direction().items()})
    if spec.has_z:
        leaves["z"] = activation(z_dtype, (dim,))
    return {k: v.to(spec.device) for k, v in leaves.items()}


def _relative_error(actual: Tensor, expected: Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    if actual.shape != expected.shape:
        return math.inf
    error = ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
    return error if math.isfinite(error) else math.inf


def _outputs_and_gradients(scan: Scan, leaves: Leaves, spec: Specialisation, seed: int = 1) -> dict[str, Tensor]:
    inputs = {k: v.detach().requires_grad_(spec.training and v.is_floating_point()) for k, v in leaves.items()}
    with torch.set_grad_enabled(spec.training):
        outputs = scan(inputs)
    results = dict(outputs)
    if spec.training:
        gen = torch.Generator().manual_seed(seed)
        # cotangents for out and, where the call returns it, the last state(s)
        wanted = {k: v for k, v in outputs.items() if k == "out" or spec.last_state}
        cotangents = [torch.randn(v.shape, generator=gen).to(v) for v in wanted.values()]
        grads = torch.autograd.grad(tuple(wanted.values()), tuple(inputs.values()), cotangents, allow_unused=True)
        results.update({f"d{k}": g for k, g in zip(inputs, grads) if g is not None})
    return results


def disagreements(kernel: Scan, reference: Scan, leaves: Leaves, spec: Specialisation) -> list[str]:
    """What differs between the kernel and the reference on ``leaves``: e.g. ["dB (max relative error 4.1e-01)"]."""
    try:
        actual = _outputs_and_gradients(kernel, leaves, spec)
    except Exception as e:  # a kernel that fails to compile or run on this device counts as disagreeing
        return [f"the kernel raised {type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e) else ''}"]
    expected = _outputs_and_gradients(reference, leaves, spec)
    tolerance = max(TOLERANCE.get(v.dtype, 3e-2) for v in leaves.values())
    found = []
    for name, value in expected.items():
        error = _relative_error(actual[name], value) if name in actual else math.inf
        if not error <= tolerance:
            found.append(f"{name} (max relative error {error:.1e}, tolerance {tolerance:g})")
    return found


# Verdicts of this process: specialisation -> the kernel agreed with the torch path.
_verdicts: dict[Specialisation, bool] = {}


def kernel_agrees(spec: Specialisation, kernel: Scan, reference: Scan, shape: tuple[int, int, int] = SMALL) -> bool:
    """Whether ``spec`` may run on the kernel: checked against the reference (the torch path) on the first call of
    the specialisation (an input of ``shape``), remembered for the rest of the process. A disagreement is logged
    once, as a WARNING."""
    verdict = _verdicts.get(spec)
    if verdict is None:
        # Outside autocast (the torch path must compute in the inputs' dtypes) and outside any saved-tensor hooks
        # (activation checkpointing would capture the check's own autograd graph): identity hooks for its tensors.
        with (
            torch.autocast(spec.device.split(":")[0], enabled=False),
            torch.autograd.graph.saved_tensors_hooks(_identity, _identity),
        ):
            found = disagreements(kernel, reference, small_inputs(spec, shape), spec)
        if found:
            log.warning(
                "%s: the compiled Triton kernel disagrees with the torch path on a small input: %s. This "
                "specialisation uses the torch path from now on (slower, correct); please report it.",
                spec,
                "; ".join(found),
            )
        verdict = _verdicts[spec] = not found
    return verdict


def rejected() -> list[Specialisation]:
    """The specialisations of this process whose kernel disagreed with the torch path (they run on the torch path)."""
    return [spec for spec, agreed in _verdicts.items() if not agreed]


def _identity(x: Tensor) -> Tensor:
    return x


def one_direction(scan: Callable[..., tuple[Tensor, Tensor]], spec: Specialisation) -> Scan:
    """A one-direction implementation (``selective_scan``'s signature) as a :data:`Scan` over named inputs."""

    def run(x: Leaves) -> dict[str, Tensor]:
        out, last = scan(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"), x.get("delta_bias"),
            spec.softplus, True, spec.reverse,
        )  # fmt: skip
        return {"out": out, "last_state": last}

    return run


def pair(scan_pair: Callable[..., tuple[Tensor, Tensor, Tensor]], spec: Specialisation, out_scale: float) -> Scan:
    """A bidirectional implementation, ``scan_pair(forward_inputs, backward_inputs, z, delta_softplus, out_scale)``
    -> (out, last_state_fwd, last_state_bwd) with inputs (u, delta, A, B, C, D, delta_bias), as a :data:`Scan`."""
    keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")

    def run(x: Leaves) -> dict[str, Tensor]:
        forward, backward = (tuple(x.get(f"{k}_{d}") for k in keys) for d in ("fwd", "bwd"))
        out, last_fwd, last_bwd = scan_pair(forward, backward, x.get("z"), spec.softplus, out_scale)
        return {"out": out, "last_state_fwd": last_fwd, "last_state_bwd": last_bwd}

    return run
