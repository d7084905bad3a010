"""Selective scan in plain PyTorch, fast on CPU: chunked vectorised work, a one-op recurrence, explicit backward.

Layout. The per-state tensors live time-major as (chunk, batch, G, N, dim/G), fp32 (fp64 for fp64 inputs): the slab
of one position is contiguous, so the recurrence is one fused ``addcmul_`` per position, and channels are innermost,
so sums over N add whole channel rows and sums over channels are batched matrix-vector products.

    forward, per chunk      decay  = exp2(delta (x) A log2 e),  states = delta*u (x) B
                            states[t] += decay[t] * states[t-1]                 one op per position
                            y = C^T states                                      batched matvec
    backward, per chunk,    recompute decay and states from the chunk's saved starting state, then
    last chunk first        g = dy (x) C;  g[t] += decay[t+1] g[t+1]           the transposed recurrence
                            dC = states dy,  dB = g (delta u),  g^T B           batched matvecs
                            q = g * decay[t] * states[t-1]                      gradient of the log-decay
                            ddelta += sum_n q A,  dA += sum_{b,t} q delta

Like the Triton kernels, only the state at each chunk start is kept for the backward, never the (L, batch, dim, N)
states: the chunk temporaries stay in cache and are reused, and the path allocates no tensor of that size (on a
virtual machine, first-touch page faults of such buffers cost as much as the arithmetic). Autograd through the
per-position loop would record ~10 nodes per position; the explicit backward is a few passes per gradient. With
``reverse=True`` the scan order is t = L-1 ... 0 and each position's predecessor is t+1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ._common import check_inputs, compute_dtype, grouped, new_output

# Positions per chunk: a chunk's temporaries (chunk x batch x dim x N floats each) should stay in cache.
CHUNK = 32


class _ChunkWork:
    """Reusable buffers for one chunk, (rows, b, G, N, dim/G) each, and the per-position steps over them.

    The recurrence steps are built once per buffer row as (bound addcmul_, decay row, source row) triples: the
    per-position Python work is then one call, which matters when a step itself costs a few microseconds.
    """

    def __init__(self, rows: int, slab: tuple[int, ...], dtype: torch.dtype, device: torch.device, reverse: bool):
        self.reverse = reverse
        self.decay = torch.empty((rows, *slab), dtype=dtype, device=device)
        self.states = torch.empty((rows, *slab), dtype=dtype, device=device)
        self.grad = torch.empty((rows, *slab), dtype=dtype, device=device)  # dLoss/dh (backward only)
        self.decay_rows, self.state_rows, self.grad_rows = (x.unbind(0) for x in (self.decay, self.states, self.grad))
        self._steps: dict[tuple[str, int], list] = {}

    def sequence(self, m: int) -> list[int]:
        """Rows of a chunk of m positions in scan order."""
        return list(range(m - 1, -1, -1)) if self.reverse else list(range(m))

    def scan_steps(self, m: int) -> list:
        """h[cur] += decay[cur] * h[prev] for consecutive rows of the scan."""
        if ("scan", m) not in self._steps:
            seq = self.sequence(m)
            self._steps["scan", m] = [
                (self.state_rows[cur].addcmul_, self.decay_rows[cur], self.state_rows[prev])
                for prev, cur in zip(seq, seq[1:])
            ]
        return self._steps["scan", m]

    def grad_steps(self, m: int) -> list:
        """g[cur] += decay[next] * g[next], latest scan position first (the transposed recurrence)."""
        if ("grad", m) not in self._steps:
            seq = self.sequence(m)
            self._steps["grad", m] = [
                (self.grad_rows[cur].addcmul_, self.decay_rows[nxt], self.grad_rows[nxt])
                for cur, nxt in reversed(list(zip(seq, seq[1:])))
            ]
        return self._steps["grad", m]

    def recompute(
        self, t0: int, t1: int, h_in: Tensor | None, delta5: Tensor, du5: Tensor, A2_t: Tensor, B_t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Decays and states of positions [t0, t1) given the state before the chunk (None: zero)."""
        m = t1 - t0
        decay, states = self.decay[:m], self.states[:m]
        torch.mul(delta5[t0:t1], A2_t, out=decay).exp2_()
        torch.mul(du5[t0:t1], B_t[t0:t1], out=states)  # the input term delta * u * B
        if h_in is not None:
            first = self.sequence(m)[0]
            self.state_rows[first].addcmul_(self.decay_rows[first], h_in)
        for step, decay_row, source in self.scan_steps(m):  # h_t = decay_t * h_prev + x_t
            step(decay_row, source)
        return decay, states


def _time_major(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(batch, ..., L) -> contiguous (L, batch, ...) in ``dtype``, whatever x's strides."""
    rows = math.prod(x.shape[:-1])
    out = torch.empty((x.shape[-1], *x.shape[:-1]), dtype=x.dtype, device=x.device)
    if x.is_contiguous():
        # A plain 2-D transpose takes ATen's blocked transpose-copy, much faster than a general permuted copy.
        out.view(-1, rows).copy_(x.view(rows, -1).t())
    else:
        out.copy_(x.movedim(-1, 0))
    return out.to(dtype)


def _channel_major(x_t: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """(L, batch, ...) -> a fresh (batch, ..., L) result buffer of ``shape`` and ``dtype`` (blocked transpose)."""
    out = new_output(shape, dtype, x_t.device)
    length = shape[-1]
    out.view(-1, length).copy_(x_t.to(dtype).reshape(length, -1).t())
    return out


def _softplus(x: Tensor) -> Tensor:
    """torch.nn.functional.softplus without its slow CPU kernel (and without torch.where, also slow on CPU).

    softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1]. log1p(e) = log(u) * e / (u - 1) with u = 1 + e:
    u - 1 is exact, so the rounding of u cancels (Goldberg's trick), giving ~1e-7 relative error. Where u rounds to
    1 (e < 6e-8, x < -16.6) the result is 0 instead of e: an absolute error below 6e-8 in delta.
    """
    e = x.abs().mul_(-math.log2(math.e)).exp2_()
    u = e + 1
    log_u = torch.log(u)
    u -= 1
    log_u.mul_(e.div_(u.clamp_(min=1e-30)))  # where u = 1, log_u = 0
    return log_u.add_(torch.clamp(x, min=0.0, out=u))


def _chunks(length: int, reverse: bool) -> list[tuple[int, int]]:
    """Position ranges [t0, t1) of the chunks, in scan order."""
    chunks = [(t0, min(t0 + CHUNK, length)) for t0 in range(0, length, CHUNK)]
    return chunks[::-1] if reverse else chunks


class SelectiveScanTorch(torch.autograd.Function):
    """Autograd function; inputs as in :func:`selective_scan_torch`, outputs (out, last_state)."""

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
        slab = (b, g, n, j)

        u_t = _time_major(u, dtype)  # (L, b, d)
        raw_t = _time_major(delta, dtype)  # (L, b, d): delta + bias, before softplus
        if delta_bias is not None:
            raw_t += delta_bias.to(dtype)
        delta_t = _softplus(raw_t) if delta_softplus else raw_t
        du_t = delta_t * u_t
        B_t = _time_major(grouped(B), dtype).unsqueeze(-1)  # (L, b, G, N, 1)
        C_t = _time_major(grouped(C), dtype).unsqueeze(-1)
        A_t = A.to(dtype).view(g, j, n).transpose(1, 2).contiguous()  # (G, N, dim/G)
        A2_t = A_t * math.log2(math.e)  # exp(x) = exp2(x log2 e); torch's exp2 is faster than exp on CPU

        chunks = _chunks(L, reverse)
        work = _ChunkWork(min(CHUNK, L), slab, dtype, u.device, reverse)
        chunk_start = torch.empty((len(chunks), *slab), dtype=dtype, device=u.device)  # state before each chunk
        y_t = torch.empty((L, b, g, 1, j), dtype=dtype, device=u.device)
        delta5, du5 = delta_t.view(L, b, g, 1, j), du_t.view(L, b, g, 1, j)
        chunk_start[0].zero_()
        for c, (t0, t1) in enumerate(chunks):
            _, states = work.recompute(t0, t1, chunk_start[c] if c > 0 else None, delta5, du5, A2_t, B_t)
            torch.matmul(C_t[t0:t1].transpose(-1, -2), states, out=y_t[t0:t1])  # sum_n C h
            h_out = work.state_rows[work.sequence(t1 - t0)[-1]]  # the chunk's final state; buffers get reused
            if c + 1 < len(chunks):
                chunk_start[c + 1].copy_(h_out)
        last_state = new_output((b, d, n), dtype, u.device)
        last_state.view(b, g, j, n).copy_(h_out.transpose(-1, -2))

        y_t = y_t.view(L, b, d)
        D_ = D.to(dtype) if D is not None else None
        if D_ is not None:
            y_t.addcmul_(u_t, D_)
        z_t = sig_t = None
        out_t = y_t
        if z is not None:
            z_t = _time_major(z, dtype)
            sig_t = torch.sigmoid(z_t)
            out_t = (z_t * sig_t).mul_(y_t)  # y * silu(z)
        out = _channel_major(out_t, tuple(u.shape), u.dtype)

        ctx.save_for_backward(u_t, raw_t, delta_t, du_t, A_t, A2_t, B_t, C_t, D_, z_t, sig_t, y_t, chunk_start)
        ctx.scan = (shape, delta_softplus, reverse, dtype)
        ctx.input_meta = tuple(
            (t.dtype, tuple(t.shape)) if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)
        )
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dout: Tensor | None, dlast: Tensor | None) -> tuple[Tensor | None, ...]:
        u_t, raw_t, delta_t, du_t, A_t, A2_t, B_t, C_t, D_, z_t, sig_t, y_t, chunk_start = ctx.saved_tensors
        shape, delta_softplus, reverse, dtype = ctx.scan
        L, b, d, n, g = shape.length, shape.batch, shape.dim, shape.d_state, shape.groups
        j = shape.dim_per_group
        needs, meta = ctx.needs_input_grad, ctx.input_meta

        dout_t = torch.zeros_like(y_t) if dout is None else _time_major(dout, dtype)  # (L, b, d)
        dz_t = None
        if z_t is not None:
            if needs[6]:
                # d silu(z) / dz = s (1 + z (1 - s))
                dz_t = (1 - sig_t).mul_(z_t).add_(1).mul_(sig_t).mul_(y_t).mul_(dout_t)
            dy_t = dout_t.mul_(z_t).mul_(sig_t)
        else:
            dy_t = dout_t
        dy5, delta5, du5 = (x.view(L, b, g, 1, j) for x in (dy_t, delta_t, du_t))
        # (j, 1) column as a transposed row: a (j, 1) view with unit strides would push matmul off its BLAS path.
        du_col = du5.transpose(-1, -2)

        rows, slab = min(CHUNK, L), (b, g, n, j)
        work = _ChunkWork(rows, slab, dtype, y_t.device, reverse)
        dC_t = torch.empty((L, b, g, n, 1), dtype=dtype, device=y_t.device)
        dB_t = torch.empty((L, b, g, n, 1), dtype=dtype, device=y_t.device)
        gB_t = torch.empty((L, b, g, 1, j), dtype=dtype, device=y_t.device)
        ddelta_t = torch.empty((L, b, g, 1, j), dtype=dtype, device=y_t.device)
        dA_rows = torch.zeros_like(work.grad)  # q * delta summed over chunks; summed over rows and batch at the end
        # decay[next] * grad_h[next] flowing into a chunk from the position after it in scan order; at the very end
        # of the scan that is the gradient of the last state.
        carry = torch.zeros(slab, dtype=dtype, device=y_t.device)
        if dlast is not None:
            carry += dlast.to(dtype).reshape(b, g, j, n).transpose(-1, -2)

        chunks = _chunks(L, reverse)
        for c in range(len(chunks) - 1, -1, -1):
            t0, t1 = chunks[c]
            m = t1 - t0
            h_in = chunk_start[c] if c > 0 else None
            decay, states = work.recompute(t0, t1, h_in, delta5, du5, A2_t, B_t)
            grad_h = work.grad[:m]
            seq = work.sequence(m)
            torch.mul(dy5[t0:t1], C_t[t0:t1], out=grad_h)
            work.grad_rows[seq[-1]].add_(carry)
            for step, decay_row, source in work.grad_steps(m):  # grad_h[t] = C_t dy_t + decay[next] grad_h[next]
                step(decay_row, source)
            carry = work.decay_rows[seq[0]] * work.grad_rows[seq[0]]

            torch.matmul(states, dy5[t0:t1].transpose(-1, -2), out=dC_t[t0:t1])  # sum_j h dy
            torch.matmul(grad_h, du_col[t0:t1], out=dB_t[t0:t1])  # sum_j grad_h delta u
            torch.matmul(B_t[t0:t1].transpose(-1, -2), grad_h, out=gB_t[t0:t1])  # sum_n grad_h B

            # q = grad_h * decay * h_prev, the gradient of the log-decay delta*A, built in grad_h's buffer (grad_h is
            # not needed any more). The first position of the chunk in scan order takes the chunk's starting state
            # (0 at the scan's start); the others the row before them.
            q = grad_h.mul_(decay)
            if reverse:
                q[: m - 1].mul_(states[1:])
            else:
                q[1:].mul_(states[: m - 1])
            if h_in is None:
                q[seq[0]].zero_()
            else:
                q[seq[0]].mul_(h_in)
            dA_rows[:m].addcmul_(q, delta5[t0:t1])
            torch.sum(q.mul_(A_t), -2, keepdim=True, out=ddelta_t[t0:t1])  # sum_n q A

        dA = dA_rows.sum((0, 1)) if needs[2] else None  # (G, N, dim/G)
        gB_t = gB_t.view(L, b, d)
        ddelta_t = ddelta_t.view(L, b, d).addcmul_(gB_t, u_t)
        du_grad = gB_t.mul_(delta_t)
        dD = None
        if D_ is not None:
            du_grad.addcmul_(dy_t, D_)
            dD = (dy_t * u_t).sum((0, 1)) if needs[5] else None
        if delta_softplus:
            ddelta_t.mul_(torch.sigmoid(raw_t))
        dbias = ddelta_t.sum((0, 1)) if needs[7] else None

        def param(grad: Tensor | None, i: int) -> Tensor | None:
            return grad.to(meta[i][0]) if grad is not None and needs[i] else None

        def activation(grad_t: Tensor | None, i: int) -> Tensor | None:
            return _channel_major(grad_t, meta[i][1], meta[i][0]) if grad_t is not None and needs[i] else None

        bc_shape = (b, g, n, L)  # B, C gradients before taking the 3-D shape of an ungrouped input
        grads = [
            activation(du_grad, 0),
            activation(ddelta_t, 1),
            param(dA.transpose(1, 2).reshape(d, n) if dA is not None else None, 2),
            _channel_major(dB_t, bc_shape, meta[3][0]).view(meta[3][1]) if needs[3] else None,
            _channel_major(dC_t, bc_shape, meta[4][0]).view(meta[4][1]) if needs[4] else None,
            param(dD, 5),
            activation(dz_t, 6),
            param(dbias, 7),
        ]
        return (*grads, None, None)


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
