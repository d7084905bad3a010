"""Shared parts of the Triton selective scan: tile configuration, device helpers, launcher helpers.

Directions. ``reverse=True`` maps scan position p to sequence position L-1-p in every load and store, so the
backward half of a bidirectional block reads its inputs in place. A bidirectional call is one launch per pass: the
forward runs both directions in one program, one after the other, the backward one direction per program (see
triton_scan_fwd / triton_scan_bwd). All strides are passed to the kernels; u, delta, z and dout are never copied,
and outputs are allocated in the layout of u (a transposed (batch, L, dim) view stays one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import ScanShape, check_inputs, grouped, new_output

_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)
# Sizes are not specialised (no "== 1" constants, no divisibility-by-16 variants): they only enter masks and loop
# bounds, and this way one compiled kernel serves every sequence length and width instead of one per size class.
_SIZES = ("batch", "length", "dim_per_group", "n_groups", "n_chunks")
# Triton decides at decoration time whether kernels are interpreted; the interpreter cannot run inline PTX.
_INTERPRETING = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


@dataclass(frozen=True)
class ScanConfig:
    """Tile sizes and warps. The backward recomputes the forward's chunks, so both use the same BLOCK_L.

    Defaults were chosen from the compiled code (registers, spills, SASS counts; scripts/bench_scan.py --static);
    tune on the target card with scripts/bench_scan.py --block-l / --block-d / --num-warps.
    """

    block_l: int = 32  # chunk: the forward saves a state every block_l positions (>= 4: the backward's sub-chunk)
    block_d: int = 128  # backward channels per program: 32 x num_warps_bwd puts one channel on each lane
    num_warps: int = 4
    num_warps_bwd: int = 4
    block_d_fwd: int = 128  # forward: one channel per thread (32 x num_warps)

    def __post_init__(self) -> None:
        for name in ("block_l", "block_d", "num_warps", "num_warps_bwd", "block_d_fwd"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"ScanConfig.{name} must be a power of two, got {value}")
        if self.block_l < 4:
            raise ValueError(f"ScanConfig.block_l must be at least 4 (the backward's sub-chunk), got {self.block_l}")


DEFAULT_CONFIG = ScanConfig()


@triton.jit
def _exp2_ftz(x):
    # One MUFU.EX2: tl.exp2 lowers to the non-flushing ex2.approx.f32, which adds a range test and two multiplies
    # around it to produce subnormal results; a decay below 2**-126 is as good as 0.
    if _INTERPRETING:
        return tl.exp2(x)
    else:
        return tl.inline_asm_elementwise(
            "ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def _rcp(x):
    # One MUFU.RCP (rcp.approx.ftz, about 1 ulp): the IEEE division adds a range check and a Newton step.
    if _INTERPRETING:
        return 1.0 / x
    else:
        return tl.inline_asm_elementwise(
            "rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def _log2(x):
    # One MUFU.LG2 (lg2.approx.ftz, relative error about 2**-22); tl.log is a libdevice polynomial of ~20 instructions.
    if _INTERPRETING:
        return tl.log2(x)
    else:
        return tl.inline_asm_elementwise(
            "lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def _sigmoid(x):
    """1 / (1 + exp(-x)) with one MUFU.EX2 and one MUFU.RCP."""
    return _rcp(1.0 + _exp2_ftz(-x * _LOG2E))


@triton.jit
def _softplus(x):
    # torch.nn.functional.softplus (beta 1, threshold 20). log1p(e) = log(u) * e / (u - 1) with u = 1 + e: u - 1
    # is exact, so the rounding of u cancels (Goldberg); where u rounds to 1, log1p(e) = e. Three MUFU ops.
    e = _exp2_ftz(tl.minimum(x, 20.0) * _LOG2E)
    u = 1.0 + e
    rounds_to_one = u == 1.0
    log1p_e = tl.where(rounds_to_one, e, _log2(u) * _LN2 * (e * _rcp(tl.where(rounds_to_one, 1.0, u - 1.0))))
    return tl.where(x > 20.0, x, log1p_e)


@triton.jit
def _load_rows(row0, row_stride, mask_d, states, N_STATE: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_N, BLOCK_D) tile whose row n is loaded from row0 + n * row_stride (row0: (BLOCK_D,) pointers), one row
    at a time: the row offsets stay scalars (uniform registers) instead of a tile of per-thread pointers."""
    tile = tl.zeros((BLOCK_N, row0.shape[0]), dtype=tl.float32)
    for n in tl.static_range(N_STATE):
        row = tl.load(row0 + n * row_stride, mask=mask_d, other=0.0).to(tl.float32)
        tile = tl.where(states[:, None] == n, row[None, :], tile)
    return tile


@triton.jit
def _store_rows(row0, row_stride, tile, mask_d, states, N_STATE: tl.constexpr):
    """Store row n of a (BLOCK_N, BLOCK_D) fp32 tile at row0 + n * row_stride (see _load_rows). The row is picked
    as an integer sum of the bits with the other rows zeroed: for integers x + 0 folds to x, so the pick costs
    nothing (a float sum would keep one addition of 0.0 per other row)."""
    bits = tile.to(tl.int32, bitcast=True)
    for n in tl.static_range(N_STATE):
        row = tl.sum(tl.where(states[:, None] == n, bits, 0), axis=0).to(tl.float32, bitcast=True)
        tl.store(row0 + n * row_stride, row, mask=mask_d)


Inputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]  # u, delta, A, B, C, D, bias


class ScanGrads(NamedTuple):
    """The backward's gradients of one direction, named (and ordered) as the arguments of ``selective_scan``.

    None where an input is absent (D, z, delta_bias). The gate z is shared by a bidirectional pair: its gradient is in
    the forward direction's ScanGrads, and the backward direction's ``z`` is None."""

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor | None
    z: Tensor | None
    delta_bias: Tensor | None


def _grid(shape: ScanShape, block_d: int) -> tuple[int, int]:
    return (shape.batch * shape.groups, triton.cdiv(shape.dim_per_group, block_d))


def _like(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A result buffer of x's shape, channels-last (a transposed (batch, L, dim) tensor) when x is, else contiguous."""
    b, d, L = x.shape
    dtype = dtype or x.dtype
    if x.stride(1) == 1 and d > 1:
        return new_output((b, L, d), dtype, x.device).transpose(1, 2)
    return new_output((b, d, L), dtype, x.device)


def _state_rows(x: Tensor) -> Tensor:
    """B or C as (batch, G, N, L) whose memory is fp32 (batch, G, L, N): each forward step loads one position's N
    values as a few vector loads. B and C are N/dim of u's size, so the copy (none when they already are such a
    view) is small next to the scan's traffic."""
    return grouped(x).transpose(2, 3).float().contiguous().transpose(2, 3)


def _direction(inputs: Inputs, forward: bool = False) -> tuple[list, list, ScanShape]:
    """Kernel pointers and strides of one direction's inputs; absent D / bias become u (never read)."""
    u, delta, A, B, C, D, bias = inputs
    shape = check_inputs(u, delta, A, B, C, D, None, bias)
    B4, C4 = (_state_rows(B), _state_rows(C)) if forward else (grouped(B), grouped(C))
    pointers = [u, delta, A, B4, C4, D if D is not None else u, bias if bias is not None else u]
    strides = [*u.stride(), *delta.stride(), *A.stride(), *B4.stride(), *C4.stride()]
    return pointers, strides, shape


def _check_pair(first: Inputs, second: Inputs, z: Tensor | None) -> ScanShape:
    shape = check_inputs(*first[:6], z, first[6])
    other = check_inputs(*second[:6], z, second[6])
    if other != shape:
        raise ValueError(f"selective_scan_bidirectional: the two directions' shapes differ: {shape} and {other}")
    if (first[5] is None) != (second[5] is None) or (first[6] is None) != (second[6] is None):
        raise ValueError("selective_scan_bidirectional: D and delta_bias must be given for both directions or neither")
    return shape


def _n_chunks(shape: ScanShape, config: ScanConfig) -> int:
    return triton.cdiv(shape.length, config.block_l)
