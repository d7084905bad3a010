"""The demo's held-out evaluation and its plain results: the clips as the models see them, retrieval of the
pre-trained and randomly initialised models, accuracy of the fine-tuned classifiers. The report draws these
results; it knows nothing of how the demo produced them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cavmae.config import Config


@dataclass
class DemoData:
    clips_dir: Path
    train_shards: str  # brace pattern
    heldout_shards: str
    num_train: int
    num_heldout: int
    class_names: list[str]


@dataclass
class HeldOut:
    """The held-out clips as the models see them (middle frame), in shard order."""

    audio: torch.Tensor  # [N, T, F] normalised fbank
    frames: torch.Tensor  # [N, 3, S, S] ImageNet-normalised
    labels: torch.Tensor  # [N] class index
    keys: list[str]

    def batches(self, size: int = 64) -> Iterator[dict]:
        for i in range(0, len(self.keys), size):
            yield {
                "audio": self.audio[i : i + size],
                "frames": self.frames[i : i + size],
                "keys": self.keys[i : i + size],
            }


def load_heldout(cfg: Config, shards: str) -> HeldOut:
    from cavmae.data.loader import loader_for

    loader = loader_for(cfg, shards, train=False, frame_mode="middle", rank=0, world_size=1)
    batches = list(loader)
    return HeldOut(
        torch.cat([b["audio"] for b in batches]),
        torch.cat([b["frames"] for b in batches]),
        torch.cat([b["labels"] for b in batches]).argmax(dim=1),
        [k for b in batches for k in b["keys"]],
    )


@dataclass
class RetrievalResult:
    metrics: dict[str, dict[str, float]]  # direction -> R@1/5/10, median / mean rank
    similarity: torch.Tensor  # [N, N] cosine similarity, rows = audio clips, columns = video clips
    embeddings: object = None  # the cavmae.eval.retrieval.EmbeddingSet scored (for the retrieval gallery)


def evaluate_retrieval(model: torch.nn.Module, held: HeldOut, desc: str) -> RetrievalResult:
    from cavmae.eval.metrics import retrieval_metrics
    from cavmae.eval.retrieval import embed_batches

    emb = embed_batches(model, tqdm(list(held.batches()), desc=f"embedding ({desc})", leave=False), progress=False)
    return RetrievalResult(retrieval_metrics(emb.audio, emb.video), emb.audio @ emb.video.t(), emb)


@dataclass
class ClassificationResult:
    top1: float  # held-out accuracy, percent
    per_class: torch.Tensor  # [C] percent (NaN for classes without held-out clips)
    curve: list[tuple[int, float]]  # (step, held-out top-1) logged during fine-tuning


@torch.no_grad()
def evaluate_classifier(run_dir: Path, held: HeldOut) -> ClassificationResult:
    from cavmae.eval.metrics import classification_metrics, per_class_accuracy
    from cavmae.models.weights import load_model

    model = load_model(run_dir / "model").eval()
    logits = torch.cat([model(b["audio"], b["frames"], mode="audiovisual") for b in held.batches()])  # [N, C]
    top1 = classification_metrics(logits, held.labels, multilabel=False)["top1"]
    curve = [
        (r["step"], r["val/top1"])
        for r in map(json.loads, (run_dir / "val_metrics.jsonl").read_text().splitlines())
        if "val/top1" in r
    ]
    return ClassificationResult(top1, per_class_accuracy(logits, held.labels), curve)


@dataclass
class SeedResult:
    """One training replica on the demo's data: pre-training, retrieval, the two fine-tuning runs."""

    seed: int
    runs_dir: Path  # runs/seed<N>/{pretrain,finetune_pretrained,finetune_scratch}
    retrieval: dict[str, RetrievalResult]
    classification: dict[str, ClassificationResult]
    timings: dict[str, float]
