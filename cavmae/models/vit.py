"""The ViT block, registered as backbone ``vit``: multi-head attention + GELU MLP inside CAV-MAE's three norm
pairs; parameter names match the public CAV-MAE checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from cavmae.config import ModelConfig
from cavmae.models.blocks import ModalityBlock, register_block


class Attention(nn.Module):
    """Multi-head self-attention; ``impl='sdpa'`` uses F.scaled_dot_product_attention (flash / memory-efficient
    kernels where available), ``'math'`` the explicit softmax(QK^T / sqrt(d)) V (benchmarks and checks)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, impl: str = "sdpa"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.impl = impl
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # [B, L, 3*dim] -> 3 x [B, heads, L, head_dim]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.impl == "sdpa":
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # [B, heads, L, L]
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class ViTBlock(ModalityBlock):
    """ViT block (attention + GELU MLP) with CAV-MAE's three norm pairs; key names match the public checkpoints."""

    def __init__(self, dim: int, num_heads: int, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(dim, cfg.norm_eps, drop_path)
        self.attn = Attention(dim, num_heads, qkv_bias=cfg.qkv_bias, impl=cfg.attention)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * cfg.mlp_ratio), act_layer=nn.GELU)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


register_block("vit")(ViTBlock)
