"""Bidirectional Mamba (S6) block, registered as backbone ``mamba``.

The token mixer follows Vision Mamba / Audio Mamba: one input projection to (x, z); two directions, each with its
own depthwise conv, x/dt projections, A and D; the forward direction scans tokens 0..L-1 with a causal conv, the
backward direction scans L-1..0 with an anti-causal conv (the causal conv of the reversed sequence); each output
is gated by silu(z) at its own position; the two are added (Vision Mamba) and projected back. Nothing is flipped
in memory: the scan op runs the backward direction in place.

Layout: the activations stay token-major ([B, L, C] in memory) from the input projection to the scan, and the
scan reads them through (B, C, L) views, so no pass only copies or pads: each direction's conv is one
channels-last conv2d whose 2K-1 taps hold the K weights on one side and zeros on the other (causal or anti-causal
without a padded copy of the input), and every Linear reads a contiguous [B, L, C] tensor. Both directions go
through one fused bidirectional scan call (one launch on the GPU: both directions, the gate and the sum). The one
pass left is the transposition of the scan's (B, d_inner, L) output for the out projection
(``scripts/bench_mamba_block.py`` prints the bytes per block).

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
from cavmae.kernels import selective_scan_bidirectional
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

    def scan_inputs(self, x_cl: torch.Tensor, reverse: bool) -> tuple[torch.Tensor, ...]:
        """x_cl as in :meth:`conv` -> (u, delta [B, d_inner, L], B, C [B, N, L]), (B, C, L) views of token-major
        tensors (the scan reads them in place)."""
        u = self.conv(x_cl, reverse)
        dbc = self.x_proj(u)  # [B, L, dt_rank + 2N]
        dt, b, c = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # [B, L, d_inner]; the bias is added inside the scan
        return u.mT, delta.mT, b.mT, c.mT


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
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def reset_backbone_parameters(self) -> None:
        self.fwd.reset_parameters()
        self.bwd.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim] -> [B, L, dim]."""
        w_x, w_z = self.in_proj.weight.split(self.d_inner)  # in_proj as two halves: each output is contiguous
        x_cl = F.linear(x, w_x).mT.unsqueeze(2)  # [B, d_inner, 1, L], channels-last: what the conv reads
        z = F.linear(x, w_z).mT  # [B, d_inner, L] view
        args = [self._scan_args(d, x_cl, reverse) for d, reverse in ((self.fwd, False), (self.bwd, True))]
        pairs = list(zip(*args))  # (u, delta, A, B, C, D, delta_bias), each a (forward, backward) pair
        y = selective_scan_bidirectional(
            *pairs[:6], z=z, delta_bias=pairs[6], delta_softplus=True, impl=self.cfg.scan_impl
        )  # [B, d_inner, L]
        return self.out_proj(y.mT)

    @staticmethod
    def _scan_args(d: _Direction, x_cl: torch.Tensor, reverse: bool) -> tuple:
        """One direction's (u, delta, A, B, C, D, delta_bias) for the scan."""
        u, delta, b, c = d.scan_inputs(x_cl, reverse)
        return u, delta, -torch.exp(d.A_log.float()), b, c, d.D.float(), d.dt_proj.bias.float()


class MambaBlock(ModalityBlock):
    """Bidirectional Mamba mixer + ViT MLP with CAV-MAE's three norm pairs."""

    def __init__(self, dim: int, num_heads: int, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(dim, cfg.norm_eps, drop_path)
        self.mixer = BiMambaMixer(dim, cfg.mamba)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * cfg.mlp_ratio), act_layer=nn.GELU)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


register_block("mamba")(MambaBlock)
