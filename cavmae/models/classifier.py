"""The fine-tuning model: the encoder plus a classification head.

- ``linear`` (CAV-MAE): ``mlp_head`` = LayerNorm + Linear on the mean-pooled tokens of one frame; with
  ``model.global_tokens`` the audio / video modes take the global token's output instead (as the public Sync
  classifier's audio-only / video-only modes), the audiovisual and missing-modality modes the mean over the joint
  pass's tokens, which hold no global token;
- ``attention`` (CAV-MAE Sync's probe, the public ``self_attention_cls``): every frame k of a clip with its audio
  window gives a||v [2D], the pooled outputs of the audio and video modality stacks (the global token with
  ``model.global_tokens``, the token mean otherwise; before the shared block, as the public probe reads them);
  the N frames [B, N, 2D] and a learnable CLS [1, 1, 2D] run through two ViT blocks of width 2D (no position
  embedding: the frames are a set), and ``mlp_head`` (LayerNorm + Linear of width 2D) classifies the CLS output.
"""

from __future__ import annotations

import torch
from torch import nn

from cavmae.config import ModelConfig
from cavmae.models.blocks import create_block
from cavmae.models.embed import init_linear_and_norm
from cavmae.models.encoder import CAVMAEEncoder

# Our mode names, with the public code's names as aliases.
MODES = ("audiovisual", "audio", "video", "missing_video", "missing_audio")
HEADS = ("linear", "attention")
ATTENTION_BLOCKS = 2  # transformer blocks of the attention head (the public self_attention_cls)
_ALIASES = {
    "multimodal": "audiovisual",
    "audioonly": "audio",
    "videoonly": "video",
    "missingaudioonly": "missing_video",  # trained audio-visual, tested with audio alone
    "missingvideoonly": "missing_audio",  # trained audio-visual, tested with video alone
}


class CAVMAEClassifier(CAVMAEEncoder):
    """``forward(audio, frames, mode)`` -> logits [B, num_classes].

    Modes: ``audiovisual`` (joint stream), ``audio`` / ``video`` (modality streams, for models fine-tuned on one
    modality), ``missing_video`` / ``missing_audio`` (a model fine-tuned audio-visually, tested with one modality:
    the average of the joint-norm and the modality-norm passes of the shared blocks, as the paper does). A missing
    input may be passed as None.
    """

    def __init__(self, cfg: ModelConfig | None = None, head: str = "linear"):
        cfg = cfg or ModelConfig()
        if head not in HEADS:
            raise ValueError(f"unknown classifier head {head!r}; expected one of {', '.join(HEADS)}")
        super().__init__(cfg, trainable_pos=True)
        self.head = head
        width = cfg.embed_dim if head == "linear" else 2 * cfg.embed_dim
        if head == "attention":
            self.probe_cls = nn.Parameter(torch.zeros(1, 1, width))
            self.probe_blocks = nn.ModuleList(
                create_block("vit", width, cfg.num_heads, cfg) for _ in range(ATTENTION_BLOCKS)
            )
        self.mlp_head = nn.Sequential(nn.LayerNorm(width, eps=cfg.norm_eps), nn.Linear(width, cfg.num_classes))
        self.init_encoder_weights()
        self.mlp_head.apply(init_linear_and_norm)
        if head == "attention":
            self.probe_blocks.apply(init_linear_and_norm)
            nn.init.normal_(self.probe_cls, std=0.02)

    def head_parameter_prefixes(self) -> tuple[str, ...]:
        """Name prefixes of the head's parameters (what a frozen-encoder probe trains)."""
        return ("mlp_head.",) if self.head == "linear" else ("mlp_head.", "probe_cls", "probe_blocks.")

    def frame_features(self, audio: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame a||v features of the attention head: audio [B, N, L, F] (frame k's window) and frames
        [B, N, 3, H, W] -> [B, N, 2D]."""
        if audio.dim() != 4 or frames.dim() != 5 or audio.shape[:2] != frames.shape[:2]:
            raise ValueError(
                "the attention head needs every frame with its audio window: audio [B, N, L, F] and frames "
                f"[B, N, 3, H, W], got {list(audio.shape)} and {list(frames.shape)} (set data.audio_window)"
            )
        batch, count = frames.shape[:2]
        a = self.encode_audio(audio.flatten(0, 1))  # [B*N, La, D]
        v = self.encode_video(frames.flatten(0, 1))  # [B*N, Lv, D]
        if self.cfg.global_tokens:  # the global token leads each modality's tokens
            a, v = a[:, 0], v[:, 0]
        else:
            a, v = a.mean(1), v.mean(1)
        return torch.cat([a, v], dim=-1).view(batch, count, -1)

    def attention_pool(self, features: torch.Tensor) -> torch.Tensor:
        """[B, N, 2D] per-frame features -> [B, 2D]: the CLS output of the head's blocks."""
        x = torch.cat([self.probe_cls.expand(features.shape[0], -1, -1), features], dim=1)
        return self.run_blocks(self.probe_blocks, x)[:, 0]

    def features(self, audio: torch.Tensor | None, frames: torch.Tensor | None, mode: str = "audiovisual"):
        """Pooled representation [B, dim] that feeds the head."""
        mode = _ALIASES.get(mode, mode)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)} (or {', '.join(_ALIASES)})")
        if mode in ("audiovisual", "audio", "missing_video") and audio is None:
            raise ValueError(f"mode {mode!r} needs audio")
        if mode in ("audiovisual", "video", "missing_audio") and frames is None:
            raise ValueError(f"mode {mode!r} needs frames")
        if mode == "audiovisual":
            return self.joint_stream(self.encode_audio(audio), self.encode_video(frames)).mean(dim=1)
        if mode == "audio":  # with model.global_tokens its output, as the public Sync classifier's audio-only mode
            return self.pool(self.audio_stream(self.encode_audio(audio)))
        if mode == "video":
            return self.pool(self.video_stream(self.encode_video(frames)))
        # missing modalities: the head was trained on the mean of the joint tokens, which hold no global token
        if mode == "missing_video":
            a = self.patch_tokens(self.encode_audio(audio))
            return 0.5 * (self.norm(self.run_blocks(self.blocks_u, a)).mean(1) + self.audio_stream(a).mean(1))
        v = self.patch_tokens(self.encode_video(frames))
        return 0.5 * (self.norm(self.run_blocks(self.blocks_u, v)).mean(1) + self.video_stream(v).mean(1))

    def forward(self, audio: torch.Tensor | None, frames: torch.Tensor | None, mode: str = "audiovisual"):
        """Logits [B, C]. Linear head: one frame (audio [B, L, F], frames [B, 3, H, W]). Attention head: a whole
        clip (audio [B, N, L, F], frames [B, N, 3, H, W]), audiovisual mode only."""
        if self.head == "attention":
            if _ALIASES.get(mode, mode) != "audiovisual":
                raise ValueError(f"the attention head classifies audio-visual clips; mode {mode!r} is not supported")
            return self.mlp_head(self.attention_pool(self.frame_features(audio, frames)))
        return self.mlp_head(self.features(audio, frames, mode))
