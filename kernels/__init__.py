"""Selective scan (Mamba S6), imported as ``cavmae.kernels``: the public API and the choice of implementation.

``selective_scan`` is a drop-in for mamba_ssm's ``selective_scan_fn`` (same arguments, shapes and layout), with
``reverse=`` to scan from the last position to the first, and ``selective_scan_bidirectional`` for the
forward + backward scan pair of a bidirectional Mamba block. Implementations:

    "triton"     kernels/triton_scan.py (kernels in triton_scan_fwd.py, triton_scan_bwd.py): fused forward and
                 backward kernels (CUDA; CPU under TRITON_INTERPRET=1)
    "torch"      kernels/torch_scan.py: vectorised PyTorch with a hand-written backward (fast on CPU)
    "reference"  kernels/reference.py: the sequential specification
    "auto"       "triton" for CUDA tensors when Triton is installed, "torch" otherwise

On CUDA the first call of each compiled Triton specialisation checks itself against the torch path on a small input
(kernels/self_check.py): a kernel that disagrees is reported once and replaced by the torch path for the process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Literal

from torch import Tensor

from . import self_check
from ._common import check_inputs
from .reference import selective_scan_reference
from .torch_scan import selective_scan_torch

__all__ = ["selective_scan", "selective_scan_bidirectional", "selective_scan_reference", "selective_scan_torch"]

ScanImpl = Literal["auto", "triton", "torch", "reference"]
IMPLS = ("auto", "triton", "torch", "reference")

TensorOrPair = Tensor | tuple[Tensor, Tensor]


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _resolve(impl: str, u: Tensor) -> Callable[..., Tensor | tuple[Tensor, Tensor]]:
    if impl not in IMPLS:
        raise ValueError(f"selective_scan: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "triton" if u.is_cuda and _triton_available() else "torch"
    if impl == "reference":
        return selective_scan_reference
    if impl == "torch":
        return selective_scan_torch
    if not _triton_available():
        raise RuntimeError("selective_scan: impl='triton' needs the triton package")
    # Imported on first use: Triton decides between compiling and interpreting a kernel when the module defining it
    # is imported, so TRITON_INTERPRET must be settled by then (and `import cavmae.kernels` stays free of triton).
    from . import triton_scan
    from .triton_scan import selective_scan_triton

    if not u.is_cuda and not triton_scan.INTERPRETED:
        raise RuntimeError(
            "selective_scan: impl='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before the first use of the "
            f"Triton kernels to run them on the CPU interpreter; got tensors on {u.device}"
        )
    return selective_scan_triton


def _runs_compiled(u: Tensor) -> bool:
    """Whether the Triton kernels run compiled for these tensors (the self-check's condition): CUDA tensors."""
    return u.is_cuda


def _is_triton(fn: Callable[..., object]) -> bool:
    return fn is not selective_scan_torch and fn is not selective_scan_reference


def selective_scan(
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
    impl: ScanImpl = "auto",
    *,
    reverse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``out = (C_t h_t + D u_t) * silu(z_t)``.

    Args:
        u, delta: (batch, dim, L), any float dtype; strided views (e.g. a (batch, L, dim) tensor transposed) are
            read in place.
        A: (dim, N) float32. B, C: (batch, N, L) or grouped (batch, G, N, L), channel d using group d // (dim / G).
        D, delta_bias: optional (dim,) float32. z: optional gate, (batch, dim, L).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the state after the final step, (batch, dim, N) float32.
        impl: "auto", "triton", "torch" or "reference".
        reverse: scan from position L-1 down to 0 (the backward direction of a bidirectional block), no flip copies.

    Returns:
        out (batch, dim, L) in u's dtype, or (out, last_state) with ``return_last_state``.
    """
    check_inputs(u, delta, A, B, C, D, z, delta_bias)
    fn = _resolve(impl, u)
    if _is_triton(fn) and _runs_compiled(u):
        spec = self_check.specialisation(
            u, delta, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse, False, (A,)
        )
        kernel, torch_path = (self_check.one_direction(f, spec) for f in (fn, selective_scan_torch))
        if not self_check.kernel_agrees(spec, kernel, torch_path):
            fn = selective_scan_torch
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse)


def _pair(name: str, x: TensorOrPair | None) -> tuple[Tensor | None, Tensor | None]:
    if isinstance(x, tuple | list):
        if len(x) != 2:
            raise ValueError(f"selective_scan_bidirectional: {name} must be a tensor or a (forward, backward) pair")
        return x[0], x[1]
    return x, x


def _torch_pair(
    forward: tuple, backward: tuple, z: Tensor | None, delta_softplus: bool, out_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The torch path of the fused bidirectional kernel: (out, last_state_fwd, last_state_bwd)."""
    (u, delta, A, B, C, D, bias), back = forward, backward
    out_f, last_f = selective_scan_torch(u, delta, A, B, C, D, z, bias, delta_softplus, True)
    out_b, last_b = selective_scan_torch(*back[:6], z, back[6], delta_softplus, True, reverse=True)
    return (out_f + out_b) * out_scale, last_f, last_b


def _fused_agrees(
    forward: list, backward: list, z: Tensor | None, delta_softplus: bool, return_last_state: bool
) -> bool:
    """Whether the fused bidirectional kernel may run: not compiled (the interpreter), or its specialisation agreed
    with the torch path (self_check)."""
    u, delta, A, B, C, D, bias = forward
    if not _runs_compiled(u):
        return True
    from .triton_scan import selective_scan_bidirectional_triton

    params = (A, *(t for t in backward if t is not None))
    spec = self_check.specialisation(u, delta, B, C, D, z, bias, delta_softplus, return_last_state, False, True, params)
    kernel = self_check.pair(selective_scan_bidirectional_triton, spec, 1.0)
    return self_check.kernel_agrees(spec, kernel, self_check.pair(_torch_pair, spec, 1.0))


def selective_scan_bidirectional(
    u: TensorOrPair,
    delta: TensorOrPair,
    A: TensorOrPair,
    B: TensorOrPair,
    C: TensorOrPair,
    D: TensorOrPair | None = None,
    z: Tensor | None = None,
    delta_bias: TensorOrPair | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    impl: ScanImpl = "auto",
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """A forward and a backward scan over the same tokens, outputs combined (Vision Mamba / Audio Mamba style).

    Every argument except ``z`` is either one tensor, shared by both directions, or a ``(forward, backward)`` pair
    holding each direction's own parameters or inputs, all in the original token order: the backward scan reads its
    inputs from position L-1 down to 0 and writes each output at its own position, so nothing is flipped or copied.
    The gate ``z`` is shared, so ``out = (y_fwd + y_bwd) * silu(z)``.
    With the Triton implementation both directions, the combination and the gate run in one kernel launch.

    Returns:
        out (batch, dim, L), or (out, (last_state_fwd, last_state_bwd)) with ``return_last_state``; the backward
        scan's last state is the state after position 0.
    """
    if isinstance(z, tuple | list):
        raise ValueError("selective_scan_bidirectional: z (the gate) is shared by both directions; pass one tensor")
    names = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    pairs = [_pair(name, x) for name, x in zip(names, (u, delta, A, B, C, D, delta_bias))]
    forward_args, backward_args = ([p[i] for p in pairs] for i in (0, 1))
    fused = _is_triton(_resolve(impl, forward_args[0]))
    if fused and not _fused_agrees(forward_args, backward_args, z, delta_softplus, return_last_state):
        fused, impl = False, "torch"  # the fused kernel disagreed with the torch path (reported once)
    if fused:
        # One launch for both directions, the gate and the combination (no second pass over out, z read once).
        from .triton_scan import selective_scan_bidirectional_triton

        out, last_f, last_b = selective_scan_bidirectional_triton(
            tuple(forward_args), tuple(backward_args), z, delta_softplus
        )
        return (out, (last_f, last_b)) if return_last_state else out
    results = []
    for args, reverse in ((forward_args, False), (backward_args, True)):
        u_, delta_, A_, B_, C_, D_, bias_ = args
        results.append(
            selective_scan(u_, delta_, A_, B_, C_, D_, z, bias_, delta_softplus, True, impl, reverse=reverse)
        )
    (out_f, last_f), (out_b, last_b) = results
    out = out_f + out_b
    return (out, (last_f, last_b)) if return_last_state else out
