"""Selective scan in plain PyTorch, fast on CPU: vectorised work, a one-op recurrence, and a hand-written backward.

Layout. Everything runs time-major, (L, batch, dim, N) fp32 (fp64 for fp64 inputs), so the slice for one position
is contiguous and the recurrence is one fused ``addcmul_`` per position on a (batch, dim, N) slab:

    forward   decay = exp(delta (x) A), states = delta*u (x) B          two vectorised passes over (L, b, d, N)
              states[t] += decay[t] * states[t-1]                         L small in-place steps (the scan)
              y = states @ C                                              one batched matvec
    backward  g = dy (x) C;  g[t] += decay[t+1] * g[t+1]                  the same scan in the other direction
              dC = dy @ states, dB = (delta*u) @ g, dB-side terms = g @ B  batched matvecs
              q = g * decay[t] * states[t-1]   (gradient of the log-decay delta*A)  -> dA, ddelta

Autograd through the per-position loop would record ~10 nodes per position; the explicit backward costs two passes
per gradient instead. The price is memory: decays and states are kept for the backward, 2 x L*batch*dim*N floats
(the Triton path keeps only chunk-boundary states). With ``reverse=True`` every "previous position" is t+1.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ._common import check_inputs, compute_dtype, grouped, new_output


def _time_major(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(batch, ..., L) -> contiguous (L, batch, ...) in ``dtype``: one copy, whatever x's strides."""
    out = torch.empty((x.shape[-1], *x.shape[:-1]), dtype=dtype, device=x.device)
    out.copy_(x.movedim(-1, 0))
    return out


def _to_channel_major(x_t: Tensor, like: Tensor) -> Tensor:
    """(L, batch, C) -> a fresh (batch, C, L) buffer of ``like``'s dtype."""
    out = new_output(tuple(like.shape), like.dtype, like.device)
    out.copy_(x_t.permute(1, 2, 0))
    return out


def _scan_inplace(x: Tensor, decay: Tensor, reverse: bool) -> None:
    """x[t] += decay[t] * x[t-1] along dim 0 (x[t+1] when reverse): h_t = decay_t * h_{t-1} + x_t, in place."""
    xs, ds = x.unbind(0), decay.unbind(0)
    if reverse:
        for t in range(len(xs) - 2, -1, -1):
            xs[t].addcmul_(ds[t], xs[t + 1])
    else:
        for t in range(1, len(xs)):
            xs[t].addcmul_(ds[t], xs[t - 1])


def _scan_transposed_inplace(g: Tensor, decay: Tensor, reverse: bool) -> None:
    """Adjoint of :func:`_scan_inplace`: g[t] += decay[t+1] * g[t+1] (t-1 when reverse), in place."""
    gs, ds = g.unbind(0), decay.unbind(0)
    if reverse:
        for t in range(1, len(gs)):
            gs[t].addcmul_(ds[t - 1], gs[t - 1])
    else:
        for t in range(len(gs) - 2, -1, -1):
            gs[t].addcmul_(ds[t + 1], gs[t + 1])


def _softplus(x: Tensor) -> Tensor:
    """torch.nn.functional.softplus (threshold 20), several times faster on CPU and as accurate.

    log1p(e) is evaluated as log(u) * e / (u - 1) with u = 1 + e: u - 1 is exact, so the rounding of u cancels
    (Goldberg's trick); where u rounds to 1, log1p(e) = e to working precision.
    """
    e = torch.exp(torch.clamp(x, max=20.0))
    u = e + 1
    log_u = torch.log(u)
    u -= 1
    small = u == 0
    log1p_e = log_u.mul_(e).div_(u.masked_fill_(small, 1.0))
    log1p_e = torch.where(small, e, log1p_e)
    return torch.where(x > 20.0, x, log1p_e)


class SelectiveScanTorch(torch.autograd.Function):
    """Autograd function; inputs as in :func:`selective_scan_torch`, outputs (out, last_state).

    Internal layout of the big tensors: (L, batch, G, N, dim/G), channels innermost, so the sums over N (for y and
    the delta gradient) run over a middle axis with whole channel rows per step, and the sums over channels (for the
    B and C gradients) are batched matrix-vector products.
    """

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
    ) -> tuple[Tensor, Tensor]:
        shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
        dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        L, b, d, n, g = shape.length, shape.batch, shape.dim, shape.d_state, shape.groups
        j = shape.dim_per_group

        u_t = _time_major(u, dtype)  # (L, b, d)
        raw_t = _time_major(delta, dtype)  # (L, b, d): delta + bias, before softplus
        if delta_bias is not None:
            raw_t += delta_bias.to(dtype)
        delta_t = _softplus(raw_t) if delta_softplus else raw_t
        du_t = delta_t * u_t
        B_t = _time_major(grouped(B), dtype).unsqueeze(-1)  # (L, b, G, N, 1)
        C_t = _time_major(grouped(C), dtype).unsqueeze(-1)
        A_t = A.to(dtype).view(g, j, n).transpose(1, 2).contiguous()  # (G, N, dim/G)

        decay = torch.empty((L, b, g, n, j), dtype=dtype, device=u.device)
        torch.mul(delta_t.view(L, b, g, 1, j), A_t, out=decay).exp_()
        states = torch.empty((L, b, g, n, j), dtype=dtype, device=u.device)
        torch.mul(du_t.view(L, b, g, 1, j), B_t, out=states)
        _scan_inplace(states, decay, reverse)

        y_t = torch.matmul(C_t.transpose(-1, -2), states).view(L, b, d)  # sum_n C h
        D_ = D.to(dtype) if D is not None else None
        if D_ is not None:
            y_t.addcmul_(u_t, D_)
        z_t = sig_t = None
        if z is not None:
            z_t = _time_major(z, dtype)
            sig_t = torch.sigmoid(z_t)
            out_t = z_t * sig_t
            out_t *= y_t  # y * silu(z)
        else:
            out_t = y_t
        out = _to_channel_major(out_t, u)
        last_state = new_output((b, d, n), dtype, u.device)
        last_state.view(b, g, j, n).copy_(states[0 if reverse else -1].transpose(-1, -2))

        ctx.save_for_backward(u_t, raw_t, delta_t, du_t, A_t, B_t, C_t, D_, z_t, sig_t, y_t, decay, states)
        ctx.scan = (shape, delta_softplus, reverse, dtype)
        ctx.input_meta = tuple(
            (t.dtype, t.shape) if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)
        )
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dout: Tensor | None, dlast: Tensor | None) -> tuple[Tensor | None, ...]:
        u_t, raw_t, delta_t, du_t, A_t, B_t, C_t, D_, z_t, sig_t, y_t, decay, states = ctx.saved_tensors
        shape, delta_softplus, reverse, dtype = ctx.scan
        L, b, d, n, g = shape.length, shape.batch, shape.dim, shape.d_state, shape.groups
        j = shape.dim_per_group
        needs = ctx.needs_input_grad

        dout_t = torch.zeros_like(y_t) if dout is None else _time_major(dout, dtype)  # (L, b, d)
        dz_t = None
        if z_t is not None:
            if needs[6]:
                # d silu(z) / dz = s (1 + z (1 - s))
                dz_t = (1 - sig_t).mul_(z_t).add_(1).mul_(sig_t).mul_(y_t).mul_(dout_t)
            dy_t = dout_t.mul_(z_t).mul_(sig_t)
        else:
            dy_t = dout_t
        dy5 = dy_t.view(L, b, g, 1, j)

        # grad_h[t] = C_t dy_t + decay[t+1] grad_h[t+1]: the transposed scan, in place.
        grad_h = torch.empty((L, b, g, n, j), dtype=dtype, device=y_t.device)
        torch.mul(dy5, C_t, out=grad_h)
        if dlast is not None:
            grad_h[0 if reverse else -1] += dlast.to(dtype).view(b, g, j, n).transpose(-1, -2)
        _scan_transposed_inplace(grad_h, decay, reverse)

        # Sums over the channels of a group, as batched matrix-vector products: (N, j) @ (j, 1).
        dC_t = torch.matmul(states, dy5.transpose(-1, -2)) if needs[4] else None  # (L, b, G, N, 1)
        dB_t = torch.matmul(grad_h, du_t.view(L, b, g, j, 1)) if needs[3] else None
        # sum_n grad_h * B: the path through the input term delta * u * B.
        gB_t = torch.matmul(B_t.transpose(-1, -2), grad_h).view(L, b, d)

        # q = grad_h * decay_t * h_prev is the gradient of the log-decay delta*A (h_prev = 0 before the first step).
        q = torch.empty_like(grad_h)
        cur, prev = (slice(0, L - 1), slice(1, L)) if reverse else (slice(1, L), slice(0, L - 1))
        q[L - 1 if reverse else 0].zero_()
        torch.mul(grad_h[cur], decay[cur], out=q[cur]).mul_(states[prev])

        qA = torch.mul(q, A_t, out=grad_h)  # grad_h is no longer needed: reuse its memory
        ddelta_t = qA.sum(-2).view(L, b, d).addcmul_(gB_t, u_t)  # (L, b, d)
        dA = q.mul_(delta_t.view(L, b, g, 1, j)).sum((0, 1)) if needs[2] else None  # (G, N, dim/G)
        du_grad = gB_t.mul_(delta_t)
        dD = None
        if D_ is not None:
            du_grad.addcmul_(dy_t, D_)
            dD = (dy_t * u_t).sum((0, 1)) if needs[5] else None
        if delta_softplus:
            ddelta_t.mul_(torch.sigmoid(raw_t))
        dbias = ddelta_t.sum((0, 1)) if needs[7] else None

        meta = ctx.input_meta
        grads = [
            _channel_major_grad(du_grad, meta[0]) if needs[0] else None,
            _channel_major_grad(ddelta_t, meta[1]) if needs[1] else None,
            dA.transpose(1, 2).reshape(d, n).to(meta[2][0]) if dA is not None else None,
            _group_grad(dB_t, meta[3]) if dB_t is not None else None,
            _group_grad(dC_t, meta[4]) if dC_t is not None else None,
            dD.to(meta[5][0]) if dD is not None else None,
            _channel_major_grad(dz_t, meta[6]) if dz_t is not None else None,
            dbias.to(meta[7][0]) if dbias is not None else None,
        ]
        return (*grads, None, None)


def _channel_major_grad(x_t: Tensor, meta: tuple[torch.dtype, torch.Size]) -> Tensor:
    """(L, b, d) -> (b, d, L) gradient buffer in the input's dtype."""
    dtype, shape = meta
    out = new_output(tuple(shape), dtype, x_t.device)
    out.copy_(x_t.permute(1, 2, 0))
    return out


def _group_grad(x_t: Tensor, meta: tuple[torch.dtype, torch.Size]) -> Tensor:
    """(L, b, G, N, 1) -> gradient of B or C in its own shape, (b, N, L) or (b, G, N, L), and dtype."""
    dtype, shape = meta
    out = new_output(tuple(shape), dtype, x_t.device)
    grouped(out).copy_(x_t.squeeze(-1).permute(1, 2, 3, 0))
    return out


def selective_scan_torch(
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
    """Vectorised PyTorch selective scan; same arguments and results as :func:`cavmae.kernels.selective_scan`."""
    out, last_state = SelectiveScanTorch.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return (out, last_state) if return_last_state else out
