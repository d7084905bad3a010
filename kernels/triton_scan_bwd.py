"""Selective-scan backward in Triton: the kernel and its launcher.

Layout as in the forward: one program owns one batch element, BLOCK_D channels of one B/C group and one scan
direction; each thread owns one channel and walks the positions one by one with its N states in registers
((BLOCK_N, BLOCK_D) tiles, states along the first axis, channels across lanes), so the recurrences and every sum over
states (du, ddelta) stay inside the thread. Chunks (BLOCK_L positions, the forward's chunk-state interval) are
walked last first; with g_t = dLoss/dh_t and the carry v_t = a_{t+1} g_{t+1} (the last state's gradient at the end),
per position:

    g_t = C_t dy_t + v_t,  v_{t-1} = a_t g_t                   a_t = exp(delta_t A): one MUFU.EX2 per (t, d, n)
    q_t = g_t (h_t - x_t)  with x_t = delta_t B_t u_t           (a_t h_{t-1} = h_t - x_t: no h_{t-1} needed)
    dA += q_t delta_t,  ddelta_t = sum_n (q_t A + g_t B_t u_t),  du_t = sum_n g_t B_t delta_t + D dy_t
    dB_t = sum_d g_t delta_t u_t,  dC_t = sum_d h_t dy_t        (over channels: the only cross-lane step)

The reverse walk needs h_t, which the forward never stored. Per chunk, a first walk recomputes the states from the
saved chunk-start state and keeps the state every SUB (2) positions in a small per-program scratch buffer (L1/L2
resident, each thread reading back only what it wrote); then, sub-chunk by sub-chunk from the last, the SUB states are
recomputed into registers and walked in reverse. Each decay is evaluated three times (two recomputes, the reverse
step): recomputing is cheaper than holding more states (four states per thread need more than 255 registers and
spill).

dB and dC: the 2N per-channel values of a position are summed over the 32 channels of a warp by recursive halving
(each of 5 butterfly steps sends half of the remaining values to the partner lane and adds the other half: 31 lane
shuffles for 32 values, about 2 per (t, d, n) element), leaving lane l with the warp's sum of value l; each warp
writes its sums for the position (one coalesced 128-byte row) into per-warp partials (n_warp_blocks, batch, G, L, 2N),
which are summed over the warp blocks in a fixed order afterwards. dA, dD and d(delta_bias) are per-batch partials.
No float atomics anywhere: the backward is deterministic. Tiles narrower than a warp (test configurations) reduce
with tl.sum over the program's channels instead.

A bidirectional call is one launch whose grid has a direction axis: each program runs one direction of one
(batch, channel block), in one of two disjoint branches, so its registers are those of one direction (run one after
the other in one program, the two directions left 16-32 B of spilled registers at the 255-register bound). dz needs
y_fwd + y_bwd, which no program has: the forward saves the ungated sum (as mamba-ssm's backward recomputes the gate
from its saved pre-gate output), and the forward direction's programs alone compute and write dz from it.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_inputs, new_output
from ._triton_bwd_steps import _grad_step, _load_step
from ._triton_common import (
    _LOG2E,
    _SIZES,
    DEFAULT_CONFIG,
    Inputs,
    ScanConfig,
    ScanGrads,
    _check_pair,
    _direction,
    _exp2_ftz,
    _grid,
    _like,
    _load_rows,
    _n_chunks,
    _store_rows,
)

# Positions whose states a thread holds in registers during the reverse walk (the walk below is written out for 2).
SUB = tl.constexpr(2)
WARP = 32


@triton.jit
def _bwd_direction(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dout_ptr, dlast_ptr, chunk_ptr,
    y_ptr, du_ptr, ddt_ptr, dz_ptr, part_ptr, scratch_ptr, dA_ptr, dD_ptr, dbias_ptr,
    b, grp, offs_j, offs_d, mask_d, batch, length, dim, n_groups, n_chunks, n_dblocks, out_scale,
    scratch_stride, s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l, s_y_b, s_y_d, s_y_l,
    s_du_b, s_du_d, s_du_l, s_ddt_b, s_ddt_d, s_ddt_l, s_dz_b, s_dz_d, s_dz_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, HAS_DLAST: tl.constexpr, DZ: tl.constexpr, LANE_REDUCE: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    LOG2_N: tl.constexpr,
):  # fmt: skip
    states = tl.arange(0, BLOCK_N)
    mask_n = states < N_STATE
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # D_ptr, bias_ptr: u when absent
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    A2 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)  # A in log2 units; padded states and channels: decay 1
    for n in tl.static_range(N_STATE):
        A_n = tl.load(A_ptr + offs_d * s_A_d + n * s_A_n, mask=mask_d, other=0.0).to(tl.float32)
        A2 = tl.where(states[:, None] == n, A_n[None, :] * _LOG2E, A2)
    u_base = u_ptr + b * s_u_b + offs_d * s_u_d
    dt_base = dt_ptr + b * s_dt_b + offs_d * s_dt_d
    z_base = z_ptr + b * s_z_b + offs_d * s_z_d
    do_base = dout_ptr + b * s_do_b + offs_d * s_do_d
    y_base = y_ptr + b * s_y_b + offs_d * s_y_d
    du_base = du_ptr + b * s_du_b + offs_d * s_du_d
    ddt_base = ddt_ptr + b * s_ddt_b + offs_d * s_ddt_d
    dz_base = dz_ptr + b * s_dz_b + offs_d * s_dz_d
    B_base = B_ptr + b * s_B_b + grp * s_B_g + states * s_B_n
    C_base = C_ptr + b * s_C_b + grp * s_C_g + states * s_C_n
    n_saved = n_chunks - 1
    chunk_row0 = chunk_ptr + b * n_saved * N_STATE * dim + offs_d  # state n of chunk c + 1 at + (c * N + n) * dim
    nd_row0 = (b * dim + offs_d) * N_STATE  # (batch, dim, N) offsets of state 0
    # This program's scratch: the state before each sub-chunk of the current chunk, (BLOCK_L // SUB, N, BLOCK_D).
    # The channel stride is a runtime 1: a stride known to be 1 would make Triton pick a vectorised layout for these
    # accesses and convert every state tile to it and back (through shared memory) at each use.
    scratch = scratch_ptr + tl.arange(0, BLOCK_D) * scratch_stride  # (BLOCK_D,): row n of slot s at + (s*N + n)*D
    # dB / dC partials (n_dblocks, batch, G, L, 2 * BLOCK_N): a row of 2 * BLOCK_N values per position, per warp
    # (32 channels) or, for tiles narrower than a warp, per program.
    lane = offs_j % 32
    if LANE_REDUCE:
        dblock = (offs_j // 32).to(tl.int64)
        n_bits: tl.constexpr = LOG2_N
        part_lane = (lane >> 4) * BLOCK_N + ((lane & 15) >> (4 - n_bits))
        part_mask = ((lane & ((1 << (4 - n_bits)) - 1)) == 0) & (dblock < n_dblocks)  # one writer per value
    else:
        dblock = tl.program_id(1).to(tl.int64)
        part_lane = lane
        part_mask = mask_d
    part_row = part_ptr + ((dblock * batch + b) * n_groups + grp) * length * (2 * BLOCK_N)
    offs_n2 = states

    if HAS_DLAST:
        v = _load_rows(dlast_ptr + nd_row0, 1, mask_d, states, N_STATE, BLOCK_N)
    else:
        v = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dA = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        # Walk 1: the state before every sub-chunk, into the scratch (the chunk-start state first).
        h = _load_rows(chunk_row0 + (c - 1) * N_STATE * dim, dim, mask_d & (c > 0), states, N_STATE, BLOCK_N)
        _store_rows(scratch, BLOCK_D, h, mask_d, states, N_STATE)
        for s in range(0, BLOCK_L // SUB - 1):
            for i in tl.static_range(SUB):
                t, valid, mask, u, raw, dt, B_t = _load_step(
                    c * BLOCK_L + s * SUB + i, length, mask_d, u_base, dt_base, B_base, s_u_l, s_dt_l, s_B_l, bias,
                    mask_n, HAS_BIAS, SOFTPLUS, REVERSE,
                )  # fmt: skip
                h = _exp2_ftz(dt[None, :] * A2) * h + (dt * u)[None, :] * B_t[:, None]
            _store_rows(scratch + (s + 1) * BLOCK_N * BLOCK_D, BLOCK_D, h, mask_d, states, N_STATE)
        # Walk 2, sub-chunk by sub-chunk from the last: recompute SUB states into registers, then step back.
        for sj in range(0, BLOCK_L // SUB):
            s = BLOCK_L // SUB - 1 - sj
            p = c * BLOCK_L + s * SUB
            h = _load_rows(scratch + s * BLOCK_N * BLOCK_D, BLOCK_D, mask_d, states, N_STATE, BLOCK_N)
            t0, ok0, m0, u0, r0, d0, B0 = _load_step(p, length, mask_d, u_base, dt_base, B_base, s_u_l, s_dt_l,
                                                     s_B_l, bias, mask_n, HAS_BIAS, SOFTPLUS, REVERSE)  # fmt: skip
            h0 = _exp2_ftz(d0[None, :] * A2) * h + (d0 * u0)[None, :] * B0[:, None]
            t1, ok1, m1, u1, r1, d1, B1 = _load_step(p + 1, length, mask_d, u_base, dt_base, B_base, s_u_l, s_dt_l,
                                                     s_B_l, bias, mask_n, HAS_BIAS, SOFTPLUS, REVERSE)  # fmt: skip
            h1 = _exp2_ftz(d1[None, :] * A2) * h0 + (d1 * u1)[None, :] * B1[:, None]
            v, dA, dD_acc, dbias_acc = _grad_step(
                h1, v, t1, ok1, m1, u1, r1, d1, A2, Dv, lane, dA, dD_acc, dbias_acc,
                B_base, s_B_l, C_base, z_base, do_base, y_base, du_base, ddt_base, dz_base, part_row, part_lane,
                part_mask, offs_n2, s_C_l, s_z_l, s_do_l, s_y_l, s_du_l, s_ddt_l, s_dz_l, out_scale, mask_n,
                HAS_D, HAS_Z, SOFTPLUS, DZ, LANE_REDUCE, BLOCK_N,
            )  # fmt: skip
            v, dA, dD_acc, dbias_acc = _grad_step(
                h0, v, t0, ok0, m0, u0, r0, d0, A2, Dv, lane, dA, dD_acc, dbias_acc,
                B_base, s_B_l, C_base, z_base, do_base, y_base, du_base, ddt_base, dz_base, part_row, part_lane,
                part_mask, offs_n2, s_C_l, s_z_l, s_do_l, s_y_l, s_du_l, s_ddt_l, s_dz_l, out_scale, mask_n,
                HAS_D, HAS_Z, SOFTPLUS, DZ, LANE_REDUCE, BLOCK_N,
            )  # fmt: skip

    # Offsets recomputed here (a runtime-1 factor keeps the compiler from reusing, and so holding through the
    # loops, those of the prologue).
    pid_end = tl.program_id(0) * scratch_stride
    grp_end = pid_end % n_groups
    dim_per_group = dim // n_groups
    offs_end = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D) * scratch_stride
    end_d = (pid_end // n_groups).to(tl.int64) * dim + grp_end * dim_per_group + offs_end
    end_mask = offs_end < dim_per_group
    _store_rows(dA_ptr + end_d * N_STATE, 1, dA, end_mask, states, N_STATE)
    tl.store(dD_ptr + end_d, dD_acc, mask=end_mask)
    tl.store(dbias_ptr + end_d, dbias_acc, mask=end_mask)


@triton.jit(do_not_specialize=(*_SIZES, "n_dblocks", "scratch_stride"))
def _scan_bwd_kernel(
    u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr,
    u1_ptr, dt1_ptr, A1_ptr, B1_ptr, C1_ptr, D1_ptr, bias1_ptr,
    z_ptr, dout_ptr, y_ptr, dlast_ptr, chunk_ptr,
    du0_ptr, ddt0_ptr, du1_ptr, ddt1_ptr, dz_ptr, part_ptr, scratch_ptr, dA_ptr, dD_ptr, dbias_ptr,
    batch, length, dim_per_group, n_groups, n_chunks, n_dblocks, out_scale, scratch_stride,
    s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
    s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
    s1_u_b, s1_u_d, s1_u_l, s1_dt_b, s1_dt_d, s1_dt_l, s1_A_d, s1_A_n,
    s1_B_b, s1_B_g, s1_B_n, s1_B_l, s1_C_b, s1_C_g, s1_C_n, s1_C_l,
    s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l, s_y_b, s_y_d, s_y_l,
    s0_du_b, s0_du_d, s0_du_l, s0_ddt_b, s0_ddt_d, s0_ddt_l,
    s1_du_b, s1_du_d, s1_du_l, s1_ddt_b, s1_ddt_d, s1_ddt_l,
    s_dz_b, s_dz_d, s_dz_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr, BIDIRECTIONAL: tl.constexpr, HAS_DLAST: tl.constexpr, LANE_REDUCE: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    LOG2_N: tl.constexpr,
):  # fmt: skip
    # Grid (batch * G, channel blocks, directions): a bidirectional call runs each direction in its own programs
    # (program_id(2) 0: the forward scan, 1: the backward scan), so a program holds one direction's values only.
    pid_bg = tl.program_id(0)
    b = (pid_bg // n_groups).to(tl.int64)
    grp = pid_bg % n_groups
    pid_d = tl.program_id(1)
    pid_dir = tl.program_id(2)
    offs_j = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_j < dim_per_group
    offs_d = (grp * dim_per_group + offs_j).to(tl.int64)
    dim = n_groups * dim_per_group
    program = (pid_dir.to(tl.int64) * tl.num_programs(0) + pid_bg) * tl.num_programs(1) + pid_d
    scratch = scratch_ptr + program * (BLOCK_L // SUB) * BLOCK_N * BLOCK_D
    if not BIDIRECTIONAL:
        _bwd_direction(
            u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr, z_ptr, dout_ptr, dlast_ptr, chunk_ptr,
            y_ptr, du0_ptr, ddt0_ptr, dz_ptr, part_ptr, scratch, dA_ptr, dD_ptr, dbias_ptr,
            b, grp, offs_j, offs_d, mask_d, batch, length, dim, n_groups, n_chunks, n_dblocks, out_scale,
            scratch_stride,
            s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
            s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
            s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l, s_y_b, s_y_d, s_y_l,
            s0_du_b, s0_du_d, s0_du_l, s0_ddt_b, s0_ddt_d, s0_ddt_l, s_dz_b, s_dz_d, s_dz_l,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, REVERSE, HAS_DLAST, 1, LANE_REDUCE,
            N_STATE, BLOCK_L, BLOCK_D, BLOCK_N, LOG2_N,
        )  # fmt: skip
    elif pid_dir == 0:
        # dz from the ungated y of both directions (saved by the forward), in these programs only.
        _bwd_direction(
            u0_ptr, dt0_ptr, A0_ptr, B0_ptr, C0_ptr, D0_ptr, bias0_ptr, z_ptr, dout_ptr, dlast_ptr, chunk_ptr,
            y_ptr, du0_ptr, ddt0_ptr, dz_ptr, part_ptr, scratch, dA_ptr, dD_ptr, dbias_ptr,
            b, grp, offs_j, offs_d, mask_d, batch, length, dim, n_groups, n_chunks, n_dblocks, out_scale,
            scratch_stride,
            s0_u_b, s0_u_d, s0_u_l, s0_dt_b, s0_dt_d, s0_dt_l, s0_A_d, s0_A_n,
            s0_B_b, s0_B_g, s0_B_n, s0_B_l, s0_C_b, s0_C_g, s0_C_n, s0_C_l,
            s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l, s_y_b, s_y_d, s_y_l,
            s0_du_b, s0_du_d, s0_du_l, s0_ddt_b, s0_ddt_d, s0_ddt_l, s_dz_b, s_dz_d, s_dz_l,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, False, HAS_DLAST, 2, LANE_REDUCE,
            N_STATE, BLOCK_L, BLOCK_D, BLOCK_N, LOG2_N,
        )  # fmt: skip
    else:
        n_saved = tl.maximum(n_chunks - 1, 1)
        _bwd_direction(
            u1_ptr, dt1_ptr, A1_ptr, B1_ptr, C1_ptr, D1_ptr, bias1_ptr, z_ptr, dout_ptr,
            dlast_ptr + batch * dim * N_STATE, chunk_ptr + batch * n_saved * N_STATE * dim,
            y_ptr, du1_ptr, ddt1_ptr, dz_ptr, part_ptr + n_dblocks * batch * n_groups * length * (2 * BLOCK_N),
            scratch, dA_ptr + batch * dim * N_STATE, dD_ptr + batch * dim, dbias_ptr + batch * dim,
            b, grp, offs_j, offs_d, mask_d, batch, length, dim, n_groups, n_chunks, n_dblocks, out_scale,
            scratch_stride, s1_u_b, s1_u_d, s1_u_l, s1_dt_b, s1_dt_d, s1_dt_l, s1_A_d, s1_A_n,
            s1_B_b, s1_B_g, s1_B_n, s1_B_l, s1_C_b, s1_C_g, s1_C_n, s1_C_l,
            s_z_b, s_z_d, s_z_l, s_do_b, s_do_d, s_do_l, s_y_b, s_y_d, s_y_l,
            s1_du_b, s1_du_d, s1_du_l, s1_ddt_b, s1_ddt_d, s1_ddt_l, s_dz_b, s_dz_d, s_dz_l,
            HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, True, HAS_DLAST, 0, LANE_REDUCE,
            N_STATE, BLOCK_L, BLOCK_D, BLOCK_N, LOG2_N,
        )  # fmt: skip


def _lane_reduce(block_d: int, num_warps: int, block_n: int) -> bool:
    """dB / dC by lane shuffles: one channel per lane (the tile is exactly the program's warps), 2N <= 32 values."""
    return block_d == WARP * num_warps and block_n <= 16


def _backward(
    first: Inputs,
    second: Inputs | None,
    z: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    chunks: Tensor,
    y_ungated: Tensor | None,
    dout: Tensor,
    dlast: Tensor | None,
    out_scale: float,
    config: ScanConfig,
) -> list[ScanGrads]:
    """Launch the backward kernel. Returns the gradients of each direction in the inputs' dtypes; dz (z is shared) in
    the first direction's. ``y_ungated``: the forward's y_fwd + y_bwd of a
    bidirectional call with z (dz needs both directions' y; each program runs one direction)."""
    shape = _check_pair(first, second, z) if second is not None else check_inputs(*first[:6], z, first[6])
    n_dirs = 2 if second is not None else 1
    if second is not None and z is not None and (y_ungated is None or y_ungated.shape != z.shape):
        raise ValueError("scan backward (bidirectional, with z): y_ungated of z's shape, saved by the forward, needed")
    p0, s0, _ = _direction(first, forward=True)
    p1, s1, _ = _direction(second, forward=True) if second is not None else (p0, s0, None)
    u = first[0]
    n_chunks = _n_chunks(shape, config)
    if chunks.shape != (n_dirs, shape.batch, max(n_chunks - 1, 1), shape.d_state, shape.dim):
        raise ValueError(f"scan backward: chunk states of shape {tuple(chunks.shape)} do not match block_l")
    grid = (*_grid(shape, config.block_d), n_dirs)  # one direction per program
    block_n = triton.next_power_of_2(shape.d_state)
    lane_reduce = _lane_reduce(config.block_d, config.num_warps_bwd, block_n)
    n_dblocks = triton.cdiv(shape.dim_per_group, WARP) if lane_reduce else grid[1]
    du = [_like(d[0]) for d in (first, second) if d is not None]
    ddelta = [_like(d[1]) for d in (first, second) if d is not None]
    dz = _like(z) if z is not None else None
    # Deterministic reductions: per-warp (or per-program) partials of dB / dC, per-batch partials of dA / dD / dbias.
    part = new_output((n_dirs, n_dblocks, shape.batch, shape.groups, shape.length, 2 * block_n), torch.float32,
                      u.device)  # fmt: skip
    scratch = torch.empty(math.prod(grid) * config.block_l * block_n * config.block_d // SUB.value, device=u.device)
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
        y_ungated if y_ungated is not None else u,
        dlast_all if dlast_all is not None else dA_part,
        chunks,
        du[0],
        ddelta[0],
        du1,
        ddt1,
        dz if dz is not None else du[0],
        part,
        scratch,
        dA_part,
        dD_part,
        dbias_part,
        shape.batch,
        shape.length,
        shape.dim_per_group,
        shape.groups,
        n_chunks,
        n_dblocks,
        float(out_scale),
        1,  # scratch_stride
        *s0,
        *s1,
        *(z.stride() if z is not None else (0, 0, 0)),
        *dout.stride(),
        *(y_ungated.stride() if y_ungated is not None else (0, 0, 0)),
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
        LANE_REDUCE=lane_reduce,
        N_STATE=shape.d_state,
        BLOCK_L=config.block_l,
        BLOCK_D=config.block_d,
        BLOCK_N=block_n,
        LOG2_N=block_n.bit_length() - 1,
        num_warps=config.num_warps_bwd,
        maxnreg=255,  # an explicit bound keeps ptxas from spilling for occupancy (see triton_scan_fwd)
    )
    results = []
    n = shape.d_state
    for i, inputs in enumerate(d for d in (first, second) if d is not None):
        _, _, A, B, C, D, bias = inputs
        # Fixed-order sums over the channel blocks and the batch (torch reductions do not use atomics).
        sums = part[i].sum(0) if n_dblocks > 1 else part[i, 0]  # (batch, G, L, 2 * BLOCK_N)
        dB = sums[..., :n].transpose(2, 3)
        dC = sums[..., block_n : block_n + n].transpose(2, 3)
        results.append(
            ScanGrads(
                u=du[i],
                delta=ddelta[i],
                A=dA_part[i].sum(0).to(A.dtype),
                B=dB.reshape(B.shape).to(B.dtype),
                C=dC.reshape(C.shape).to(C.dtype),
                D=dD_part[i].sum(0).to(D.dtype) if D is not None else None,
                z=dz if i == 0 else None,
                delta_bias=dbias_part[i].sum(0).to(bias.dtype) if bias is not None else None,
            )
        )
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
) -> ScanGrads:
    """One direction: the gradients of u, delta, A, B, C, D, z, delta_bias in the inputs' dtypes."""
    dlast4 = dlast.unsqueeze(0) if dlast is not None else None
    (grads,) = _backward(
        (u, delta, A, B, C, D, delta_bias), None, z, delta_softplus, reverse, chunks, None, dout, dlast4, 1.0, config
    )
    return grads


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
    y_ungated: Tensor | None,
    dout: Tensor,
    dlast: Tensor | None,
    out_scale: float = 1.0,
    config: ScanConfig = DEFAULT_CONFIG,
) -> tuple[ScanGrads, ScanGrads]:
    """Gradients of both directions, (forward, backward); dz (z is shared) in the forward direction's, None in the
    other.

    ``chunks`` and ``y_ungated`` are what :func:`scan_forward_bidirectional` saved (y_ungated: None without z)."""
    first = (u[0], delta[0], A[0], B[0], C[0], D[0], delta_bias[0])
    second = (u[1], delta[1], A[1], B[1], C[1], D[1], delta_bias[1])
    forward_grads, backward_grads = _backward(
        first, second, z, delta_softplus, False, chunks, y_ungated, dout, dlast, out_scale, config
    )
    return forward_grads, backward_grads
