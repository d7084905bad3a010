"""Model inputs from raw media files (predict, retrieval queries): the same features as the shard loader.

A video file gives its audio track and frames chosen by timestamp; an audio file (wav, flac, mp3, ...) gives audio
only; a video without an audio stream gives frames only. Audio of every kind of file goes through the same reader as
``cavmae prepare`` (:func:`cavmae.data.media.read_audio`: 16 kHz, first channel by default), so a sound gives the
same features from a .wav, an .mkv or a shard. The fbank is the loader's
(as in training: Kaldi fbank, padded / cut to ``audio_length`` frames, normalised), the frames are resized
(shorter side, bicubic), centre-cropped and ImageNet-normalised exactly as in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cavmae.config import ModelConfig
from cavmae.data.fbank import wav_to_fbank
from cavmae.data.media import AudioChannel, MediaError, VideoFrames, evenly_spaced_times, probe, read_audio
from cavmae.data.samples import normalize_frames, resize_center_crop
from cavmae.data.windows import CLIP_FBANK_FRAMES, frame_audio_window

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"}


@dataclass
class FileInputs:
    path: Path
    audio: torch.Tensor | None  # [1, audio_length, num_mel_bins], normalised fbank
    frames: torch.Tensor | None  # [1, 3, S, S] (middle frame) or [1, 10, 3, S, S] (all ten)

    @property
    def modalities(self) -> str:
        return "+".join(m for m, x in (("audio", self.audio), ("video", self.frames)) if x is not None)


def load_file(
    path: str | Path,
    cfg: ModelConfig,
    all_frames: bool = False,
    audio_channel: AudioChannel = "first",
    num_frames: int = 10,
    audio_window: int = 0,
    clip_fbank_frames: int = CLIP_FBANK_FRAMES,
) -> FileInputs:
    """Decode `path` into model inputs. Raises MediaError (naming the file) when it holds neither stream.

    audio_channel: "first" (CAV-MAE's preprocessing, default) or "mean" ((L+R)/2), as ``cavmae prepare`` stores it.
    num_frames: the clip's evenly spaced frames (data.num_frames); the middle one, or all with `all_frames`.
    audio_window (data.audio_window, CAV-MAE Sync): the audio is the window of each chosen frame, cut from the clip
    padded to `clip_fbank_frames` (data.clip_fbank_frames) as the loader does: [1, L, F] for the middle frame,
    [1, N, L, F] with `all_frames` and frames (an audio-only file: the middle frame's window).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    audio = frames = None
    if path.suffix.lower() in AUDIO_SUFFIXES:
        try:
            wave = read_audio(str(path), channel=audio_channel)
        except MediaError as e:
            raise MediaError(f"{path}: {e.reason}") from e
    else:
        try:
            has_video, has_audio = probe(str(path))
        except MediaError as e:
            raise MediaError(f"{path}: {e}") from e
        if not (has_video or has_audio):
            raise MediaError(f"{path}: no audio or video stream")
        try:
            wave = read_audio(str(path), channel=audio_channel) if has_audio else None
            video = VideoFrames(str(path)) if has_video else None
        except MediaError as e:
            raise MediaError(f"{path}: {e.reason}") from e
        if video is not None:
            # the clip's N evenly spaced frames, as in the shards; the middle one (index N // 2) unless all
            times = evenly_spaced_times(0.0, video.end_time, num_frames)
            chosen, _ = video.at(times if all_frames else [times[num_frames // 2]])
            imgs = torch.from_numpy(chosen).permute(0, 3, 1, 2)  # [n, 3, H, W] uint8
            crops = torch.stack([resize_center_crop(img, cfg.image_size) for img in imgs])
            frames = normalize_frames(crops)  # [n, 3, S, S]
            frames = frames.unsqueeze(0) if all_frames else frames  # [1, N, 3, S, S] or [1, 3, S, S]
    if wave is not None and audio_window:
        # the padded clip the windows are placed in (data.clip_fbank_frames), as the loader does: [S, F]
        clip = wav_to_fbank(wave, num_mel_bins=cfg.num_mel_bins, target_length=clip_fbank_frames)
        ks = range(num_frames) if all_frames and frames is not None else [num_frames // 2]
        starts = [frame_audio_window(k, num_frames, clip_fbank_frames, audio_window) for k in ks]
        windows = torch.stack([clip[s : s + audio_window] for s in starts])  # [n, L, F]
        audio = windows.unsqueeze(0) if all_frames and frames is not None else windows  # [1, N, L, F] or [1, L, F]
    elif wave is not None:
        # DC removal over the whole clip, then only the first audio_length frames are computed (as the loader)
        audio = wav_to_fbank(wave, num_mel_bins=cfg.num_mel_bins, target_length=cfg.audio_length).unsqueeze(0)
    return FileInputs(path, audio, frames)
