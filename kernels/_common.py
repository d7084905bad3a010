"""Input checks and output allocation shared by every selective-scan implementation.

Shapes follow mamba_ssm's ``selective_scan_fn``:

    u, delta, z, out   (batch, dim, L)        any float dtype; out takes u's dtype
    A                  (dim, N)               float32 (float64 accepted for gradcheck)
    B, C               (batch, N, L)          or grouped (batch, G, N, L): channel d reads group d // (dim // G)
    D, delta_bias      (dim,)                 float32 (float64 accepted)
    last_state         (batch, dim, N)        float32 (float64 for float64 inputs)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_PARAM_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class ScanShape:
    """Sizes of one selective-scan call."""

    batch: int
    dim: int
    length: int
    d_state: int
    groups: int

    @property
    def dim_per_group(self) -> int:
        return self.dim // self.groups


def _fail(name: str, tensor: Tensor, expected: str) -> None:
    raise ValueError(f"selective_scan: {name} must be {expected}; got shape {tuple(tensor.shape)}, {tensor.dtype}")


def check_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> ScanShape:
    """Validate shapes, dtypes and devices; return the sizes. Errors name the argument and what was expected."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, Tensor):
            raise TypeError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3 or not u.is_floating_point():
        _fail("u", u, "a float tensor of shape (batch, dim, L)")
    batch, dim, length = u.shape
    if min(batch, dim, length) < 1:
        _fail("u", u, "non-empty (batch, dim, L >= 1)")
    if delta.shape != u.shape or not delta.is_floating_point():
        _fail("delta", delta, f"a float tensor of u's shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim or A.dtype not in _PARAM_DTYPES:
        _fail("A", A, f"a float32 tensor of shape (dim={dim}, N)")
    d_state = A.shape[1]
    if d_state < 1:
        _fail("A", A, "of shape (dim, N) with N >= 1")
    groups = None
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            g = 1
            expected_shape = (batch, d_state, length)
        elif t.dim() == 4:
            g = t.shape[1]
            expected_shape = (batch, g, d_state, length)
        else:
            g, expected_shape = 0, ()
        if not t.is_floating_point() or g < 1 or tuple(t.shape) != expected_shape or dim % g != 0:
            _fail(
                name,
                t,
                f"a float tensor of shape (batch={batch}, N={d_state}, L={length}) or (batch, G, N, L) "
                f"with G dividing dim={dim}",
            )
        if groups is not None and g != groups:
            raise ValueError(f"selective_scan: B and C must use the same number of groups; got {groups} and {g}")
        groups = g
    if z is not None and (not isinstance(z, Tensor) or z.shape != u.shape or not z.is_floating_point()):
        _fail("z", z, f"None or a float tensor of u's shape {tuple(u.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != (dim,) or t.dtype not in _PARAM_DTYPES):
            _fail(name, t, f"None or a float32 tensor of shape (dim={dim},)")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {t.device} but u is on {u.device}")
    return ScanShape(batch=batch, dim=dim, length=length, d_state=d_state, groups=groups)


def grouped(x: Tensor) -> Tensor:
    """View B or C as (batch, G, N, L); a 3-D input is the single-group case (no copy)."""
    return x.unsqueeze(1) if x.dim() == 3 else x


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 when any input is float64 (gradcheck), float32 otherwise: all accumulation is at least fp32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def new_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocate a result buffer that the implementation must write completely (uninitialised memory).

    Every implementation allocates its results here, so a test can replace it (in each module that imports it) with
    one that fills NaN and see any element left unwritten."""
    return torch.empty(shape, dtype=dtype, device=device)
