"""Audio <-> video retrieval: embeddings of a shard set, saved with their keys, and queries against them.

Embeddings follow the paper's protocol (arXiv 2210.07839): unmasked forward, modality-specific streams,
mean-pooled; they are L2-normalised here so scores are cosine similarities. A set is saved as one safetensors
file (``audio`` [N, D], ``video`` [N, D]) whose metadata holds the keys, so 100,000 clips cost 2 x 100,000 x D
floats on disk and the ranks are computed in chunks (cavmae/eval/metrics.py). An audio-only set (``cavmae embed
--inputs audio``: audio features of audio datasets) has no ``video`` tensor and serves no cross-modal retrieval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from cavmae.config import Config

log = logging.getLogger(__name__)


@dataclass
class EmbeddingSet:
    keys: list[str]
    audio: torch.Tensor  # [C, D] L2-normalised; [C, N, D] per frame (normalised per frame) when scoring is per-frame
    video: torch.Tensor | None  # like audio; None for an audio-only set (cavmae embed --inputs audio)
    scoring: str = "clip"  # how clips are scored (cavmae/eval/scoring.py): clip, or a per-frame strategy

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, key: str) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"key {key!r} is not in the embedding set ({len(self.keys)} clips)") from None

    @property
    def modalities(self) -> list[str]:
        return ["audio"] if self.video is None else ["audio", "video"]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {"audio": self.audio.contiguous()}
        if self.video is not None:
            tensors["video"] = self.video.contiguous()
        save_file(
            tensors,
            str(tmp),
            metadata={
                "keys": json.dumps(self.keys),
                "scoring": self.scoring,
                "modalities": json.dumps(self.modalities),
            },
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingSet:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = json.loads(meta["keys"])
                names = set(f.keys())  # no "video": an audio-only set (embed --inputs audio)
                video = f.get_tensor("video") if "video" in names else None
                return cls(keys, f.get_tensor("audio"), video, meta.get("scoring", "clip"))
        except Exception as e:
            raise ValueError(f"{path} is not an embedding file written by cavmae retrieve: {e}") from e


def embed_frames(model, audio: torch.Tensor, frames: torch.Tensor, windows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame embeddings ([B, N, D] each, normalised per frame) of frames [B, N, 3, H, W] with their audio: the
    window of each frame [B, N, L, F] when ``windows`` (data.audio_window > 0), else the whole clip [B, L, F],
    embedded once and shared by the N frames. Any model's ``embed`` works per frame."""
    batch, count = frames.shape[:2]
    if windows:
        a, v = model.embed(audio.flatten(0, 1), frames.flatten(0, 1))  # [B*N, D] each
        a, v = a.view(batch, count, -1), v.view(batch, count, -1)
    else:
        a_clip, _ = model.embed(audio, frames[:, 0])  # [B, D]: the same audio for every frame
        v = torch.stack([model.embed(audio, frames[:, k])[1] for k in range(count)], dim=1)  # [B, N, D]
        a = a_clip[:, None].expand(-1, count, -1)
    return F.normalize(a.float(), dim=-1), F.normalize(v.float(), dim=-1)


@torch.no_grad()
def embed_batches(
    model,
    batches: Iterable[dict],
    device: torch.device | str = "cpu",
    progress: bool = True,
    scoring: str = "clip",
    windows: bool = False,
):
    """Embed every batch -> :class:`EmbeddingSet`. ``scoring="clip"``: batches hold ``audio``, ``frames``
    [B, 3, S, S], ``keys``; a per-frame scoring: frames [B, N, 3, S, S] and audio as :func:`embed_frames` takes it
    (``windows``: one audio window per frame)."""
    model.eval().to(device)
    keys, audio, video = [], [], []
    for batch in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
        if scoring == "clip":
            a, v = model.embed(batch["audio"].to(device), batch["frames"].to(device))
        else:
            a, v = embed_frames(model, batch["audio"].to(device), batch["frames"].to(device), windows)
        audio.append(F.normalize(a.float(), dim=-1).cpu())
        video.append(F.normalize(v.float(), dim=-1).cpu())
        keys.extend(batch["keys"])
    if not keys:
        raise ValueError("no clips to embed (empty shards, or every sample was skipped)")
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys among the embedded clips: the shard list names a shard twice?")
    return EmbeddingSet(keys, torch.cat(audio), torch.cat(video), scoring)


def embed_shards(model, shards: list[str], cfg: Config, device="cpu", progress: bool = True) -> EmbeddingSet:
    """Embeddings of every clip in `shards`, in shard order: the middle frame with ``clip`` scoring, every frame
    (each with its audio window when data.audio_window > 0) with a per-frame one (``eval.scoring``, resolved by
    :func:`cavmae.eval.scoring.resolve_scoring`)."""
    from cavmae.data.loader import loader_for
    from cavmae.eval.scoring import resolve_scoring

    scoring = resolve_scoring(cfg.eval.scoring, model.cfg, cfg.data)
    cfg = replace(cfg, model=model.cfg)  # input sizes of the model being evaluated
    frames = "middle" if scoring == "clip" else "all"
    loader = loader_for(cfg, shards, train=False, frame_mode=frames, rank=0, world_size=1, frames=True)
    windows = cfg.data.audio_window > 0
    out = embed_batches(model, loader, device, progress, scoring, windows)
    skipped = {k: v for k, v in loader.errors.counts().items() if v}
    if skipped:
        log.warning("skipped samples while embedding: %s", skipped)
    return out
