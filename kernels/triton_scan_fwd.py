"""Selective-scan forward in Triton: the kernel and its launcher.

One program owns one batch element, BLOCK_D (``block_d_fwd``, 32 x num_warps) channels of one B/C group and one or
both scan directions; each thread owns one channel and walks the sequence position by position with its N states in
registers, as mamba-ssm's CUDA kernel does inside a thread: the state tile is (BLOCK_N, BLOCK_D), states along the
first axis, channels across lanes, so neither the recurrence nor ``y = sum_n C_n h_n`` crosses lanes and there are no
shuffles. Per (t, d, n) it evaluates one exp2 (one MUFU.EX2, flushing subnormal decays to 0). BLOCK_L positions are
unrolled per chunk; at each chunk end the state is saved: (batch, n_chunks - 1, N, dim) fp32, the states at the start
of every chunk but the first. The (batch, dim, L, N) states never reach memory. B and C are read as fp32
(batch, G, L, N) rows (a small copy where they are not already so), one position's N values per vector load.

A bidirectional call runs both directions in one program, one after the other: the first writes its ungated y into
the output, the second adds its own and applies the gate (the z gate is shared), with a barrier between them. When
saving for the backward with z, the second also writes the ungated y_fwd + y_bwd (u's dtype and layout): the
backward's programs run one direction each and compute dz from it.
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
    _check_pair,
    _direction,
    _exp2_ftz,
    _grid,
    _like,
    _n_chunks,
    _sigmoid,
    _softplus,
    _store_rows,
)


@triton.jit
def _fwd_direction(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, out_ptr, y_ptr, last_ptr, chunk_ptr,
    b, grp, offs_d, mask_d, dim_per_group, unit, length, dim, n_chunks, out_scale,
    s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l, s_o_b, s_o_d, s_o_l, s_y_b, s_y_d, s_y_l,
    HAS_D: tl.constexpr, GATE: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, SAVE_CHUNKS: tl.constexpr, ACCUMULATE: tl.constexpr, FINAL: tl.constexpr,
    SAVE_Y: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    UNROLL: tl.constexpr,
):  # fmt: skip
    # Sequential in each thread: the thread of channel d walks the positions one by one with its N states in
    # registers (h is (BLOCK_N, BLOCK_D), states along the first axis, channels across lanes), so neither the scan
    # nor y = sum_n C_n h_n crosses lanes. BLOCK_L positions are unrolled per chunk; a chunk-start state is saved
    # every BLOCK_L positions.
    states = tl.arange(0, BLOCK_N)
    mask_n = states < N_STATE
    mask_nd = mask_n[:, None] & mask_d[None, :]
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    A2 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)  # A in log2 units; padded states and channels: decay 1
    for n in tl.static_range(N_STATE):
        A_n = tl.load(A_ptr + offs_d * s_A_d + n * s_A_n, mask=mask_d, other=0.0).to(tl.float32)
        A2 = tl.where(states[:, None] == n, A_n[None, :] * _LOG2E, A2)
    u_base = u_ptr + b * s_u_b + offs_d * s_u_d
    dt_base = dt_ptr + b * s_dt_b + offs_d * s_dt_d
    z_base = z_ptr + b * s_z_b + offs_d * s_z_d
    o_base = out_ptr + b * s_o_b + offs_d * s_o_d
    y_base = y_ptr + b * s_y_b + offs_d * s_y_d
    B_base = B_ptr + b * s_B_b + grp * s_B_g + states * s_B_n
    C_base = C_ptr + b * s_C_b + grp * s_C_g + states * s_C_n
    n_saved = n_chunks - 1
    chunk_base = chunk_ptr + b * n_saved * N_STATE * dim + offs_d[None, :] + states[:, None] * dim

    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for c in range(0, n_chunks):
        for step in range(0, BLOCK_L // UNROLL):  # a loop of UNROLL unrolled positions: compiles 4x faster than 32
            for i in tl.static_range(UNROLL):
                pos = c * BLOCK_L + step * UNROLL + i
                valid = pos < length
                # Past the end (last chunk), read the last position again: B and C then need no mask (and no zero
                # fill); delta is masked to 0 there, so the state passes unchanged and nothing is stored.
                pos = tl.minimum(pos, length - 1)
                if REVERSE:
                    t = (length - 1 - pos).to(tl.int64)
                else:
                    t = pos.to(tl.int64)
                mask = mask_d & valid
                u = tl.load(u_base + t * s_u_l, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_D,)
                raw = tl.load(dt_base + t * s_dt_l, mask=mask, other=0.0).to(tl.float32)
                if HAS_BIAS:
                    raw += bias
                if SOFTPLUS:
                    dt = _softplus(raw)
                else:
                    dt = raw
                dt = tl.where(mask, dt, 0.0)  # padded positions: decay 1, input 0
                B_t = tl.load(B_base + t * s_B_l, mask=mask_n, other=0.0)  # (BLOCK_N,) fp32, N contiguous
                C_t = tl.load(C_base + t * s_C_l, mask=mask_n, other=0.0)
                h = _exp2_ftz(dt[None, :] * A2) * h + (dt * u)[None, :] * B_t[:, None]
                y = tl.sum(h * C_t[:, None], axis=0)
                if HAS_D:
                    y += u * Dv
                if ACCUMULATE:  # the other direction's ungated y, written by this thread before the barrier
                    y += tl.load(o_base + t * s_o_l, mask=mask, other=0.0).to(tl.float32)
                if SAVE_Y:  # both directions' ungated y, for dz in the backward (whose programs run one each)
                    tl.store(y_base + t * s_y_l, y.to(y_ptr.dtype.element_ty), mask=mask)
                if FINAL:
                    y = y * out_scale
                    if GATE:
                        zv = tl.load(z_base + t * s_z_l, mask=mask, other=0.0).to(tl.float32)
                        y = y * zv * _sigmoid(zv)
                tl.store(o_base + t * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE_CHUNKS:
            tl.store(chunk_base + c * N_STATE * dim, h, mask=mask_nd & (c < n_saved))

    # Row by row: a (batch, dim, N) tile store would make the compiler convert h through shared memory. The channel
    # offsets are recomputed with a runtime 1 (``unit``) so that the prologue's are not held (spilled) through the loop.
    unit = unit * unit  # not the prologue's runtime 1: nothing of the prologue is reused (and held) here
    pid_end = tl.program_id(0) * unit
    grp_end = pid_end % (dim // dim_per_group)
    offs_end = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)) * unit
    end_d = (pid_end // (dim // dim_per_group)).to(tl.int64) * dim + grp_end * dim_per_group + offs_end
    _store_rows(last_ptr + end_d * N_STATE, 1, h, offs_end < dim_per_group, states, N_STATE)


@triton.jit(do_not_specialize=(*_SIZES, "unit"))
def _scan_fwd_kernel(
    u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr,
    u1_ptr, dt1_ptr, A1_ptr, B1_ptr, C1_ptr, D1_ptr, bias1_ptr,
    z_ptr, out_ptr, y_ptr, last_ptr, chunk_ptr,
    batch, length, dim_per_group, n_groups, n_chunks, out_scale, unit,
    s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
    s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
    s1_u_b, s1_u_d, s1_u_l, s1_dt_b, s1_dt_d, s1_dt_l, s1_A_d, s1_A_n,
    s1_B_b, s1_B_g, s1_B_n, s1_B_l, s1_C_b, s1_C_g, s1_C_n, s1_C_l,
    s_z_b, s_z_d, s_z_l, s_o_b, s_o_d, s_o_l, s_y_b, s_y_d, s_y_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, BIDIRECTIONAL: tl.constexpr, SAVE_CHUNKS: tl.constexpr, SAVE_Y: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    UNROLL: tl.constexpr,
):  # fmt: skip
    pid_bg = tl.program_id(0)
    b = (pid_bg // n_groups).to(tl.int64)
    grp = pid_bg % n_groups
    offs_j = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # channel inside the group
    mask_d = offs_j < dim_per_group
    offs_d = (grp * dim_per_group + offs_j).to(tl.int64)  # (BLOCK_D,) channel
    dim = n_groups * dim_per_group
    _fwd_direction(
        u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr, z_ptr, out_ptr, y_ptr, last_ptr, chunk_ptr,
        b, grp, offs_d, mask_d, dim_per_group, unit, length, dim, n_chunks, out_scale,
        s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
        s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
        s_z_b, s_z_d, s_z_l, s_o_b, s_o_d, s_o_l, s_y_b, s_y_d, s_y_l,
        HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, REVERSE, SAVE_CHUNKS, False, not BIDIRECTIONAL, False,
        N_STATE, BLOCK_L, BLOCK_D, BLOCK_N, UNROLL,
    )  # fmt: skip
    if BIDIRECTIONAL:
        # The second direction reads y of the first at positions that other threads of this program wrote.
        tl.debug_barrier()
        n_saved = tl.maximum(n_chunks - 1, 1)
        # The channel offsets again, times a runtime 1 (``unit``): otherwise the compiler keeps the first direction's
        # per-thread offsets and pointers alive through its loops for reuse here, and spills them.
        unit = unit * unit  # another runtime 1, so that nothing of the first direction's epilogue is reused either
        pid_bg = tl.program_id(0) * unit
        b = (pid_bg // n_groups).to(tl.int64)
        grp = pid_bg % n_groups
        offs_j = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)) * unit
        mask_d = offs_j < dim_per_group
        offs_d = (grp * dim_per_group + offs_j).to(tl.int64)
        _fwd_direction(
            u1_ptr, dt1_ptr, A1_ptr, B1_ptr, C1_ptr, D1_ptr, bias1_ptr, z_ptr, out_ptr, y_ptr,
            last_ptr + batch * dim * N_STATE, chunk_ptr + batch * n_saved * N_STATE * dim,
            b, grp, offs_d, mask_d, dim_per_group, unit, length, dim, n_chunks, out_scale,
            s1_u_b, s1_u_d, s1_u_l, s1_dt_b, s1_dt_d, s1_dt_l, s1_A_d, s1_A_n,
            s1_B_b, s1_B_g, s1_B_n, s1_B_l, s1_C_b, s1_C_g, s1_C_n, s1_C_l,
            s_z_b, s_z_d, s_z_l, s_o_b, s_o_d, s_o_l, s_y_b, s_y_d, s_y_l,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, True, SAVE_CHUNKS, True, True, SAVE_Y,
            N_STATE, BLOCK_L, BLOCK_D, BLOCK_N, UNROLL,
        )  # fmt: skip


FWD_MAX_REGISTERS = 168  # three programs of 4 warps per SM (the compile gate's forward budget)


def _forward(
    first: Inputs,
    second: Inputs | None,
    z: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    save_chunks: bool,
    out_scale: float,
    config: ScanConfig,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Launch the forward kernel for one direction (second=None) or both. Returns out (u's dtype and layout), the
    last states (n_dirs, batch, dim, N) fp32 and, with ``save_chunks``, what the backward needs: the chunk-start
    states (n_dirs, batch, max(n_chunks - 1, 1), N, dim) fp32 and, for both directions with z, their ungated
    y_fwd + y_bwd (u's dtype and layout; else None)."""
    shape = _check_pair(first, second, z) if second is not None else check_inputs(*first[:6], z, first[6])
    n_dirs = 2 if second is not None else 1
    p0, s0, _ = _direction(first, forward=True)
    p1, s1, _ = _direction(second, forward=True) if second is not None else (p0, s0, None)
    u = first[0]
    n_chunks = _n_chunks(shape, config)
    out = _like(u)
    last = new_output((n_dirs, shape.batch, shape.dim, shape.d_state), torch.float32, u.device)
    chunks = (
        new_output((n_dirs, shape.batch, max(n_chunks - 1, 1), shape.d_state, shape.dim), torch.float32, u.device)
        if save_chunks
        else None
    )
    save_y = save_chunks and second is not None and z is not None
    y_ungated = _like(u) if save_y else None
    _scan_fwd_kernel[_grid(shape, config.block_d_fwd)](
        *p0,
        *p1,
        z if z is not None else u,
        out,
        y_ungated if y_ungated is not None else out,
        last,
        chunks if chunks is not None else last,
        shape.batch,
        shape.length,
        shape.dim_per_group,
        shape.groups,
        n_chunks,
        float(out_scale),
        1,  # unit
        *s0,
        *s1,
        *(z.stride() if z is not None else (0, 0, 0)),
        *out.stride(),
        *(y_ungated.stride() if y_ungated is not None else (0, 0, 0)),
        HAS_D=first[5] is not None,
        HAS_Z=z is not None,
        HAS_BIAS=first[6] is not None,
        SOFTPLUS=delta_softplus,
        REVERSE=reverse,
        BIDIRECTIONAL=second is not None,
        SAVE_CHUNKS=save_chunks,
        SAVE_Y=save_y,
        N_STATE=shape.d_state,
        BLOCK_L=config.block_l,
        BLOCK_D=config.block_d_fwd,
        UNROLL=min(8, config.block_l),
        BLOCK_N=triton.next_power_of_2(shape.d_state),
        num_warps=config.num_warps,
        # An upper bound on registers makes ptxas allocate up to it instead of spilling the few values live across
        # the loops to reach a higher occupancy (without it: 80 registers and 8-48 B of stack on some calls).
        maxnreg=FWD_MAX_REGISTERS,
    )
    return out, last, chunks, y_ungated


def scan_forward(
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
    save_chunks: bool,
    config: ScanConfig = DEFAULT_CONFIG,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One direction: out (u's dtype), last_state (batch, dim, N) fp32 and, with ``save_chunks``, the chunk states."""
    out, last, chunks, _ = _forward((u, delta, A, B, C, D, delta_bias), None, z, delta_softplus, reverse,
                                    save_chunks, 1.0, config)  # fmt: skip
    return out, last[0], chunks


def scan_forward_bidirectional(
    u: tuple[Tensor, Tensor],
    delta: tuple[Tensor, Tensor],
    A: tuple[Tensor, Tensor],
    B: tuple[Tensor, Tensor],
    C: tuple[Tensor, Tensor],
    D: tuple[Tensor | None, Tensor | None],
    z: Tensor | None,
    delta_bias: tuple[Tensor | None, Tensor | None],
    delta_softplus: bool,
    save_chunks: bool,
    out_scale: float = 1.0,
    config: ScanConfig = DEFAULT_CONFIG,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Both directions in one launch: out = (y_fwd + y_bwd) * out_scale * silu(z); last states (2, batch, dim, N);
    with ``save_chunks``, what :func:`scan_backward_bidirectional` needs: the chunk states and (with z) the ungated
    y_fwd + y_bwd."""
    first = (u[0], delta[0], A[0], B[0], C[0], D[0], delta_bias[0])
    second = (u[1], delta[1], A[1], B[1], C[1], D[1], delta_bias[1])
    return _forward(first, second, z, delta_softplus, False, save_chunks, out_scale, config)
