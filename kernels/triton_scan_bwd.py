"""Selective-scan backward in Triton: the kernel and its launcher.

Backward. One program owns BLOCK_D channels and walks the chunks, last (in scan order) first. Every register tile is
(BLOCK_L, BLOCK_D): positions by channels; the N states are a static (unrolled) loop inside the chunk, and a chunk's
states are recomputed from its saved starting state.

Per chunk, with g_p = dLoss/dh_p at scan position p:

    g_p = C_p dy_p + decay_{p+1} g_{p+1}        a reverse scan, seeded with decay * g flowing in from the next chunk
    a_p * h_{p-1} = h_p - x_p                   (the identity that gives the decay gradient without h_{p-1})
    q_p = g_p * (h_p - x_p)                     gradient of the log-decay delta_p * A
    dA = sum_p q_p delta_p, ddelta_p = sum_n (q_p A + g_p B_p u_p), du_p = sum_n g_p B_p delta_p + D dy_p,
    dB_p = sum_d g_p delta_p u_p, dC_p = sum_d h_p dy_p

The reverse scan needs decay_{p+1} at row p; instead of shifting the tile across lanes it scans the triple
(alpha, beta, last decay) whose combine carries the decay of a segment's first element (see ``_grad_combine``), so
the recomputed decays serve both scans and nothing is evaluated twice. The backward is deterministic: dB and dC are
summed over the program's channels in registers and written as per-channel-block partial sums (n_blocks, batch, G,
N, L), reduced in a fixed order afterwards; dA, dD and d(delta_bias) are per-batch partials. No float atomics.
A bidirectional call runs both directions in one program, one after the other, with a barrier between them: the
second adds its share of dz to the first's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_inputs, new_output
from ._triton_common import (
    _LOG2E,
    _SIZES,
    DEFAULT_CONFIG,
    Inputs,
    ScanConfig,
    _affine_combine,
    _check_pair,
    _delta,
    _direction,
    _grid,
    _like,
    _n_chunks,
    _pick,
    _positions,
)


@triton.jit
def _grad_combine(alpha_l, beta_l, decay_l, alpha_r, beta_r, decay_r):
    # Reverse scan for g_p = c_p + a_{p+1} g_{p+1}. A segment of positions [p, q] is summarised as
    # g_p = beta + alpha * v with v = a_{q+1} g_{q+1} flowing in from the right, plus `decay` = a_p of its first
    # position (which turns the segment's g_p into the v of the segment before it). With reverse=True Triton
    # combines the accumulated later segment (left) with the earlier one (right), as a forward scan of the flipped
    # sequence would. A single position is (1, c_p, a_p).
    scale = alpha_r * decay_l
    return scale * alpha_l, beta_r + scale * beta_l, decay_r


@triton.jit
def _bwd_direction(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dout_ptr, dlast_ptr, chunk_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    b, grp, offs_d, mask_d, pid_d, batch, length, dim, n_groups, n_chunks, out_scale,
    s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l,
    s_du_b, s_du_d, s_du_l, s_ddt_b, s_ddt_d, s_ddt_l, s_dz_b, s_dz_d, s_dz_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, HAS_DLAST: tl.constexpr, DZ_ACCUMULATE: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    states = tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_L)
    mask_nd = (states[:, None] < N_STATE) & mask_d[None, :]
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = None
    u_base = u_ptr + b * s_u_b + offs_d[None, :] * s_u_d
    dt_base = dt_ptr + b * s_dt_b + offs_d[None, :] * s_dt_d
    z_base = z_ptr + b * s_z_b + offs_d[None, :] * s_z_d
    do_base = dout_ptr + b * s_do_b + offs_d[None, :] * s_do_d
    du_base = du_ptr + b * s_du_b + offs_d[None, :] * s_du_d
    ddt_base = ddt_ptr + b * s_ddt_b + offs_d[None, :] * s_ddt_d
    dz_base = dz_ptr + b * s_dz_b + offs_d[None, :] * s_dz_d
    B_base = B_ptr + b * s_B_b + grp * s_B_g
    C_base = C_ptr + b * s_C_b + grp * s_C_g
    A_base = A_ptr + offs_d * s_A_d
    n_saved = n_chunks - 1
    chunk_base = chunk_ptr + b * n_saved * N_STATE * dim + offs_d
    # Partial sums of dB, dC over this program's channels: fp32 (n_channel_blocks, batch, G, N, L).
    dBC_base = ((pid_d * batch + b) * n_groups + grp) * N_STATE * length
    nd_offs = (b * dim + offs_d[None, :]) * N_STATE + states[:, None]  # (BLOCK_N, BLOCK_D) in (batch, dim, N)

    # carry[n] = decay_{p+1} * g_{p+1} flowing into the chunk's last position from the chunk after it; it starts as
    # the gradient of the last state (the scan's final state is h at the last position).
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + nd_offs, mask=mask_nd, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    ones = tl.full((BLOCK_L, BLOCK_D), 1.0, dtype=tl.float32)

    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        t, mask_l = _positions(c, length, BLOCK_L, REVERSE)
        mask_ld = mask_l[:, None] & mask_d[None, :]
        u = tl.load(u_base + t[:, None] * s_u_l, mask=mask_ld, other=0.0).to(tl.float32)
        raw = tl.load(dt_base + t[:, None] * s_dt_l, mask=mask_ld, other=0.0).to(tl.float32)
        dt, raw = _delta(raw, bias, mask_ld, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        dout = tl.load(do_base + t[:, None] * s_do_l, mask=mask_ld, other=0.0).to(tl.float32) * out_scale
        if HAS_Z:
            zv = tl.load(z_base + t[:, None] * s_z_l, mask=mask_ld, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zv)
            dy = dout * zv * sig
        else:
            dy = dout
        if HAS_D:
            du = dy * Dv[None, :]
            y = u * Dv[None, :]  # this direction's y before the gate, for dz
        else:
            du = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
            y = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        ddt = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        carry_next = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        for n in tl.static_range(N_STATE):
            A = tl.load(A_base + n * s_A_n, mask=mask_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_base + n * s_B_n + t * s_B_l, mask=mask_l, other=0.0).to(tl.float32)
            C_n = tl.load(C_base + n * s_C_n + t * s_C_l, mask=mask_l, other=0.0).to(tl.float32)
            # Recompute the chunk's states from its saved starting state (zero before the first chunk).
            h0 = tl.load(chunk_base + ((c - 1) * N_STATE + n) * dim, mask=mask_d & (c > 0), other=0.0)
            decay = tl.exp2(dt * (A * _LOG2E)[None, :])
            x = dtu * B_n[:, None]
            prod, acc = tl.associative_scan((decay, x), 0, _affine_combine)
            hs = acc + prod * h0[None, :]
            if HAS_Z:
                y += hs * C_n[:, None]
            # g_p = C_p dy_p + decay_{p+1} g_{p+1}, seeded by the carry from the next chunk.
            alpha, beta, _ = tl.associative_scan((ones, dy * C_n[:, None], decay), 0, _grad_combine, reverse=True)
            g = beta + alpha * _pick(carry, states, n)[None, :]
            v_first = tl.sum(tl.where(rows[:, None] == 0, decay * g, 0.0), axis=0)
            carry_next = tl.where(states[:, None] == n, v_first[None, :], carry_next)

            q = g * (hs - x)  # gradient of the log-decay delta * A
            dA_acc += tl.where(states[:, None] == n, tl.sum(q * dt, axis=0)[None, :], 0.0)
            gB = g * B_n[:, None]
            ddt += q * A[None, :] + gB * u
            du += gB * dt
            # Channel sums of this program for the shared B and C, at sequence positions t.
            dB_n = tl.sum(g * dtu, axis=1)  # (BLOCK_L,)
            dC_n = tl.sum(hs * dy, axis=1)
            tl.store(dB_ptr + dBC_base + n * length + t, dB_n, mask=mask_l)
            tl.store(dC_ptr + dBC_base + n * length + t, dC_n, mask=mask_l)
        carry = carry_next

        if HAS_Z:
            dz = dout * y * sig * (1.0 + zv * (1.0 - sig))
            if DZ_ACCUMULATE:  # the other direction's share, written by this program before the barrier
                dz += tl.load(dz_base + t[:, None] * s_dz_l, mask=mask_ld, other=0.0).to(tl.float32)
            tl.store(dz_base + t[:, None] * s_dz_l, dz.to(dz_ptr.dtype.element_ty), mask=mask_ld)
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=0)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        if HAS_BIAS:
            dbias_acc += tl.sum(tl.where(mask_ld, ddt, 0.0), axis=0)
        tl.store(du_base + t[:, None] * s_du_l, du.to(du_ptr.dtype.element_ty), mask=mask_ld)
        tl.store(ddt_base + t[:, None] * s_ddt_l, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_ld)

    tl.store(dA_ptr + nd_offs, dA_acc, mask=mask_nd)
    tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)


@triton.jit(do_not_specialize=_SIZES)
def _scan_bwd_kernel(
    u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr,
    u1_ptr, dt1_ptr, A1_ptr, B1_ptr, C1_ptr, D1_ptr, bias1_ptr,
    z_ptr, dout_ptr, dlast_ptr, chunk_ptr,
    du0_ptr, ddt0_ptr, du1_ptr, ddt1_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    batch, length, dim_per_group, n_groups, n_chunks, out_scale,
    s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
    s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
    s1_u_b, s1_u_d, s1_u_l, s1_dt_b, s1_dt_d, s1_dt_l, s1_A_d, s1_A_n,
    s1_B_b, s1_B_g, s1_B_n, s1_B_l, s1_C_b, s1_C_g, s1_C_n, s1_C_l,
    s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l,
    s0_du_b, s0_du_d, s0_du_l, s0_ddt_b, s0_ddt_d, s0_ddt_l,
    s1_du_b, s1_du_d, s1_du_l, s1_ddt_b, s1_ddt_d, s1_ddt_l,
    s_dz_b, s_dz_d, s_dz_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, BIDIRECTIONAL: tl.constexpr, HAS_DLAST: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_bg = tl.program_id(0)
    b = (pid_bg // n_groups).to(tl.int64)
    grp = pid_bg % n_groups
    pid_d = tl.program_id(1)
    offs_j = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_j < dim_per_group
    offs_d = (grp * dim_per_group + offs_j).to(tl.int64)
    dim = n_groups * dim_per_group
    _bwd_direction(
        u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr, z_ptr, dout_ptr, dlast_ptr, chunk_ptr,
        du0_ptr, ddt0_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
        b, grp, offs_d, mask_d, pid_d, batch, length, dim, n_groups, n_chunks, out_scale,
        s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
        s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
        s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l,
        s0_du_b, s0_du_d, s0_du_l, s0_ddt_b, s0_ddt_d, s0_ddt_l, s_dz_b, s_dz_d, s_dz_l,
        HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, REVERSE, HAS_DLAST, False,
        N_STATE, BLOCK_L, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    if BIDIRECTIONAL:
        tl.debug_barrier()  # the second direction adds to dz written by other threads of this program
        n_saved = tl.maximum(n_chunks - 1, 1)
        n_blocks = tl.num_programs(1)
        _bwd_direction(
            u1_ptr, dt1_ptr, A1_ptr, B1_ptr, C1_ptr, D1_ptr, bias1_ptr, z_ptr, dout_ptr,
            dlast_ptr + batch * dim * N_STATE, chunk_ptr + batch * n_saved * N_STATE * dim,
            du1_ptr, ddt1_ptr, dz_ptr,
            dB_ptr + n_blocks * batch * n_groups * N_STATE * length,
            dC_ptr + n_blocks * batch * n_groups * N_STATE * length,
            dA_ptr + batch * dim * N_STATE, dD_ptr + batch * dim, dbias_ptr + batch * dim,
            b, grp, offs_d, mask_d, pid_d, batch, length, dim, n_groups, n_chunks, out_scale,
            s1_u_b, s1_u_d, s1_u_l, s1_dt_b, s1_dt_d, s1_dt_l, s1_A_d, s1_A_n,
            s1_B_b, s1_B_g, s1_B_n, s1_B_l, s1_C_b, s1_C_g, s1_C_n, s1_C_l,
            s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l,
            s1_du_b, s1_du_d, s1_du_l, s1_ddt_b, s1_ddt_d, s1_ddt_l, s_dz_b, s_dz_d, s_dz_l,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, True, HAS_DLAST, True,
            N_STATE, BLOCK_L, BLOCK_D, BLOCK_N,
        )  # fmt: skip


def _backward(
    first: Inputs,
    second: Inputs | None,
    z: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    chunks: Tensor,
    dout: Tensor,
    dlast: Tensor | None,
    out_scale: float,
    config: ScanConfig,
) -> list[tuple[Tensor | None, ...]]:
    """Launch the backward kernel. Returns, per direction, (du, ddelta, dA, dB, dC, dD, ddelta_bias) in the inputs'
    dtypes, and dz as the last entry of the first direction's tuple."""
    shape = _check_pair(first, second, z) if second is not None else check_inputs(*first[:6], z, first[6])
    n_dirs = 2 if second is not None else 1
    p0, s0, _ = _direction(first)
    p1, s1, _ = _direction(second) if second is not None else (p0, s0, None)
    u = first[0]
    n_chunks = _n_chunks(shape, config)
    if chunks.shape != (n_dirs, shape.batch, max(n_chunks - 1, 1), shape.d_state, shape.dim):
        raise ValueError(f"scan backward: chunk states of shape {tuple(chunks.shape)} do not match block_l")
    grid = _grid(shape, config.block_d)
    n_blocks = grid[1]
    du = [_like(d[0]) for d in (first, second) if d is not None]
    ddelta = [_like(d[1]) for d in (first, second) if d is not None]
    dz = _like(z) if z is not None else None
    # Deterministic reductions: per-channel-block partials of dB / dC, per-batch partials of dA / dD / dbias.
    dB_part = new_output((n_dirs, n_blocks, shape.batch, shape.groups, shape.d_state, shape.length), torch.float32,
                         u.device)  # fmt: skip
    dC_part = new_output(dB_part.shape, torch.float32, u.device)
    dA_part = new_output((n_dirs, shape.batch, shape.dim, shape.d_state), torch.float32, u.device)
    dD_part = new_output((n_dirs, shape.batch, shape.dim), torch.float32, u.device)
    dbias_part = new_output((n_dirs, shape.batch, shape.dim), torch.float32, u.device)
    dlast_all = dlast.float().contiguous() if dlast is not None else None  # small (n_dirs, batch, dim, N)
    du1, ddt1 = (du[1], ddelta[1]) if second is not None else (du[0], ddelta[0])
    _scan_bwd_kernel[grid](
        *p0,
        *p1,
        z if z is not None else u,
        dout,
        dlast_all if dlast_all is not None else dA_part,
        chunks,
        du[0],
        ddelta[0],
        du1,
        ddt1,
        dz if dz is not None else du[0],
        dB_part,
        dC_part,
        dA_part,
        dD_part,
        dbias_part,
        shape.batch,
        shape.length,
        shape.dim_per_group,
        shape.groups,
        n_chunks,
        float(out_scale),
        *s0,
        *s1,
        *(z.stride() if z is not None else (0, 0, 0)),
        *dout.stride(),
        *du[0].stride(),
        *ddelta[0].stride(),
        *du1.stride(),
        *ddt1.stride(),
        *(dz.stride() if dz is not None else (0, 0, 0)),
        HAS_D=first[5] is not None,
        HAS_Z=z is not None,
        HAS_BIAS=first[6] is not None,
        SOFTPLUS=delta_softplus,
        REVERSE=reverse,
        BIDIRECTIONAL=second is not None,
        HAS_DLAST=dlast is not None,
        N_STATE=shape.d_state,
        BLOCK_L=config.block_l,
        BLOCK_D=config.block_d,
        BLOCK_N=triton.next_power_of_2(shape.d_state),
        num_warps=config.num_warps_bwd,
    )
    results = []
    for i, inputs in enumerate(d for d in (first, second) if d is not None):
        _, _, A, B, C, D, bias = inputs
        # Fixed-order sums over the channel blocks and the batch (torch reductions do not use atomics).
        dB = dB_part[i].sum(0) if n_blocks > 1 else dB_part[i, 0]
        dC = dC_part[i].sum(0) if n_blocks > 1 else dC_part[i, 0]
        results.append(
            (
                du[i],
                ddelta[i],
                dA_part[i].sum(0).to(A.dtype),
                dB.view(B.shape).to(B.dtype),
                dC.view(C.shape).to(C.dtype),
                dD_part[i].sum(0).to(D.dtype) if D is not None else None,
                dbias_part[i].sum(0).to(bias.dtype) if bias is not None else None,
            )
        )
    results[0] = (*results[0], dz)
    return results


def scan_backward(
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
    chunks: Tensor,
    dout: Tensor,
    dlast: Tensor | None,
    config: ScanConfig = DEFAULT_CONFIG,
) -> tuple[Tensor | None, ...]:
    """One direction: du, ddelta, dA, dB, dC, dD, dz, ddelta_bias in the inputs' dtypes."""
    dlast4 = dlast.unsqueeze(0) if dlast is not None else None
    ((du, ddelta, dA, dB, dC, dD, dbias, dz),) = _backward(
        (u, delta, A, B, C, D, delta_bias), None, z, delta_softplus, reverse, chunks, dout, dlast4, 1.0, config
    )
    return du, ddelta, dA, dB, dC, dD, dz, dbias


def scan_backward_bidirectional(
    u: tuple[Tensor, Tensor],
    delta: tuple[Tensor, Tensor],
    A: tuple[Tensor, Tensor],
    B: tuple[Tensor, Tensor],
    C: tuple[Tensor, Tensor],
    D: tuple[Tensor | None, Tensor | None],
    z: Tensor | None,
    delta_bias: tuple[Tensor | None, Tensor | None],
    delta_softplus: bool,
    chunks: Tensor,
    dout: Tensor,
    dlast: Tensor | None,
    out_scale: float = 1.0,
    config: ScanConfig = DEFAULT_CONFIG,
) -> list[tuple[Tensor | None, ...]]:
    """Gradients of both directions: [(du, ddelta, dA, dB, dC, dD, dbias, dz), (du, ddelta, dA, dB, dC, dD, dbias)]."""
    first = (u[0], delta[0], A[0], B[0], C[0], D[0], delta_bias[0])
    second = (u[1], delta[1], A[1], B[1], C[1], D[1], delta_bias[1])
    return _backward(first, second, z, delta_softplus, False, chunks, dout, dlast, out_scale, config)
