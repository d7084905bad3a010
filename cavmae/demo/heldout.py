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
    num_frames: int = 10  # frames per clip in the shards (16 with --recipe sync)


@dataclass
class HeldOut:
    """The held-out clips as the models see them (middle frame), in shard order; with audio windows (CAV-MAE Sync)
    also every frame with its own window, which per-frame retrieval scores."""

    audio: torch.Tensor  # [N, T, F] normalised fbank (with windows: the middle frame's window)
    frames: torch.Tensor  # [N, 3, S, S] ImageNet-normalised
    labels: torch.Tensor  # [N] class index
    keys: list[str]
    frame_audio: torch.Tensor | None = None  # [N, K, T, F] frame k's window at [:, k] (data.audio_window > 0)
    all_frames: torch.Tensor | None = None  # [N, K, 3, S, S] every frame, in time order (with frame_audio)

    def batches(self, size: int = 64, per_frame: bool = False) -> Iterator[dict]:
        """Batches of ``size`` clips: the middle frame with its audio, or (``per_frame``) every frame with its
        window."""
        audio, frames = (self.frame_audio, self.all_frames) if per_frame else (self.audio, self.frames)
        for i in range(0, len(self.keys), size):
            yield {"audio": audio[i : i + size], "frames": frames[i : i + size], "keys": self.keys[i : i + size]}


def load_heldout(cfg: Config, shards: str) -> HeldOut:
    """The clips of ``shards`` as ``cfg``'s model sees them; with ``data.audio_window`` > 0 every frame with its
    audio window too (the middle frame and its window are then the clip's one pair)."""
    from cavmae.data.loader import loader_for

    windows = cfg.data.audio_window > 0
    loader = loader_for(cfg, shards, train=False, frame_mode="all" if windows else "middle", rank=0, world_size=1)
    batches = list(loader)
    audio, frames = torch.cat([b["audio"] for b in batches]), torch.cat([b["frames"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches]).argmax(dim=1)
    keys = [k for b in batches for k in b["keys"]]
    if not windows:
        return HeldOut(audio, frames, labels, keys)
    middle = cfg.data.num_frames // 2  # the frame (and window) a single-frame loader gives: frame_mode="middle"
    return HeldOut(audio[:, middle], frames[:, middle], labels, keys, audio, frames)


INSTANCE_KEYS = {"R@1": "r1", "R@5": "r5", "R@10": "r10", "median_rank": "median_rank"}  # metrics.py -> JSON
CLASS_KEYS = {"P@1": "p1", "P@5": "p5", "P@10": "p10", "mAP": "map"}


def score_retrieval(audio: torch.Tensor, video: torch.Tensor, labels: torch.Tensor) -> dict[str, dict]:
    """Both levels in both directions for paired embeddings [N, D], scored by raw dot products (normalise first
    for cosine): ``{"instance": {"v2a"|"a2v": {r1, r5, r10, median_rank}}, "class": {"v2a"|"a2v": {p1, p5, p10,
    map}}}`` (percent, ranks as numbers; :mod:`cavmae.eval.metrics` defines them). v2a: video queries, audio
    gallery."""
    from cavmae.eval.metrics import class_retrieval_metrics, rank_summary, true_match_ranks

    out: dict[str, dict] = {"instance": {}, "class": {}}
    for direction, (q, g) in {"v2a": (video, audio), "a2v": (audio, video)}.items():
        q, g = q.float(), g.float()
        ranks = rank_summary(true_match_ranks(q, g))
        out["instance"][direction] = {new: ranks[old] for old, new in INSTANCE_KEYS.items()}
        cls = class_retrieval_metrics(q, g, labels)
        out["class"][direction] = {new: cls[old] for old, new in CLASS_KEYS.items()}
    return out


def reference_levels(labels: torch.Tensor) -> dict[str, dict]:
    """Chance of both levels and the class-only ceiling of instance retrieval on clips with these labels, in the
    layout of :func:`score_retrieval` (both directions hold the same numbers: they depend on the labels alone)."""
    from cavmae.eval.metrics import class_chance, class_only_ceiling, instance_chance

    inst, cls, ceiling = instance_chance(labels.shape[0]), class_chance(labels), class_only_ceiling(labels)
    both = ("v2a", "a2v")
    return {
        "chance": {
            "instance": {d: {new: inst[old] for old, new in INSTANCE_KEYS.items()} for d in both},
            "class": {d: {new: cls[old] for old, new in CLASS_KEYS.items()} for d in both},
        },
        "class_only_ceiling": {
            "instance": {d: {new: ceiling[old] for old, new in INSTANCE_KEYS.items()} for d in both}
        },
    }


@dataclass
class RetrievalResult:
    metrics: dict[str, dict]  # level -> direction -> metric (:func:`score_retrieval`)
    similarity: torch.Tensor  # [N, N] cosine similarity, rows = audio clips, columns = video clips
    embeddings: object = None  # the cavmae.eval.retrieval.EmbeddingSet scored (for the retrieval gallery)


def evaluate_retrieval(model: torch.nn.Module, held: HeldOut, desc: str) -> RetrievalResult:
    """Held-out retrieval of ``model`` with one embedding per clip (the middle frame and its audio)."""
    from cavmae.eval.retrieval import embed_batches

    emb = embed_batches(model, tqdm(list(held.batches()), desc=f"embedding ({desc})", leave=False), progress=False)
    # EmbeddingSet holds L2-normalised embeddings: dot products are cosines
    return RetrievalResult(score_retrieval(emb.audio, emb.video, held.labels), emb.audio @ emb.video.t(), emb)


def evaluate_frame_retrieval(model: torch.nn.Module, held: HeldOut, desc: str) -> RetrievalResult:
    """Held-out retrieval of ``model`` scored per frame (CAV-MAE Sync's diagonal_mean, cavmae/eval/scoring.py):
    every frame k with its audio window (``held`` loaded with ``data.audio_window`` > 0), a clip's score the mean
    over k of cos(a_k, v_k), computed as the dot product of the [K*D] concatenations of the frames' normalised
    embeddings, scaled by 1 / sqrt(K)."""
    from cavmae.eval.retrieval import embed_batches

    if held.frame_audio is None:
        raise ValueError("per-frame retrieval needs every frame with its audio window (data.audio_window > 0)")
    batches = tqdm(list(held.batches(per_frame=True)), desc=f"embedding every frame ({desc})", leave=False)
    per_frame = embed_batches(model, batches, progress=False, scoring="diagonal_mean", windows=True)  # [N, K, D]
    scale = per_frame.audio.shape[1] ** -0.5
    audio, video = per_frame.audio.flatten(1) * scale, per_frame.video.flatten(1) * scale  # [N, K*D]
    return RetrievalResult(score_retrieval(audio, video, held.labels), audio @ video.t(), per_frame)


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
