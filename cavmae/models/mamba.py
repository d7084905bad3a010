"""Bidirectional Mamba (S6) block, registered as backbone ``mamba``.

The token mixer follows Vision Mamba / Audio Mamba: one input projection to (x, z); two directions, each with its
own depthwise conv, x/dt projections, A and D; the forward direction scans tokens 0..L-1 with a causal conv, the
backward direction scans L-1..0 with an anti-causal conv (the causal conv of the reversed sequence); each output
is gated by silu(z) at its own position; the two are combined (sum or mean) and projected back, or (``concat``)
laid side by side into an out projection twice as wide. Nothing is flipped in memory: the scan op runs the backward
direction in place.

Layout: the activations stay token-major ([B, L, C] in memory) from the input projection to the scan, and the
scan reads them through (B, C, L) views, so no pass only copies or pads: each direction's conv is one
channels-last conv2d whose 2K-1 taps hold the K weights on one side and zeros on the other (causal or anti-causal
without a padded copy of the input), and every Linear reads a contiguous [B, L, C] tensor. Add and mean go through
one fused bidirectional scan call (one launch on the GPU: both directions, the gate and the combination). The one
pass left is the transposition of the scan's (B, d_inner, L) output for the out projection
(``scripts/bench_mamba_block.py`` prints the bytes per block).

Masked sequences (``model.mamba.gap_aware_dt``, off by default). With masking, the encoder sees only the kept
tokens, so neighbours in the kept list can be far apart in the full sequence. Given the tokens' positions in the
unmasked sequence, each direction scales a token's step by its gap g to the previous token in its scan order
(dt -> g*dt) and its B by 1/g: the state decays over the whole gap, exp(g*dt*A), while the token's own input enters
once, dt*B*u, which is the scan of the full sequence with no input at the masked positions when dt is constant.
With no gaps (g = 1, nothing masked) it is the plain block.

The block wraps the mixer in the same :class:`~cavmae.models.blocks.ModalityBlock` as the ViT block (three norm
pairs, ``modality`` argument), followed by the ViT MLP, so the models never branch on the backbone.
A_log, D and the dt bias carry ``_no_weight_decay = True`` for the optimiser (as mamba_ssm marks them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from cavmae.config import MambaConfig, ModelConfig
from cavmae.kernels import selective_scan, selective_scan_bidirectional
from cavmae.models.blocks import ModalityBlock, register_block


def _no_decay(p: nn.Parameter) -> nn.Parameter:
    p._no_weight_decay = True
    return p


class _Direction(nn.Module):
    """The per-direction parameters: depthwise conv, x projection (dt, B, C), dt projection, A_log, D."""

    def __init__(self, d_inner: int, cfg: MambaConfig, dt_rank: int):
        super().__init__()
        n = cfg.d_state
        self.conv1d = nn.Conv1d(d_inner, d_inner, cfg.d_conv, groups=d_inner)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = _no_decay(nn.Parameter(torch.zeros(d_inner, n)))
        self.D = _no_decay(nn.Parameter(torch.ones(d_inner)))
        _no_decay(self.dt_proj.bias)
        self.dt_rank, self.d_state = dt_rank, n
        self.cfg = cfg

    def reset_parameters(self) -> None:
        """Mamba's init: A = -(1..N) per channel, D = 1, dt bias = softplus^-1 of log-uniform [dt_min, dt_max]."""
        d_inner, n = self.A_log.shape
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d_inner, 1))
            self.D.fill_(1.0)
            bound = self.dt_rank**-0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            lo, hi = math.log(self.cfg.dt_min), math.log(self.cfg.dt_max)
            dt = torch.exp(torch.rand(d_inner) * (hi - lo) + lo).clamp_min(1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
            nn.init.kaiming_uniform_(self.conv1d.weight, a=math.sqrt(5))
            nn.init.zeros_(self.conv1d.bias)

    def conv(self, x_cl: torch.Tensor, reverse: bool) -> torch.Tensor:
        """silu(depthwise conv) of x_cl [B, d_inner, 1, L], a channels-last view of token-major [B, L, d_inner]:
        causal (forward direction) or anti-causal (backward). Returns token-major [B, L, d_inner], contiguous."""
        w = self.conv1d.weight  # [d_inner, 1, K]
        k = w.shape[-1]
        zeros = w.new_zeros(w.shape[0], 1, k - 1)
        # 2K-1 taps over t-K+1..t+K-1 (padding K-1 both sides, output length L): [w, 0] reads t-K+1..t (causal),
        # [0, w reversed] reads t..t+K-1, y[t] = sum_j w[K-1-j] x[t+j] (the causal conv of the reversed sequence)
        taps = torch.cat([zeros, w.flip(-1)] if reverse else [w, zeros], dim=-1).unsqueeze(2)  # [d_inner, 1, 1, 2K-1]
        y = F.conv2d(x_cl, taps, self.conv1d.bias, padding=(0, k - 1), groups=w.shape[0])  # channels-last in and out
        return F.silu(y).squeeze(2).mT

    def gap_conv(self, x_cl: torch.Tensor, reverse: bool, positions: torch.Tensor, fill: str) -> torch.Tensor:
        """:meth:`conv` of a masked sequence read as the unmasked one: the kept tokens x_cl (as in :meth:`conv`) are
        spread to their positions [B, L] in the full sequence (see :func:`spread_to_full`), convolved there and
        read back at the kept positions. Returns token-major [B, L, d_inner]."""
        full = spread_to_full(x_cl.squeeze(2).mT, positions, reverse, fill)  # [B, L_full, d_inner]
        y = self.conv(full.mT.unsqueeze(2), reverse)  # [B, L_full, d_inner]
        return y.gather(1, positions.unsqueeze(-1).expand(-1, -1, y.shape[-1]))

    def scan_inputs(
        self, x_cl: torch.Tensor, reverse: bool, positions: torch.Tensor | None = None, fill: str = "zero"
    ) -> tuple[torch.Tensor, ...]:
        """x_cl as in :meth:`conv` -> (u, delta [B, d_inner, L], B, C [B, N, L]), (B, C, L) views of token-major
        tensors (the scan reads them in place). positions: convolve the kept tokens where they sit in the full
        sequence (:meth:`gap_conv`); None: as adjacent tokens."""
        u = self.conv(x_cl, reverse) if positions is None else self.gap_conv(x_cl, reverse, positions, fill)
        dbc = self.x_proj(u)  # [B, L, dt_rank + 2N]
        dt, b, c = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # [B, L, d_inner]; the bias is added inside the scan
        return u.mT, delta.mT, b.mT, c.mT


def scan_gaps(positions: torch.Tensor, reverse: bool) -> torch.Tensor:
    """positions [B, L] (the tokens' indices in the unmasked sequence, ascending) -> [B, L] float: each token's
    distance to the token scanned before it (its predecessor, or its successor when ``reverse``); 1 for the first."""
    p = positions.to(torch.float32)
    steps = p[:, 1:] - p[:, :-1]
    one = torch.ones_like(p[:, :1])
    return torch.cat([steps, one] if reverse else [one, steps], dim=1)


def spread_to_full(x: torch.Tensor, positions: torch.Tensor, reverse: bool, fill: str) -> torch.Tensor:
    """Kept tokens x [B, L, d] at ascending positions [B, L] of the unmasked sequence -> [B, L_full, d] with
    L_full = the last position + 1. ``fill="zero"``: zeros at the masked positions. ``fill="hold"``: a masked
    position holds the kept token whose scan step covers it (the next kept token in the scan direction, as
    :func:`gap_scaled` reads the gap); positions scanned before the first kept token hold zeros."""
    b, _, d = x.shape
    full_len = int(positions[:, -1].max()) + 1
    where = torch.arange(full_len, device=x.device).expand(b, -1).contiguous()  # [B, L_full]
    if fill == "zero":
        out = x.new_zeros(b, full_len, d)
        return out.scatter(1, positions.unsqueeze(-1).expand(-1, -1, d), x)
    # the covering token; positions outside the kept range in the scan direction are never covered (the first
    # scanned kept token's step is 1) or never read (a causal conv reads no later position)
    if reverse:  # the last kept token at or before each position
        cover = torch.searchsorted(positions, where, right=True) - 1
        empty = (where > positions[:, -1:]) | (cover < 0)
    else:  # the first kept token at or after each position
        cover = torch.searchsorted(positions, where)
        empty = (where < positions[:, :1]) | (cover >= positions.shape[1])
    held = x.gather(1, cover.clamp(0, positions.shape[1] - 1).unsqueeze(-1).expand(-1, -1, d))
    return held.masked_fill(empty.unsqueeze(-1), 0.0)


def gap_scaled(
    delta: torch.Tensor, b: torch.Tensor, delta_bias: torch.Tensor, gaps: torch.Tensor, fill: str = "zero"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step over a gap: delta [B, d, L] (before bias and softplus), B [B, N, L], gaps [B, L] -> (g * dt, B')
    with dt = softplus(delta + bias), for a scan called without bias and softplus. The state decays by
    exp(g dt A). ``fill="zero"``: B' = B / g, the token's input enters as dt B u, as if the g - 1 skipped positions
    had no input. ``fill="hold"``: B' = B, the input enters as g dt B u, as if the token's input were held over the
    whole gap (a step of g dt with the same input, in Mamba's discretisation)."""
    g = gaps.unsqueeze(1)  # [B, 1, L]
    return F.softplus(delta + delta_bias[:, None]) * g, (b / g if fill == "zero" else b)


class BiMambaMixer(nn.Module):
    """[B, L, dim] -> [B, L, dim] bidirectional selective-scan token mixer."""

    def __init__(self, dim: int, cfg: MambaConfig):
        super().__init__()
        d_inner = cfg.expand * dim
        dt_rank = cfg.dt_rank or math.ceil(dim / 16)
        self.cfg = cfg
        self.d_inner = d_inner
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.fwd = _Direction(d_inner, cfg, dt_rank)
        self.bwd = _Direction(d_inner, cfg, dt_rank)
        # "concat": each direction's gated output keeps its own half of the out projection
        concat = cfg.bidirectional_combine == "concat"
        self.out_proj = nn.Linear(2 * d_inner if concat else d_inner, dim, bias=False)

    def reset_backbone_parameters(self) -> None:
        self.fwd.reset_parameters()
        self.bwd.reset_parameters()

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, dim]; positions [B, L]: the tokens' indices in the unmasked sequence (used with
        ``gap_aware_dt``), None when x is the whole sequence."""
        w_x, w_z = self.in_proj.weight.split(self.d_inner)  # in_proj as two halves: each output is contiguous
        x_cl = F.linear(x, w_x).mT.unsqueeze(2)  # [B, d_inner, 1, L], channels-last: what the conv reads
        z = F.linear(x, w_z).mT  # [B, d_inner, L] view
        gap_aware = self.cfg.gap_aware_dt and positions is not None
        args = [self._scan_args(d, x_cl, reverse, positions) for d, reverse in ((self.fwd, False), (self.bwd, True))]
        common = {"z": z, "delta_softplus": not gap_aware, "impl": self.cfg.scan_impl}
        if self.cfg.bidirectional_combine == "concat":
            # each direction scanned and gated on its own; the cat writes [B, L, 2*d_inner] (forward channels, then
            # backward), so the transposition costs no pass of its own
            ys = [
                selective_scan(*a[:6], delta_bias=a[6], reverse=reverse, **common)
                for a, reverse in zip(args, (False, True))
            ]
            return self.out_proj(torch.cat([y.mT for y in ys], dim=-1))
        pairs = list(zip(*args))  # (u, delta, A, B, C, D, delta_bias), each a (forward, backward) pair
        y = selective_scan_bidirectional(
            *pairs[:6], delta_bias=pairs[6], combine=self.cfg.bidirectional_combine, **common
        )  # [B, d_inner, L]
        return self.out_proj(y.mT)

    def _scan_args(self, d: _Direction, x_cl: torch.Tensor, reverse: bool, positions: torch.Tensor | None) -> tuple:
        """One direction's (u, delta, A, B, C, D, delta_bias) for the scan. With positions (a masked sequence) and
        ``gap_aware_dt``: dt and B already scaled by the gaps; with ``gap_aware_conv`` too: the conv over the
        full positions."""
        cfg = self.cfg
        gap_aware = cfg.gap_aware_dt and positions is not None
        conv_positions = positions if gap_aware and cfg.gap_aware_conv else None
        u, delta, b, c = d.scan_inputs(x_cl, reverse, conv_positions, cfg.gap_fill)
        bias = d.dt_proj.bias.float()
        if gap_aware:
            delta, b = gap_scaled(delta, b, bias, scan_gaps(positions, reverse), cfg.gap_fill)
            bias = None
        return u, delta, -torch.exp(d.A_log.float()), b, c, d.D.float(), bias


class MambaBlock(ModalityBlock):
    """Bidirectional Mamba mixer + ViT MLP with CAV-MAE's three norm pairs."""

    def __init__(self, dim: int, num_heads: int, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(dim, cfg.norm_eps, drop_path)
        self.mixer = BiMambaMixer(dim, cfg.mamba)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * cfg.mlp_ratio), act_layer=nn.GELU)

    def mix(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.mixer(x, positions)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


register_block("mamba")(MambaBlock)
