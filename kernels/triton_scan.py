"""Fused selective scan in Triton: the autograd functions and the public functions.

The kernels and their launchers live beside this module, one job per file:

    _triton_common.py     tile configuration (ScanConfig), device helpers, launcher helpers
    triton_scan_fwd.py    forward kernel (one channel per thread, N states in registers) and its launcher
    triton_scan_bwd.py    backward kernel (deterministic, no float atomics) and its launcher
    _triton_bwd_steps.py  the backward's per-position steps and its warp reduction of dB / dC

Triton decides whether a kernel is compiled or interpreted when the module defining it is imported, so
TRITON_INTERPRET must be settled before this module (which imports them) is first imported.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from triton.runtime.interpreter import InterpretedFunction

from . import _triton_bwd_steps, _triton_common, triton_scan_bwd, triton_scan_fwd
from ._triton_common import DEFAULT_CONFIG, Inputs, ScanConfig, ScanGrads
from .triton_scan_bwd import scan_backward, scan_backward_bidirectional
from .triton_scan_fwd import scan_forward, scan_forward_bidirectional

__all__ = [
    "DEFAULT_CONFIG",
    "INTERPRETED",
    "KERNEL_MODULES",
    "ScanConfig",
    "ScanGrads",
    "scan_backward",
    "scan_backward_bidirectional",
    "scan_forward",
    "scan_forward_bidirectional",
    "selective_scan_bidirectional_triton",
    "selective_scan_triton",
]

# The modules that define the JIT functions, in import order (re-imported in this order to switch between interpreter
# and compiler; the launchers call the ``*_kernel`` functions through their module, where tools can swap them).
KERNEL_MODULES = (_triton_common, _triton_bwd_steps, triton_scan_fwd, triton_scan_bwd)
# True when TRITON_INTERPRET=1 was set as the kernels were imported: they then run on the CPU interpreter.
INTERPRETED = isinstance(triton_scan_fwd._scan_fwd_kernel, InterpretedFunction)


class SelectiveScanTriton(torch.autograd.Function):
    """Autograd function over the two kernels, one direction; outputs (out, last_state)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        z: Tensor | None,
        delta_bias: Tensor | None,
        delta_softplus: bool,
        reverse: bool,
        config: ScanConfig,
    ) -> tuple[Tensor, Tensor]:
        save = any(ctx.needs_input_grad[:8])
        out, last_state, chunks = scan_forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save_chunks=save, config=config
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chunks)
            ctx.options = (delta_softplus, reverse, config)
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dout: Tensor | None, dlast: Tensor | None) -> tuple[Tensor | None, ...]:
        u, delta, A, B, C, D, z, delta_bias, chunks = ctx.saved_tensors
        delta_softplus, reverse, config = ctx.options
        if dout is None:
            dout = torch.zeros_like(u)
        grads = scan_backward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, chunks, dout, dlast, config=config
        )
        needs = ctx.needs_input_grad
        return (*(grad if need else None for grad, need in zip(grads, needs[:8])), None, None, None)


class SelectiveScanBidirectionalTriton(torch.autograd.Function):
    """Both directions in one forward and one backward launch; outputs (out, last_fwd, last_bwd).

    Inputs: u, delta, A, B, C, D, delta_bias of the forward direction, the same of the backward direction, then z.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, *args: object) -> tuple[Tensor, Tensor, Tensor]:
        *tensors, delta_softplus, out_scale, config = args
        first, second, z = tuple(tensors[:7]), tuple(tensors[7:14]), tensors[14]
        save = any(ctx.needs_input_grad[:15])
        pair = list(zip(first, second))
        out, last, chunks, y_ungated = scan_forward_bidirectional(
            *pair[:6], z, pair[6], delta_softplus, save, out_scale=out_scale, config=config
        )
        if save:
            # y_ungated (y_fwd + y_bwd before the gate; None without z): dz needs both directions' y, and each
            # backward program runs one direction (as mamba-ssm's backward recomputes the gate from the saved out).
            ctx.save_for_backward(*first, *second, z, chunks, y_ungated)
            ctx.options = (delta_softplus, out_scale, config)
        ctx.set_materialize_grads(False)
        return out, last[0], last[1]

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, dout: Tensor | None, dlast_f: Tensor | None, dlast_b: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        *tensors, z, chunks, y_ungated = ctx.saved_tensors
        first, second = tuple(tensors[:7]), tuple(tensors[7:14])
        delta_softplus, out_scale, config = ctx.options
        if dout is None:
            dout = torch.zeros_like(first[0])
        dlast = None
        if dlast_f is not None or dlast_b is not None:
            shape = (first[0].shape[0], first[0].shape[1], first[2].shape[1])
            dlast = torch.stack(
                [
                    d.float() if d is not None else torch.zeros(shape, dtype=torch.float32, device=dout.device)
                    for d in (dlast_f, dlast_b)
                ]
            )
        pair = list(zip(first, second))
        forward_grads, backward_grads = scan_backward_bidirectional(
            *pair[:6], z, pair[6], delta_softplus, chunks, y_ungated, dout, dlast, out_scale=out_scale, config=config
        )
        # In the order of forward()'s inputs: each direction's (u, delta, A, B, C, D, delta_bias), then z.
        per_direction = ("u", "delta", "A", "B", "C", "D", "delta_bias")
        grads = (
            *(getattr(g, name) for g in (forward_grads, backward_grads) for name in per_direction),
            forward_grads.z,
        )
        needs = ctx.needs_input_grad
        return (*(grad if need else None for grad, need in zip(grads, needs[:15])), None, None, None)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    config: ScanConfig = DEFAULT_CONFIG,
) -> Tensor | tuple[Tensor, Tensor]:
    """Triton selective scan; same arguments and results as :func:`cavmae.kernels.selective_scan`."""
    out, last_state = SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, config)
    return (out, last_state) if return_last_state else out


def selective_scan_bidirectional_triton(
    forward_inputs: Inputs,
    backward_inputs: Inputs,
    z: Tensor | None,
    delta_softplus: bool,
    out_scale: float = 1.0,
    config: ScanConfig = DEFAULT_CONFIG,
) -> tuple[Tensor, Tensor, Tensor]:
    """Both directions fused: (out, last_state_fwd, last_state_bwd); inputs are (u, delta, A, B, C, D, delta_bias)."""
    return SelectiveScanBidirectionalTriton.apply(
        *forward_inputs, *backward_inputs, z, delta_softplus, out_scale, config
    )
