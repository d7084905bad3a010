"""The CAV-MAE fine-tuning model: the encoder plus ``mlp_head`` = LayerNorm + Linear, on mean-pooled tokens."""

from __future__ import annotations

import torch
from torch import nn

from cavmae.config import ModelConfig
from cavmae.models.embed import init_linear_and_norm
from cavmae.models.encoder import CAVMAEEncoder

# Our mode names, with the public code's names as aliases.
MODES = ("audiovisual", "audio", "video", "missing_video", "missing_audio")
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

    def __init__(self, cfg: ModelConfig | None = None):
        cfg = cfg or ModelConfig()
        super().__init__(cfg, trainable_pos=True)
        self.mlp_head = nn.Sequential(
            nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps), nn.Linear(cfg.embed_dim, cfg.num_classes)
        )
        self.init_encoder_weights()
        self.mlp_head.apply(init_linear_and_norm)

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
        if mode == "audio":
            return self.audio_stream(self.encode_audio(audio)).mean(dim=1)
        if mode == "video":
            return self.video_stream(self.encode_video(frames)).mean(dim=1)
        if mode == "missing_video":
            a = self.encode_audio(audio)
            return 0.5 * (self.norm(self.run_blocks(self.blocks_u, a)).mean(1) + self.audio_stream(a).mean(1))
        v = self.encode_video(frames)
        return 0.5 * (self.norm(self.run_blocks(self.blocks_u, v)).mean(1) + self.video_stream(v).mean(1))

    def forward(self, audio: torch.Tensor | None, frames: torch.Tensor | None, mode: str = "audiovisual"):
        return self.mlp_head(self.features(audio, frames, mode))
