"""Model inputs from raw media files (predict, retrieval queries): the same features as the shard loader.

A video file gives its audio track (decord, 16 kHz mono) and frames chosen by timestamp; an audio file (wav,
flac, mp3, ...) gives audio only; a video without an audio stream gives frames only. The fbank is the loader's
(as in training: Kaldi fbank, padded / cut to ``audio_length`` frames, normalised), the frames are resized
(shorter side, bicubic), centre-cropped and ImageNet-normalised exactly as in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cavmae.config import ModelConfig
from cavmae.data.fbank import wav_to_fbank
from cavmae.data.media import MediaError, VideoFrames, evenly_spaced_times, probe, read_audio
from cavmae.data.samples import normalize_frames, resize_center_crop

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"}


@dataclass
class FileInputs:
    path: Path
    audio: torch.Tensor | None  # [1, audio_length, num_mel_bins], normalised fbank
    frames: torch.Tensor | None  # [1, 3, S, S] (middle frame) or [1, 10, 3, S, S] (all ten)

    @property
    def modalities(self) -> str:
        return "+".join(m for m, x in (("audio", self.audio), ("video", self.frames)) if x is not None)


def _read_audio_file(path: Path) -> np.ndarray:
    """float32 [N] at 16 kHz mono: soundfile for formats it knows (any rate / channels), decord otherwise."""
    try:
        import soundfile

        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [N, channels]
        from cavmae.data.fbank import to_mono_16k

        return to_mono_16k(torch.from_numpy(data.T.copy()), rate).numpy()
    except Exception:
        return read_audio(str(path))


def load_file(path: str | Path, cfg: ModelConfig, all_frames: bool = False) -> FileInputs:
    """Decode `path` into model inputs. Raises MediaError (naming the file) when it holds neither stream."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    audio = frames = None
    if path.suffix.lower() in AUDIO_SUFFIXES:
        try:
            wave = _read_audio_file(path)
        except Exception as e:
            raise MediaError(f"{path}: undecodable audio ({e})") from e
    else:
        try:
            has_video, has_audio = probe(str(path))
        except MediaError as e:
            raise MediaError(f"{path}: {e}") from e
        if not (has_video or has_audio):
            raise MediaError(f"{path}: no audio or video stream")
        wave = read_audio(str(path)) if has_audio else None
        if has_video:
            video = VideoFrames(str(path))
            # the clip's ten evenly spaced frames, as in the shards; the middle one (index 5) unless all ten
            times = evenly_spaced_times(0.0, video.end_time, 10)
            chosen, _ = video.at(times if all_frames else [times[5]])
            imgs = torch.from_numpy(chosen).permute(0, 3, 1, 2)  # [n, 3, H, W] uint8
            crops = torch.stack([resize_center_crop(img, cfg.image_size) for img in imgs])
            frames = normalize_frames(crops)  # [n, 3, S, S]
            frames = frames.unsqueeze(0) if all_frames else frames  # [1, 10, 3, S, S] or [1, 3, S, S]
    if wave is not None:
        # DC removal over the whole clip, then only the first audio_length frames are computed (as the loader)
        audio = wav_to_fbank(wave, num_mel_bins=cfg.num_mel_bins, target_length=cfg.audio_length).unsqueeze(0)
    return FileInputs(path, audio, frames)
