"""The CAV-MAE encoder shared by the pre-training model and the classifier.

Attributes carry the public checkpoints' names (``patch_embed_a``, ``pos_embed_a``, ``modality_a``, ``blocks_a``,
``blocks_v``, ``blocks_u``, ``norm_a``, ``norm_v``, ``norm``), so converting a public state dict is a matter of
stripping the ``module.`` prefix.

Streams (as in the paper and its public code):
- audio tokens -> blocks_a; video tokens -> blocks_v;
- joint: cat(audio, video) -> blocks_u with the joint norms -> ``norm``;
- audio-only: audio -> blocks_u with the audio norms -> ``norm_a``; video-only likewise with ``norm_v``.
Every shared block is chained within a stream (the public code re-runs only the last one for the modality
streams when there is more than one shared block; that only matters for ``shared_depth > 1``).

CAV-MAE Sync (model.global_tokens / registers / contrastive_heads; public names ``cls_token_a``, ``cls_token_v``,
``register_tokens``, ``constrative_head_audio``, ``constrative_head_visual``): a modality stack sees
[global token, tokens, registers]; the registers are dropped after it, the global token before the joint stream;
the audio / video streams run the heads (joint norms, as the public code) before ``norm_a`` / ``norm_v``, and
:meth:`CAVMAEEncoder.pool` takes the global token's output as the clip embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cavmae.config import ModelConfig
from cavmae.models.blocks import check_backbones, create_block
from cavmae.models.embed import PatchEmbed, audio_to_image, init_linear_and_norm, sincos_2d, xavier_conv_


def reset_backbones(module: nn.Module) -> None:
    """Re-initialise backbone parameters with an init of their own (Mamba's A, D, dt), after the generic init."""
    for m in module.modules():
        if hasattr(m, "reset_backbone_parameters"):
            m.reset_backbone_parameters()


class CAVMAEEncoder(nn.Module):
    """Patch embeddings, position / modality embeddings, the three block stacks and the final norms."""

    def __init__(self, cfg: ModelConfig, trainable_pos: bool = False):
        super().__init__()
        check_backbones(cfg)
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed_a = PatchEmbed(1, dim, cfg.patch_size, cfg.audio_grid)
        self.patch_embed_v = PatchEmbed(3, dim, cfg.patch_size, cfg.video_grid)
        self.modality_a = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_v = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed sin-cos values; frozen in pre-training, trainable in fine-tuning (trainable_pos).
        self.pos_embed_a = nn.Parameter(
            torch.zeros(1, self.patch_embed_a.num_patches, dim), requires_grad=trainable_pos
        )
        self.pos_embed_v = nn.Parameter(
            torch.zeros(1, self.patch_embed_v.num_patches, dim), requires_grad=trainable_pos
        )
        total = 2 * cfg.modality_depth + cfg.shared_depth
        # Stochastic depth grows with depth; modality stacks share the first rates, the shared stack the last.
        rates = [cfg.drop_path * i / max(cfg.modality_depth + cfg.shared_depth - 1, 1) for i in range(total)]
        self.blocks_a = nn.ModuleList(
            create_block(cfg.backbone, dim, cfg.num_heads, cfg, rates[i]) for i in range(cfg.modality_depth)
        )
        self.blocks_v = nn.ModuleList(
            create_block(cfg.backbone, dim, cfg.num_heads, cfg, rates[i]) for i in range(cfg.modality_depth)
        )
        self.blocks_u = nn.ModuleList(
            create_block(cfg.backbone, dim, cfg.num_heads, cfg, rates[cfg.modality_depth + i])
            for i in range(cfg.shared_depth)
        )
        self.norm_a = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.norm_v = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        # CAV-MAE Sync tokens and heads, under the public code's names so its state dicts map by name.
        if cfg.global_tokens:
            self.cls_token_a = nn.Parameter(torch.zeros(1, 1, dim))
            self.cls_token_v = nn.Parameter(torch.zeros(1, 1, dim))
        if cfg.registers:
            self.register_tokens = nn.Parameter(torch.zeros(2 * cfg.registers, dim))  # audio rows first
        if cfg.contrastive_heads:
            self.constrative_head_audio = nn.ModuleList(
                create_block(cfg.backbone, dim, cfg.num_heads, cfg) for _ in range(2)
            )
            self.constrative_head_visual = nn.ModuleList(
                create_block(cfg.backbone, dim, cfg.num_heads, cfg) for _ in range(2)
            )
        self.activation_checkpointing = False

    def init_encoder_weights(self) -> None:
        """CAV-MAE init: sin-cos positions, xavier patch projections and Linears, N(0, 0.02) modality tokens."""
        cfg = self.cfg
        self.pos_embed_a.data.copy_(sincos_2d(cfg.embed_dim, *cfg.audio_grid).unsqueeze(0))
        self.pos_embed_v.data.copy_(sincos_2d(cfg.embed_dim, *cfg.video_grid).unsqueeze(0))
        xavier_conv_(self.patch_embed_a.proj)
        xavier_conv_(self.patch_embed_v.proj)
        nn.init.normal_(self.modality_a, std=0.02)
        nn.init.normal_(self.modality_v, std=0.02)
        if cfg.global_tokens:  # as the public Sync code: N(0, 0.02) global tokens, N(0, 1) registers
            nn.init.normal_(self.cls_token_a, std=0.02)
            nn.init.normal_(self.cls_token_v, std=0.02)
        if cfg.registers:
            nn.init.normal_(self.register_tokens, std=1.0)
        self.apply(init_linear_and_norm)
        reset_backbones(self)

    # token embedding ---------------------------------------------------------------------------------------
    def tokens_a(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [B, T, F] -> audio tokens [B, (F/p)*(T/p), dim] with position + modality embedding."""
        if audio.dim() != 3 or audio.shape[1:] != (self.cfg.audio_length, self.cfg.num_mel_bins):
            raise ValueError(
                f"audio must be [B, {self.cfg.audio_length}, {self.cfg.num_mel_bins}] (frames, mel bins), "
                f"got {list(audio.shape)}"
            )
        return self.patch_embed_a(audio_to_image(audio)) + self.pos_embed_a + self.modality_a

    def tokens_v(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised RGB frames [B, 3, H, W] -> video tokens [B, (H/p)*(W/p), dim]."""
        size = self.cfg.image_size
        if frames.dim() != 4 or frames.shape[1:] != (3, size, size):
            raise ValueError(f"frames must be [B, 3, {size}, {size}], got {list(frames.shape)}")
        return self.patch_embed_v(frames) + self.pos_embed_v + self.modality_v

    # stacks ------------------------------------------------------------------------------------------------
    def run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """x [B, L, D] through ``blocks`` with the norm pair of ``modality`` (None: joint, "a", "v")."""
        for blk in blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, modality, use_reentrant=False)
            else:
                x = blk(x, modality)
        return x

    def modality_stack(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Tokens [B, K, D] of ``modality`` ("a" / "v") through its own stack (blocks_a / blocks_v). With
        model.global_tokens the modality's global token is prepended (output [B, 1+K, D], token first); with
        model.registers the R register rows are appended for the stack and dropped after it."""
        b = x.shape[0]
        parts = [x]
        if self.cfg.global_tokens:
            parts.insert(0, (self.cls_token_a if modality == "a" else self.cls_token_v).expand(b, -1, -1))
        r = self.cfg.registers
        if r:
            rows = self.register_tokens[:r] if modality == "a" else self.register_tokens[r:]
            parts.append(rows.unsqueeze(0).expand(b, -1, -1))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else x
        x = self.run_blocks(self.blocks_a if modality == "a" else self.blocks_v, x)
        return x[:, : x.shape[1] - r] if r else x

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Modality-stack output [B, (1+)K, D] -> its patch tokens [B, K, D] (the global token dropped)."""
        return x[:, 1:] if self.cfg.global_tokens else x

    def joint_stream(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Modality-encoded audio [B, (1+)La, D] and video [B, (1+)Lv, D] -> joint tokens [B, La+Lv, D] (normed;
        the global tokens are not part of the joint pass)."""
        return self.norm(self.run_blocks(self.blocks_u, torch.cat([self.patch_tokens(a), self.patch_tokens(v)], 1)))

    def audio_stream(self, a: torch.Tensor) -> torch.Tensor:
        """Shared stack with the audio norms, the contrastive heads if any (joint norms, as the public code), norm_a."""
        x = self.run_blocks(self.blocks_u, a, "a")
        if self.cfg.contrastive_heads:
            x = self.run_blocks(self.constrative_head_audio, x)
        return self.norm_a(x)

    def video_stream(self, v: torch.Tensor) -> torch.Tensor:
        x = self.run_blocks(self.blocks_u, v, "v")
        if self.cfg.contrastive_heads:
            x = self.run_blocks(self.constrative_head_visual, x)
        return self.norm_v(x)

    def pool(self, stream: torch.Tensor) -> torch.Tensor:
        """Modality-stream output [B, (1+)L, D] -> clip embedding [B, D]: the global token's output with
        model.global_tokens, else the mean over the tokens."""
        return stream[:, 0] if self.cfg.global_tokens else stream.mean(dim=1)

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Unmasked audio through blocks_a: [B, (1+)La, D] (global token first when on)."""
        return self.modality_stack(self.tokens_a(audio), "a")

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Unmasked frames through blocks_v: [B, (1+)Lv, D]."""
        return self.modality_stack(self.tokens_v(frames), "v")

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        self.activation_checkpointing = enabled
