"""The specification: a readable, sequential selective scan (Mamba S6), differentiable through plain autograd.

For every batch b, channel d and state n, in scan order over the positions t:

    delta_t = softplus(delta_raw_t + delta_bias[d])      (softplus only with delta_softplus=True)
    h_t[n]  = exp(delta_t * A[d, n]) * h_{t-1}[n] + delta_t * B_t[n] * u_t      (h before the first step is 0)
    y_t     = sum_n C_t[n] * h_t[n] + D[d] * u_t
    out_t   = y_t * silu(z_t)

With ``reverse=True`` the scan runs from the last position to the first (h_t depends on h_{t+1}), which is the
backward half of a bidirectional block, computed without flipping anything. Everything is computed in float32, or
float64 when an input is float64 (the precision the gradcheck in the tests uses). Slow by design: one Python step
per position. The fast implementations are tested against this function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_inputs, compute_dtype, grouped


def selective_scan_reference(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential selective scan; same arguments and results as :func:`cavmae.kernels.selective_scan`."""
    shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)

    u_ = u.to(dtype)  # (batch, dim, L)
    delta_ = delta.to(dtype)
    if delta_bias is not None:
        delta_ = delta_ + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta_ = F.softplus(delta_)
    B_ = grouped(B).to(dtype)  # (batch, G, N, L)
    C_ = grouped(C).to(dtype)
    channel_group = torch.arange(shape.dim, device=u.device) // shape.dim_per_group  # group of each channel
    A_ = A.to(dtype)

    h = u_.new_zeros(shape.batch, shape.dim, shape.d_state)  # (batch, dim, N)
    ys: list[Tensor | None] = [None] * shape.length
    positions = range(shape.length - 1, -1, -1) if reverse else range(shape.length)
    for t in positions:
        decay = torch.exp(delta_[:, :, t, None] * A_)  # (batch, dim, N)
        B_t = B_[:, :, :, t][:, channel_group]  # (batch, dim, N): channel d reads its group's B
        C_t = C_[:, :, :, t][:, channel_group]
        h = decay * h + (delta_[:, :, t] * u_[:, :, t])[:, :, None] * B_t
        ys[t] = (h * C_t).sum(-1)  # (batch, dim)
    y = torch.stack(ys, dim=-1)  # (batch, dim, L)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u_
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out
