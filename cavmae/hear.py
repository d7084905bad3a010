"""The HEAR API (hear-eval-kit, HEAR 2021) for CAV-MAE audio encoders.

``load_model(path)`` -> :class:`HearModel`; ``get_scene_embeddings(audio, model)`` -> [n, D];
``get_timestamp_embeddings(audio, model)`` -> ([n, T, D], timestamps in ms [n, T]). Audio is float32 [n, samples]
in [-1, 1] at 16 kHz, of any length.

What the embeddings are:
- fbank exactly as the data pipeline computes it (:mod:`cavmae.data.fbank`: DC removal over the whole clip, Kaldi
  fbank, zero padding, then the model's own ``data.fbank_mean`` / ``data.fbank_std``);
- the unmasked audio stream of the encoder (``blocks_a`` then the shared blocks with the audio norms, the
  paper's audio retrieval feature), tokens [n, rows, cols, D] averaged over the frequency rows: one vector per
  patch column of ``patch_size`` fbank frames (16 frames = 160 ms);
- inputs longer than the model's window (``model.audio_length`` frames) are cut into windows that overlap by half
  a window (in whole patch columns), the last one ending at the clip's end; a column seen by several windows is
  the mean of their vectors; inputs shorter than the window are zero-padded as in pre-training and the padded
  columns are dropped;
- timestamp embeddings: the column vectors linearly interpolated in time between the columns' centres (constant
  before the first centre and after the last) at timestamps ``hop * (k + 1/2)``, k = 0 .. ceil(duration / hop) - 1,
  with hop = the column's 160 ms divided into 4 (40 ms; in general the smallest whole division <= 50 ms);
- scene embedding: the mean of the clip's column vectors.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from cavmae.data.fbank import (
    FBANK_MEAN,
    FBANK_STD,
    FRAME_LENGTH,
    FRAME_SHIFT,
    SAMPLE_RATE,
    frames_for_samples,
    kaldi_fbank,
    normalize_fbank,
)
from cavmae.models.weights import CONFIG, WEIGHTS, from_pretrained, load_official

MAX_HOP_MS = 50.0  # HEAR's recommended largest interval between timestamps


class HearModel(nn.Module):
    """A CAV-MAE model (pre-training or classifier) with the HEAR attributes and its fbank normalisation."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, encoder: nn.Module, fbank_mean: float = FBANK_MEAN, fbank_std: float = FBANK_STD):
        super().__init__()
        self.encoder = encoder.eval()
        self.cfg = encoder.cfg
        self.fbank_mean = float(fbank_mean)
        self.fbank_std = float(fbank_std)
        self.scene_embedding_size = int(self.cfg.embed_dim)
        self.timestamp_embedding_size = int(self.cfg.embed_dim)

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HearModel({type(self.encoder).__name__}, embed_dim {c.embed_dim}, window {c.audio_length} frames, "
            f"fbank mean {self.fbank_mean} std {self.fbank_std}, hop {self.hop_ms:g} ms)"
        )

    @property
    def column_ms(self) -> float:
        """Duration of one patch column (patch_size fbank frames) in ms."""
        return self.cfg.patch_size * FRAME_SHIFT * 1000.0 / SAMPLE_RATE

    @property
    def hop_ms(self) -> float:
        """Interval between timestamp embeddings: the column divided into the fewest equal parts <= 50 ms."""
        return self.column_ms / math.ceil(self.column_ms / MAX_HOP_MS)

    def fbank(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        """audio [n, samples] -> normalised fbank [n, num_frames, mel] on CPU, zero-padded as the pipeline does."""
        mel = self.cfg.num_mel_bins
        out = torch.zeros(audio.shape[0], num_frames, mel)
        for i, wave in enumerate(audio.detach().float().cpu()):
            fb = kaldi_fbank(wave - wave.mean(), mel, max_frames=num_frames)
            out[i, : fb.shape[0]] = fb
        return normalize_fbank(out, self.fbank_mean, self.fbank_std)

    @torch.inference_mode()
    def column_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [n, samples] -> one vector per patch column of the clip [n, columns, D] (columns >= 1)."""
        check_audio(audio)
        p, window = self.cfg.patch_size, self.cfg.audio_length
        columns = max(1, math.ceil(frames_for_samples(audio.shape[1]) / p))
        padded = max(window, columns * p)  # frames; a multiple of p
        fb = self.fbank(audio, padded)
        hop = max(p, window // 2 // p * p)
        starts = list(range(0, padded - window + 1, hop))
        if starts[-1] != padded - window:
            starts.append(padded - window)
        device = next(self.encoder.parameters()).device
        rows = self.cfg.audio_grid[0]
        total = torch.zeros(audio.shape[0], padded // p, self.cfg.embed_dim)
        seen = torch.zeros(padded // p, 1)
        for start in starts:
            x = fb[:, start : start + window].to(device)
            tokens = self.encoder.audio_stream(self.encoder.encode_audio(x))  # [n, rows * cols, D], freq-major
            per_column = tokens.reshape(x.shape[0], rows, window // p, -1).mean(1).float().cpu()  # [n, cols, D]
            total[:, start // p : (start + window) // p] += per_column
            seen[start // p : (start + window) // p] += 1
        return (total / seen)[:, :columns]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.column_embeddings(audio)


def check_audio(audio: torch.Tensor) -> None:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2 or not audio.is_floating_point():
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise ValueError(f"audio must be a float tensor [n, samples] at {SAMPLE_RATE} Hz in [-1, 1], got {shape}")


def load_model(model_file_path: str = "") -> HearModel:
    """Our model directory (``model.safetensors`` + ``config.yaml``; a run directory or a training checkpoint
    also works) or a public CAV-MAE ``.pth`` checkpoint (fbank normalised with the AudioSet statistics)."""
    if not model_file_path:
        raise ValueError(
            "cavmae.hear.load_model needs model_file_path: a cavmae model directory (e.g. runs/NAME/model, "
            f"holding {WEIGHTS} and {CONFIG}) or a public CAV-MAE .pth checkpoint"
        )
    path = Path(model_file_path)
    if path.is_dir() or (path.name == WEIGHTS and (path.parent / CONFIG).is_file()):
        model, cfg = from_pretrained(path if path.is_dir() else path.parent)
        return HearModel(model, cfg.data.fbank_mean, cfg.data.fbank_std)
    model, _ = load_official(path)
    return HearModel(model)


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """audio float32 [n, samples] -> [n, scene_embedding_size]: the mean of the clip's column vectors."""
    return model.column_embeddings(audio).mean(dim=1).to(audio.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio float32 [n, samples] -> (embeddings [n, T, D], timestamps in ms [n, T]), centred, every hop_ms."""
    columns = model.column_embeddings(audio)  # [n, C, D]
    n, count = columns.shape[:2]
    duration_ms = audio.shape[1] * 1000.0 / SAMPLE_RATE
    hop = model.hop_ms
    steps = max(1, math.ceil(duration_ms / hop))
    times = (torch.arange(steps, dtype=torch.float64) + 0.5) * hop  # [T]
    # centre of column j: frames p*j .. p*j + p - 1, frame i centred at (i * shift + length / 2) samples
    first_centre_ms = ((model.cfg.patch_size - 1) / 2 * FRAME_SHIFT + FRAME_LENGTH / 2) * 1000.0 / SAMPLE_RATE
    where = ((times - first_centre_ms) / model.column_ms).clamp(0, count - 1)  # in columns
    left = where.floor().long().clamp(max=count - 1)
    right = (left + 1).clamp(max=count - 1)
    frac = (where - left).float()[None, :, None]
    embeddings = columns[:, left] * (1 - frac) + columns[:, right] * frac  # [n, T, D]
    timestamps = times.float().expand(n, steps).contiguous()
    return embeddings.to(audio.device), timestamps.to(audio.device)
