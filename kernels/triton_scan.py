"""Fused selective scan in Triton: forward and backward kernels, their launchers, the autograd function.

One program owns one batch element and BLOCK_D channels of one B/C group, all N states, and walks the sequence in
chunks of BLOCK_L positions. A chunk is a (BLOCK_L, BLOCK_D, BLOCK_N) register tile; the recurrence inside it is an
associative scan over axis 0 of the affine maps h -> decay * h + x, and the state carried between chunks is one
(BLOCK_D, BLOCK_N) tile. The (batch, dim, L, N) states never reach memory: the forward writes only the state at each
chunk start, (batch, dim, n_chunks, N) fp32, and the backward recomputes a chunk's states from it.

Backward, per chunk, last chunk first. With g_p = dLoss/dh_p (p = scan position):

    g_p = C_p dy_p + decay_{p+1} g_{p+1}        (a scan in the opposite direction)
    a_p * h_{p-1} = h_p - x_p                   (the identity that gives the decay gradient without h_{p-1})
    q_p = g_p * (h_p - x_p)                     gradient of the log-decay delta_p * A
    dA = sum_p q_p delta_p, ddelta_p = sum_n (q_p A + g_p B_p u_p), du_p = sum_n g_p B_p delta_p + D dy_p,
    dB_p = sum_d g_p delta_p u_p, dC_p = sum_d h_p dy_p   (summed over channels with atomics, fp32)

The opposite-direction scan runs as a forward scan over the chunk flipped in registers (``tl.gather``), not with
``tl.associative_scan(reverse=True)``: Triton's reverse scan has had wrong results for non-commutative combine
functions (triton-lang/triton#4362), and the affine combine is non-commutative.

``reverse=True`` maps scan position p to sequence position L-1-p in every load and store, so the backward half of a
bidirectional block reads its inputs in place. All strides are passed to the kernels; nothing is made contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from triton.runtime.interpreter import InterpretedFunction

from ._common import ScanShape, check_inputs, grouped, new_output

# exp(x) = exp2(x * log2(e)): exp2 is the hardware instruction.
_LOG2E = tl.constexpr(1.4426950408889634)


@dataclass(frozen=True)
class ScanConfig:
    """Tile sizes and warps. The backward recomputes the forward's chunks, so both use the same BLOCK_L.

    Defaults are a starting point chosen without a GPU at hand; tune with scripts/bench_scan.py --block-l / --block-d
    / --num-warps on the target card.
    """

    block_l: int = 32
    block_d: int = 8  # channels per program: the B/C gradients are summed over them before the atomics
    num_warps: int = 8  # a 32 x 8 x 16 fp32 tile is 16 registers per thread per live tile at 8 warps

    def __post_init__(self) -> None:
        for name in ("block_l", "block_d"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"ScanConfig.{name} must be a power of two, got {value}")


DEFAULT_CONFIG = ScanConfig()


@triton.jit
def _affine_combine(a_left, b_left, a_right, b_right):
    # (left then right) composition of h -> a h + b: the earlier map is the left operand.
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _softplus(x):
    # torch.nn.functional.softplus (beta 1, threshold 20). log1p(e) = log(u) * e / (u - 1) with u = 1 + e: u - 1
    # is exact, so the rounding of u cancels (Goldberg); where u rounds to 1, log1p(e) = e.
    e = tl.exp(tl.minimum(x, 20.0))
    u = 1.0 + e
    rounds_to_one = u == 1.0
    log1p_e = tl.where(rounds_to_one, e, tl.log(u) * (e / tl.where(rounds_to_one, 1.0, u - 1.0)))
    return tl.where(x > 20.0, x, log1p_e)


@triton.jit
def _scan_fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    last_ptr,
    chunk_ptr,
    length,
    dim_per_group,
    n_groups,
    d_state,
    n_chunks,
    s_u_b,
    s_u_d,
    s_u_l,
    s_dt_b,
    s_dt_d,
    s_dt_l,
    s_A_d,
    s_A_n,
    s_B_b,
    s_B_g,
    s_B_n,
    s_B_l,
    s_C_b,
    s_C_g,
    s_C_n,
    s_C_l,
    s_z_b,
    s_z_d,
    s_z_l,
    s_o_b,
    s_o_d,
    s_o_l,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr,
    SAVE_CHUNKS: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_bg = tl.program_id(0)
    b = (pid_bg // n_groups).to(tl.int64)
    grp = pid_bg % n_groups
    offs_j = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # channel inside the group
    mask_d = offs_j < dim_per_group
    offs_d = (grp * dim_per_group + offs_j).to(tl.int64)  # (BLOCK_D,) channel
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < d_state
    rows = tl.arange(0, BLOCK_L)
    dim = n_groups * dim_per_group

    mask_dn = mask_d[:, None] & mask_n[None, :]
    # A in log2 units, so a decay is one exp2: exp(delta * A) = exp2(delta * A * log2(e)). Padded lanes get A = 0,
    # decay 1 and input 0, so they stay 0 and add nothing.
    A2 = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_dn, other=0.0)
    A2 = A2.to(tl.float32) * _LOG2E  # (BLOCK_D, BLOCK_N)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    u_base = u_ptr + b * s_u_b + offs_d[None, :] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + offs_d[None, :] * s_dt_d
    z_base = z_ptr + b * s_z_b + offs_d[None, :] * s_z_d
    o_base = out_ptr + b * s_o_b + offs_d[None, :] * s_o_d
    B_base = B_ptr + b * s_B_b + grp * s_B_g + offs_n[None, :] * s_B_n
    C_base = C_ptr + b * s_C_b + grp * s_C_g + offs_n[None, :] * s_C_n
    # chunk states: contiguous (batch, dim, n_chunks, N)
    state_base = ((b * dim + offs_d[:, None]) * n_chunks) * d_state + offs_n[None, :]

    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(0, n_chunks):
        if SAVE_CHUNKS:
            tl.store(chunk_ptr + state_base + c * d_state, h, mask=mask_dn)
        pos = c * BLOCK_L + rows  # scan positions
        mask_l = pos < length
        if REVERSE:
            t = length - 1 - pos
        else:
            t = pos
        t = t.to(tl.int64)  # t * stride can pass 2**31 for long, strided sequences
        mask_ld = mask_l[:, None] & mask_d[None, :]
        mask_ln = mask_l[:, None] & mask_n[None, :]

        u = tl.load(u_base + t[:, None] * s_u_l, mask=mask_ld, other=0.0).to(tl.float32)  # (BLOCK_L, BLOCK_D)
        dt = tl.load(dt_base + t[:, None] * s_dt_l, mask=mask_ld, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mask_ld, dt, 0.0)  # padded positions: decay 1, input 0 (carry passes unchanged)
        Bt = tl.load(B_base + t[:, None] * s_B_l, mask=mask_ln, other=0.0).to(tl.float32)  # (BLOCK_L, BLOCK_N)
        Ct = tl.load(C_base + t[:, None] * s_C_l, mask=mask_ln, other=0.0).to(tl.float32)

        decay = tl.exp2(dt[:, :, None] * A2[None, :, :])  # (BLOCK_L, BLOCK_D, BLOCK_N)
        x = (dt * u)[:, :, None] * Bt[:, None, :]
        prod, acc = tl.associative_scan((decay, x), 0, _affine_combine)
        hs = acc + prod * h[None, :, :]  # states at every position of the chunk

        y = tl.sum(hs * Ct[:, None, :], axis=2)  # (BLOCK_L, BLOCK_D)
        if HAS_D:
            y += u * Dv[None, :]
        if HAS_Z:
            zv = tl.load(z_base + t[:, None] * s_z_l, mask=mask_ld, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(o_base + t[:, None] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask_ld)
        h = tl.sum(tl.where(rows[:, None, None] == BLOCK_L - 1, hs, 0.0), axis=0)

    last_offs = (b * dim + offs_d[:, None]) * d_state + offs_n[None, :]
    tl.store(last_ptr + last_offs, h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    dout_ptr,
    dlast_ptr,
    chunk_ptr,
    du_ptr,
    ddelta_ptr,
    dz_ptr,
    dB_ptr,
    dC_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    length,
    dim_per_group,
    n_groups,
    d_state,
    n_chunks,
    s_u_b,
    s_u_d,
    s_u_l,
    s_dt_b,
    s_dt_d,
    s_dt_l,
    s_A_d,
    s_A_n,
    s_B_b,
    s_B_g,
    s_B_n,
    s_B_l,
    s_C_b,
    s_C_g,
    s_C_n,
    s_C_l,
    s_z_b,
    s_z_d,
    s_z_l,
    s_do_b,
    s_do_d,
    s_do_l,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_bg = tl.program_id(0)
    b = (pid_bg // n_groups).to(tl.int64)
    grp = pid_bg % n_groups
    offs_j = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_j < dim_per_group
    offs_d = (grp * dim_per_group + offs_j).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < d_state
    rows = tl.arange(0, BLOCK_L)
    dim = n_groups * dim_per_group

    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * _LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    u_base = u_ptr + b * s_u_b + offs_d[None, :] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + offs_d[None, :] * s_dt_d
    z_base = z_ptr + b * s_z_b + offs_d[None, :] * s_z_d
    do_base = dout_ptr + b * s_do_b + offs_d[None, :] * s_do_d
    B_base = B_ptr + b * s_B_b + grp * s_B_g + offs_n[None, :] * s_B_n
    C_base = C_ptr + b * s_C_b + grp * s_C_g + offs_n[None, :] * s_C_n
    # Gradients of u, delta, z: contiguous (batch, dim, L). dB, dC: contiguous fp32 (batch, G, N, L).
    grad_base = (b * dim + offs_d[None, :]) * length
    dBC_base = ((b * n_groups + grp) * d_state + offs_n[None, :]) * length
    state_base = ((b * dim + offs_d[:, None]) * n_chunks) * d_state + offs_n[None, :]
    dn_offs = (b * dim + offs_d[:, None]) * d_state + offs_n[None, :]

    # carry = decay_{p+1} * g_{p+1} flowing into the chunk's last position from the chunk after it; it starts as
    # the gradient of the last state (the scan's final state is h at the last position).
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + dn_offs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    # Flipping the chunk: flipped row r holds row BLOCK_L-1-r; its recurrence multiplier is the decay one position
    # later, row BLOCK_L-r (flipped row 0 takes the carry instead, multiplier 1).
    tile = (BLOCK_L, BLOCK_D, BLOCK_N)
    flip_idx = tl.broadcast_to((BLOCK_L - 1 - rows)[:, None, None], tile)
    next_idx = tl.broadcast_to(tl.minimum(BLOCK_L - rows, BLOCK_L - 1)[:, None, None], tile)
    first_row = rows[:, None, None] == 0

    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        pos = c * BLOCK_L + rows
        mask_l = pos < length
        if REVERSE:
            t = length - 1 - pos
        else:
            t = pos
        t = t.to(tl.int64)  # t * stride can pass 2**31 for long, strided sequences
        mask_ld = mask_l[:, None] & mask_d[None, :]
        mask_ln = mask_l[:, None] & mask_n[None, :]

        # Recompute the chunk's forward from its saved starting state.
        h0 = tl.load(chunk_ptr + state_base + c * d_state, mask=mask_dn, other=0.0)
        u = tl.load(u_base + t[:, None] * s_u_l, mask=mask_ld, other=0.0).to(tl.float32)
        raw = tl.load(dt_base + t[:, None] * s_dt_l, mask=mask_ld, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(raw)
        else:
            dt = raw
        dt = tl.where(mask_ld, dt, 0.0)
        Bt = tl.load(B_base + t[:, None] * s_B_l, mask=mask_ln, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[:, None] * s_C_l, mask=mask_ln, other=0.0).to(tl.float32)
        decay = tl.exp2(dt[:, :, None] * A2[None, :, :])
        dtu = dt * u
        x = dtu[:, :, None] * Bt[:, None, :]
        prod, acc = tl.associative_scan((decay, x), 0, _affine_combine)
        hs = acc + prod * h0[None, :, :]

        dout = tl.load(do_base + t[:, None] * s_do_l, mask=mask_ld, other=0.0).to(tl.float32)
        if HAS_Z:
            y = tl.sum(hs * Ct[:, None, :], axis=2)
            if HAS_D:
                y += u * Dv[None, :]
            zv = tl.load(z_base + t[:, None] * s_z_l, mask=mask_ld, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zv)
            dz = dout * y * sig * (1.0 + zv * (1.0 - sig))
            tl.store(dz_ptr + grad_base + t[:, None], dz.to(dz_ptr.dtype.element_ty), mask=mask_ld)
            dy = dout * zv * sig
        else:
            dy = dout
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=0)
            du = dy * Dv[None, :]
        else:
            du = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)

        # g_p = C_p dy_p + decay_{p+1} g_{p+1}, as a forward scan over the flipped chunk.
        c_in = dy[:, :, None] * Ct[:, None, :]
        mult = tl.where(first_row, 1.0, tl.gather(decay, next_idx, 0))
        g_prod, g_acc = tl.associative_scan((mult, tl.gather(c_in, flip_idx, 0)), 0, _affine_combine)
        g = tl.gather(g_acc + g_prod * carry[None, :, :], flip_idx, 0)
        carry = tl.sum(tl.where(first_row, decay * g, 0.0), axis=0)

        q = g * (hs - x)  # gradient of the log-decay delta * A
        dA_acc += tl.sum(q * dt[:, :, None], axis=0)
        gB = tl.sum(g * Bt[:, None, :], axis=2)  # (BLOCK_L, BLOCK_D)
        ddt = tl.sum(q * A[None, :, :], axis=2) + gB * u
        du += gB * dt
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        if HAS_BIAS:
            dbias_acc += tl.sum(tl.where(mask_ld, ddt, 0.0), axis=0)
        tl.store(du_ptr + grad_base + t[:, None], du.to(du_ptr.dtype.element_ty), mask=mask_ld)
        tl.store(ddelta_ptr + grad_base + t[:, None], ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_ld)

        # Channel sums for the shared B and C: this program's channels first, then atomics across programs.
        dB = tl.sum(g * dtu[:, :, None], axis=1)  # (BLOCK_L, BLOCK_N)
        dC = tl.sum(hs * dy[:, :, None], axis=1)
        tl.atomic_add(dB_ptr + dBC_base + t[:, None], dB, mask=mask_ln)
        tl.atomic_add(dC_ptr + dBC_base + t[:, None], dC, mask=mask_ln)

    tl.store(dA_ptr + dn_offs, dA_acc, mask=mask_dn)
    tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)


# True when TRITON_INTERPRET=1 was set as this module was imported: the kernels then run on the CPU interpreter.
INTERPRETED = isinstance(_scan_fwd_kernel, InterpretedFunction)


def _strides(x: Tensor | None, ndim: int) -> tuple[int, ...]:
    return tuple(x.stride()) if x is not None else (0,) * ndim


def _grid(shape: ScanShape, config: ScanConfig) -> tuple[int, int]:
    return (shape.batch * shape.groups, triton.cdiv(shape.dim_per_group, config.block_d))


def _block_n(shape: ScanShape) -> int:
    return triton.next_power_of_2(shape.d_state)


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
    """Launch the forward kernel. Returns out (u's dtype), last_state fp32 and, with ``save_chunks``, the
    chunk-start states (batch, dim, n_chunks, N) fp32 that the backward needs."""
    shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
    B4, C4 = grouped(B), grouped(C)
    n_chunks = triton.cdiv(shape.length, config.block_l)
    out = new_output((shape.batch, shape.dim, shape.length), u.dtype, u.device)
    last_state = new_output((shape.batch, shape.dim, shape.d_state), torch.float32, u.device)
    chunks = (
        new_output((shape.batch, shape.dim, n_chunks, shape.d_state), torch.float32, u.device) if save_chunks else None
    )
    _scan_fwd_kernel[_grid(shape, config)](
        u,
        delta,
        A,
        B4,
        C4,
        D if D is not None else u,
        z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        out,
        last_state,
        chunks if chunks is not None else last_state,
        shape.length,
        shape.dim_per_group,
        shape.groups,
        shape.d_state,
        n_chunks,
        *u.stride(),
        *delta.stride(),
        *A.stride(),
        *B4.stride(),
        *C4.stride(),
        *_strides(z, 3),
        *out.stride(),
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        REVERSE=reverse,
        SAVE_CHUNKS=save_chunks,
        BLOCK_L=config.block_l,
        BLOCK_D=config.block_d,
        BLOCK_N=_block_n(shape),
        num_warps=config.num_warps,
    )
    return out, last_state, chunks


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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Launch the backward kernel; returns du, ddelta, dA, dB, dC, dD, dz, ddelta_bias in the inputs' dtypes."""
    shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
    B4, C4 = grouped(B), grouped(C)
    n_chunks = triton.cdiv(shape.length, config.block_l)
    if chunks.shape != (shape.batch, shape.dim, n_chunks, shape.d_state):
        raise ValueError(f"scan_backward: chunk states of shape {tuple(chunks.shape)} do not match block_l")
    bdl = (shape.batch, shape.dim, shape.length)
    du = new_output(bdl, u.dtype, u.device)
    ddelta = new_output(bdl, delta.dtype, u.device)
    dz = new_output(bdl, z.dtype, u.device) if z is not None else None
    # Summed over channel blocks with atomics, so these start at zero.
    dB = torch.zeros(B4.shape, dtype=torch.float32, device=u.device)
    dC = torch.zeros(C4.shape, dtype=torch.float32, device=u.device)
    # Per-batch partial sums, reduced below (deterministic, and small: batch * dim * N).
    dA = new_output((shape.batch, shape.dim, shape.d_state), torch.float32, u.device)
    dD = new_output((shape.batch, shape.dim), torch.float32, u.device)
    dbias = new_output((shape.batch, shape.dim), torch.float32, u.device)
    _scan_bwd_kernel[_grid(shape, config)](
        u,
        delta,
        A,
        B4,
        C4,
        D if D is not None else u,
        z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        dout,
        dlast.float().contiguous() if dlast is not None else dA,  # small (batch, dim, N)
        chunks,
        du,
        ddelta,
        dz if dz is not None else du,
        dB,
        dC,
        dA,
        dD,
        dbias,
        shape.length,
        shape.dim_per_group,
        shape.groups,
        shape.d_state,
        n_chunks,
        *u.stride(),
        *delta.stride(),
        *A.stride(),
        *B4.stride(),
        *C4.stride(),
        *_strides(z, 3),
        *dout.stride(),
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus,
        REVERSE=reverse,
        HAS_DLAST=dlast is not None,
        BLOCK_L=config.block_l,
        BLOCK_D=config.block_d,
        BLOCK_N=_block_n(shape),
        num_warps=config.num_warps,
    )
    return (
        du,
        ddelta,
        dA.sum(0).to(A.dtype),
        dB.view(B.shape).to(B.dtype),
        dC.view(C.shape).to(C.dtype),
        dD.sum(0).to(D.dtype) if D is not None else None,
        dz,
        dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
    )


class SelectiveScanTriton(torch.autograd.Function):
    """Autograd function over the two kernels; outputs (out, last_state)."""

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
