"""Bidirectional Mamba (S6) block, registered as backbone ``mamba``.

The token mixer follows Vision Mamba / Audio Mamba: one input projection to (x, z); two directions, each with its
own depthwise conv, x/dt projections, A and D; the forward direction scans tokens 0..L-1 with a causal conv, the
backward direction scans L-1..0 with an anti-causal conv (the causal conv of the reversed sequence); each output
is gated by silu(z) at its own position; the two are combined (sum or mean) and projected back. Nothing is
flipped in memory: the scan op runs the backward direction in place.

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

    def conv(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        """Depthwise conv over [B, d_inner, L]: causal (forward) or anti-causal (backward direction)."""
        k = self.conv1d.kernel_size[0]
        if reverse:  # y[t] = sum_k w[k] x[t + K-1-k]: the causal conv of the reversed sequence, read back
            return F.conv1d(F.pad(x, (0, k - 1)), self.conv1d.weight.flip(-1), self.conv1d.bias, groups=x.shape[1])
        return F.conv1d(F.pad(x, (k - 1, 0)), self.conv1d.weight, self.conv1d.bias, groups=x.shape[1])

    def scan_inputs(self, x: torch.Tensor, reverse: bool):
        """x [B, d_inner, L] -> (u, delta [B, d_inner, L], B, C [B, N, L])."""
        u = F.silu(self.conv(x, reverse))
        dbc = self.x_proj(u.transpose(1, 2))  # [B, L, dt_rank + 2N]
        dt, b, c = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # [B, d_inner, L]; bias added inside the scan
        return u, delta, b.transpose(1, 2), c.transpose(1, 2)


class BiMambaMixer(nn.Module):
    """[B, L, dim] -> [B, L, dim] bidirectional selective-scan token mixer."""

    def __init__(self, dim: int, cfg: MambaConfig):
        super().__init__()
        d_inner = cfg.expand * dim
        dt_rank = cfg.dt_rank or math.ceil(dim / 16)
        self.cfg = cfg
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.fwd = _Direction(d_inner, cfg, dt_rank)
        self.bwd = _Direction(d_inner, cfg, dt_rank)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def reset_backbone_parameters(self) -> None:
        self.fwd.reset_parameters()
        self.bwd.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x).transpose(1, 2)  # [B, 2*d_inner, L], a strided view: the scan reads it in place
        xi, z = xz.chunk(2, dim=1)
        u_f, delta_f, b_f, c_f = self.fwd.scan_inputs(xi, reverse=False)
        u_b, delta_b, b_b, c_b = self.bwd.scan_inputs(xi, reverse=True)
        f, b = self.fwd, self.bwd
        y = selective_scan_bidirectional(
            (u_f, u_b),
            (delta_f, delta_b),
            (-torch.exp(f.A_log.float()), -torch.exp(b.A_log.float())),
            (b_f, b_b),
            (c_f, c_b),
            (f.D.float(), b.D.float()),
            z=z,
            delta_bias=(f.dt_proj.bias.float(), b.dt_proj.bias.float()),
            delta_softplus=True,
            impl=self.cfg.scan_impl,
            combine=self.cfg.bidirectional_combine,
        )  # [B, d_inner, L]
        return self.out_proj(y.transpose(1, 2))


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
