"""Audio <-> video retrieval: embeddings of a shard set, saved with their keys, and queries against them.

Embeddings follow the paper's protocol (arXiv 2210.07839): unmasked forward, modality-specific streams,
mean-pooled; they are L2-normalised here so scores are cosine similarities. A set is saved as one safetensors
file (``audio`` [N, D], ``video`` [N, D]) whose metadata holds the keys, so 100,000 clips cost 2 x 100,000 x D
floats on disk and the ranks are computed in chunks (cavmae/eval/metrics.py).
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
    audio: torch.Tensor  # [N, D] L2-normalised
    video: torch.Tensor  # [N, D] L2-normalised

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, key: str) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"key {key!r} is not in the embedding set ({len(self.keys)} clips)") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {"audio": self.audio.contiguous(), "video": self.video.contiguous()},
            str(tmp),
            metadata={"keys": json.dumps(self.keys)},
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingSet:
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = json.loads((f.metadata() or {})["keys"])
                return cls(keys, f.get_tensor("audio"), f.get_tensor("video"))
        except Exception as e:
            raise ValueError(f"{path} is not an embedding file written by cavmae retrieve: {e}") from e


@torch.no_grad()
def embed_batches(model, batches: Iterable[dict], device: torch.device | str = "cpu", progress: bool = True):
    """Embed every batch (dicts with ``audio``, ``frames`` [B, 3, S, S], ``keys``) -> :class:`EmbeddingSet`."""
    model.eval().to(device)
    keys, audio, video = [], [], []
    for batch in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
        a, v = model.embed(batch["audio"].to(device), batch["frames"].to(device))
        audio.append(F.normalize(a.float(), dim=-1).cpu())
        video.append(F.normalize(v.float(), dim=-1).cpu())
        keys.extend(batch["keys"])
    if not keys:
        raise ValueError("no clips to embed (empty shards, or every sample was skipped)")
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys among the embedded clips: the shard list names a shard twice?")
    return EmbeddingSet(keys, torch.cat(audio), torch.cat(video))


def embed_shards(model, shards: list[str], cfg: Config, device="cpu", progress: bool = True) -> EmbeddingSet:
    """Embeddings of every clip in `shards` (the middle frame), in shard order."""
    from cavmae.data.loader import loader_for

    cfg = replace(cfg, model=model.cfg)  # input sizes of the model being evaluated
    loader = loader_for(cfg, shards, train=False, frame_mode="middle", rank=0, world_size=1, frames=True)
    out = embed_batches(model, loader, device, progress)
    skipped = {k: v for k, v in loader.errors.counts().items() if v}
    if skipped:
        log.warning("skipped samples while embedding: %s", skipped)
    return out
