"""The block contract and the block registry.

Every encoder / decoder block is a :class:`ModalityBlock`: a pre-norm residual block that owns three LayerNorm
pairs (joint ``norm1/norm2``, audio ``norm1_a/norm2_a``, video ``norm1_v/norm2_v``) around ONE shared token
mixer and channel MLP, and whose ``forward(x, modality=None|'a'|'v')`` picks the pair. The models build blocks
only through :func:`create_block`, so a new backbone plugs in by registering a factory and the models never
branch on the backbone (timm-style registry; tests iterate over :func:`list_blocks`). The registry imports none
of its plug-ins: ``cavmae.models`` imports every built-in backbone (``vit``, ``mamba``) once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import DropPath
from torch import nn

from cavmae.config import ConfigError, ModelConfig

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
    return sorted(_REGISTRY)


def check_backbones(cfg: ModelConfig) -> None:
    """``model.backbone`` and ``model.decoder_backbone`` name registered blocks (the config layer cannot know the
    registry, so the models check this where they are built)."""
    for field_name in ("backbone", "decoder_backbone"):
        name = getattr(cfg, field_name)
        if name not in _REGISTRY:
            raise ConfigError(
                f"model.{field_name}: {name!r} is not a registered backbone; registered: {', '.join(list_blocks())}"
            )


def create_block(name: str, dim: int, num_heads: int, cfg: ModelConfig, drop_path: float = 0.0) -> ModalityBlock:
    """Build one block of backbone `name` (a registry key such as ``vit``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](dim, num_heads, cfg, drop_path)


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
