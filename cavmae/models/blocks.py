"""The block contract, the block registry, and the ViT block.

Every encoder / decoder block is a :class:`ModalityBlock`: a pre-norm residual block that owns three LayerNorm
pairs (joint ``norm1/norm2``, audio ``norm1_a/norm2_a``, video ``norm1_v/norm2_v``) around ONE shared token
mixer and channel MLP, and whose ``forward(x, modality=None|'a'|'v')`` picks the pair. The models build blocks
only through :func:`create_block`, so a new backbone plugs in by registering a factory and the models never
branch on the backbone (timm-style registry; tests iterate over :func:`list_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from cavmae.config import ModelConfig

# factory(dim, num_heads, cfg, drop_path) -> ModalityBlock
BlockFactory = Callable[[int, int, ModelConfig, float], "ModalityBlock"]
_REGISTRY: dict[str, BlockFactory] = {}


def register_block(name: str) -> Callable[[BlockFactory], BlockFactory]:
    def deco(factory: BlockFactory) -> BlockFactory:
        if name in _REGISTRY:
            raise ValueError(f"block {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def list_blocks() -> list[str]:
    _import_optional_backbones()
    return sorted(_REGISTRY)


def create_block(name: str, dim: int, num_heads: int, cfg: ModelConfig, drop_path: float = 0.0) -> ModalityBlock:
    """Build one block of backbone `name` (a registry key such as ``vit``)."""
    _import_optional_backbones()
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](dim, num_heads, cfg, drop_path)


def _import_optional_backbones() -> None:
    """Backbones defined in other modules register themselves on import."""
    import importlib.util

    if importlib.util.find_spec("cavmae.models.mamba") is not None:
        importlib.import_module("cavmae.models.mamba")


class ModalityBlock(nn.Module):
    """x = x + mix(norm1_m(x)); x = x + ffn(norm2_m(x)), with m the modality's norm pair. Tokens [B, L, dim]."""

    def __init__(self, dim: int, norm_eps: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm1_a = nn.LayerNorm(dim, eps=norm_eps)
        self.norm1_v = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2_a = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2_v = nn.LayerNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Token mixer (attention, scan, ...): [B, L, dim] -> [B, L, dim]."""
        raise NotImplementedError

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token channel MLP: [B, L, dim] -> [B, L, dim]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if modality is None:
            n1, n2 = self.norm1, self.norm2
        elif modality == "a":
            n1, n2 = self.norm1_a, self.norm2_a
        elif modality == "v":
            n1, n2 = self.norm1_v, self.norm2_v
        else:
            raise ValueError(f"modality must be None, 'a' or 'v', got {modality!r}")
        x = x + self.drop_path(self.mix(n1(x)))
        return x + self.drop_path(self.ffn(n2(x)))


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
