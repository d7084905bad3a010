"""Per-position device functions of the selective-scan backward (used by triton_scan_bwd.py).

``_load_step`` reads one position's inputs; ``_grad_step`` is one step of the reverse walk (gradients of one
position, stores and the carry to the position before); ``_warp_sums`` sums the dB / dC contributions over the 32
channels of a warp by recursive halving with lane shuffles: compiled, one packed PTX block per thread
(``_warp_sums_ptx``); interpreted, a model of it with tl.gather.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_common import _INTERPRETING, _LN2, _exp2_ftz, _sigmoid, _softplus


def _warp_sums_ptx(n: int) -> str:
    """PTX summing dB and dC (n values each per lane, n <= 16) over the 32 lanes of a warp by recursive halving.

    Operands: $0..$(n-1) outputs (each the lane's result), $n..$(2n-1) the lane's dB values, $2n..$(3n-1) its dC
    values. Step 16 pairs dB[i] with dC[i]; each later step (mask m) pairs value i with i + half while more than
    one value is left, then adds the partner's plainly. Lanes with bit m set keep the upper half and send the
    lower. Lane l ends with (l & 16 ? dC : dB)[(l & 15) >> (4 - log2 n)] summed over the warp."""
    lines = ["{", ".reg .pred p;", ".reg .b32 lane, bit, k, s, r;", f".reg .b32 x<{n}>;", "mov.u32 lane, %laneid;"]

    def step(mask: int, keep_hi: str, keep_lo: str, dst: str) -> None:
        lines.extend(
            [
                f"selp.b32 k, {keep_hi}, {keep_lo}, p;",
                f"selp.b32 s, {keep_lo}, {keep_hi}, p;",
                f"shfl.sync.bfly.b32 r, s, {mask}, 0x1f, -1;",
                f"add.f32 {dst}, k, r;",
            ]
        )

    lines += ["and.b32 bit, lane, 16;", "setp.ne.b32 p, bit, 0;"]
    for i in range(n):
        step(16, f"${2 * n + i}", f"${n + i}", f"x{i}")
    left = n
    for mask in (8, 4, 2, 1):
        lines += [f"and.b32 bit, lane, {mask};", "setp.ne.b32 p, bit, 0;"]
        if left > 1:
            half = left // 2
            for i in range(half):
                step(mask, f"x{i + half}", f"x{i}", f"x{i}")
            left = half
        else:
            lines += [f"shfl.sync.bfly.b32 r, x0, {mask}, 0x1f, -1;", "add.f32 x0, x0, r;"]
    lines += [f"mov.b32 ${i}, x0;" for i in range(n)]
    return "\n".join(lines + ["}"])


_WARP_SUMS_PTX = {n: tl.constexpr(_warp_sums_ptx(n)) for n in (1, 2, 4, 8, 16)}
_PTX_1, _PTX_2, _PTX_4, _PTX_8, _PTX_16 = (_WARP_SUMS_PTX[n] for n in (1, 2, 4, 8, 16))
_CONSTRAINTS = {n: tl.constexpr(",".join(["=r"] * n + ["r"] * (2 * n))) for n in (1, 2, 4, 8, 16)}
_CON_1, _CON_2, _CON_4, _CON_8, _CON_16 = (_CONSTRAINTS[n] for n in (1, 2, 4, 8, 16))


@triton.jit
def _warp_sums_asm(dB, dC, BLOCK_N: tl.constexpr):
    # One asm instance per thread takes all BLOCK_N values of its channel (pack = BLOCK_N: the thread's registers of
    # a (BLOCK_N, BLOCK_D) tile, rows in order; the compile gate checks that layout).
    if BLOCK_N == 16:
        out = tl.inline_asm_elementwise(_PTX_16, _CON_16, [dB, dC], dtype=tl.float32, is_pure=True, pack=16)
    elif BLOCK_N == 8:
        out = tl.inline_asm_elementwise(_PTX_8, _CON_8, [dB, dC], dtype=tl.float32, is_pure=True, pack=8)
    elif BLOCK_N == 4:
        out = tl.inline_asm_elementwise(_PTX_4, _CON_4, [dB, dC], dtype=tl.float32, is_pure=True, pack=4)
    elif BLOCK_N == 2:
        out = tl.inline_asm_elementwise(_PTX_2, _CON_2, [dB, dC], dtype=tl.float32, is_pure=True, pack=2)
    else:
        out = tl.inline_asm_elementwise(_PTX_1, _CON_1, [dB, dC], dtype=tl.float32, is_pure=True, pack=1)
    return out


@triton.jit
def _shfl_xor(x, lane, MASK: tl.constexpr):
    """The interpreter's lane exchange: x (V, BLOCK_D), channel d on lane d % 32, gets channel d ^ MASK's values."""
    return tl.gather(x, tl.broadcast_to((lane ^ MASK)[None, :], x.shape), axis=1)


@triton.jit
def _halve(x, lane, MASK: tl.constexpr):
    """Interpreter model of one recursive-halving step over (V, BLOCK_D) (see _warp_sums_ptx): (V/2, BLOCK_D)."""
    V: tl.constexpr = x.shape[0]
    D: tl.constexpr = x.shape[1]
    if V == 1:
        return x + _shfl_xor(x, lane, MASK)
    else:
        lo, hi = tl.split(tl.permute(tl.reshape(x, (2, V // 2, D)), (1, 2, 0)))
        upper = ((lane & MASK) != 0)[None, :]
        return tl.where(upper, hi, lo) + _shfl_xor(tl.where(upper, lo, hi), lane, MASK)


@triton.jit
def _warp_sums(dB, dC, lane, BLOCK_N: tl.constexpr):
    """Sums over the 32 channels of each warp of dB, dC (BLOCK_N, BLOCK_D): a (BLOCK_N, BLOCK_D) tile whose row 0
    holds, on lane l, (l & 16 ? dC : dB)[(l & 15) >> (4 - log2 BLOCK_N)] (compiled: every row holds it)."""
    if _INTERPRETING:
        upper = ((lane & 16) != 0)[None, :]
        s = tl.where(upper, dC, dB) + _shfl_xor(tl.where(upper, dB, dC), lane, 16)
        s = _halve(s, lane, 8)
        s = _halve(s, lane, 4)
        s = _halve(s, lane, 2)
        s = _halve(s, lane, 1)
        return tl.broadcast_to(s, dB.shape)
    else:
        return _warp_sums_asm(dB, dC, BLOCK_N)


@triton.jit
def _load_step(
    pos, length, mask_d, u_base, dt_base, B_base, s_u_l, s_dt_l, s_B_l, bias, mask_n,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
):  # fmt: skip
    """Sequence position, channel mask, u, raw delta (+ bias), delta and the B row of scan position ``pos``.
    Past the end the last position is read again with delta masked to 0 (decay 1, input 0: the state passes)."""
    valid = pos < length
    pos = tl.minimum(pos, length - 1)
    if REVERSE:
        t = (length - 1 - pos).to(tl.int64)
    else:
        t = pos.to(tl.int64)
    mask = mask_d & valid
    u = tl.load(u_base + t * s_u_l, mask=mask, other=0.0).to(tl.float32)
    raw = tl.load(dt_base + t * s_dt_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += bias
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    dt = tl.where(mask, dt, 0.0)
    B_t = tl.load(B_base + t * s_B_l, mask=mask_n, other=0.0)
    return t, valid, mask, u, raw, dt, B_t


@triton.jit
def _grad_step(
    h, v, t, valid, mask, u, raw, dt, A2, Dv, lane, dA, dD_acc, dbias_acc,
    B_base, s_B_l, C_base, z_base, do_base, y_base, du_base, ddt_base, dz_base, part_row, part_lane, part_mask,
    offs_n2, s_C_l, s_z_l, s_do_l, s_y_l, s_du_l, s_ddt_l, s_dz_l, out_scale, mask_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, DZ: tl.constexpr,
    LANE_REDUCE: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One reverse step at sequence position t with the state h_t: stores du, ddelta, the dB / dC partials and
    (DZ) dz of t; returns the carry v_{t-1} = a_t g_t and the accumulators.

    DZ (with HAS_Z): 0 writes no dz (the second direction of a bidirectional call); 1 writes dz from this direction's
    y = sum_n C h + D u (one direction); 2 from the ungated y of both directions that the forward saved (``y_base``;
    the first direction of a bidirectional call: no program needs the other direction's y)."""
    dout = tl.load(do_base + t * s_do_l, mask=mask, other=0.0).to(tl.float32) * out_scale
    if HAS_Z:
        zv = tl.load(z_base + t * s_z_l, mask=mask, other=0.0).to(tl.float32)
        sig = _sigmoid(zv)
        dy = dout * zv * sig
    else:
        dy = dout
    C_t = tl.load(C_base + t * s_C_l, mask=mask_n, other=0.0)
    B_t = tl.load(B_base + t * s_B_l, mask=mask_n, other=0.0)  # again (L1): cheaper than 16 registers per position
    dtu = dt * u
    g = C_t[:, None] * dy[None, :] + v
    q = g * (h - dtu[None, :] * B_t[:, None])  # gradient of the log-decay delta * A
    dA += q * dt[None, :]
    ddt = tl.sum(q * A2, axis=0) * _LN2 + u * tl.sum(g * B_t[:, None], axis=0)
    du = dt * tl.sum(g * B_t[:, None], axis=0)
    dB_c = g * dtu[None, :]
    dC_c = h * dy[None, :]
    if LANE_REDUCE:
        sums = _warp_sums(dB_c, dC_c, lane, BLOCK_N)
        # Row 0 as a vector: an integer pick of the bits (free, see _store_rows); a tile store would make Triton 3.6
        # convert the tile's layout through shared memory.
        first = tl.sum(tl.where((offs_n2 == 0)[:, None], sums.to(tl.int32, bitcast=True), 0), axis=0)
        tl.store(part_row + t * (2 * BLOCK_N) + part_lane, first.to(tl.float32, bitcast=True), mask=part_mask & valid)
    else:  # narrower than a warp: sums over the program's channels
        tl.store(part_row + t * (2 * BLOCK_N) + offs_n2, tl.sum(dB_c, axis=1), mask=valid)
        tl.store(part_row + t * (2 * BLOCK_N) + BLOCK_N + offs_n2, tl.sum(dC_c, axis=1), mask=valid)
    v = _exp2_ftz(dt[None, :] * A2) * g
    if HAS_D:
        du += dy * Dv
        dD_acc += dy * u
    if HAS_Z and DZ != 0:
        if DZ == 1:
            y = tl.sum(h * C_t[:, None], axis=0)
            if HAS_D:
                y += u * Dv
        else:
            y = tl.load(y_base + t * s_y_l, mask=mask, other=0.0).to(tl.float32)
        dz = dout * y * sig * (1.0 + zv * (1.0 - sig))
        tl.store(dz_base + t * s_dz_l, dz.to(dz_base.dtype.element_ty), mask=mask)
    if SOFTPLUS:
        ddt = ddt * _sigmoid(raw)
    dbias_acc += tl.where(mask, ddt, 0.0)
    tl.store(du_base + t * s_du_l, du.to(du_base.dtype.element_ty), mask=mask)
    tl.store(ddt_base + t * s_ddt_l, ddt.to(ddt_base.dtype.element_ty), mask=mask)
    return v, dA, dD_acc, dbias_acc
