"""Evaluating a model on a shard set the paper's way: what ``cavmae evaluate`` and the end of fine-tuning run.

Classification (fine-tuned models): one forward per frame; the single-frame number uses the middle frame (index
5 of 10), the ten-frame number averages the per-frame probabilities (sigmoid for multi-label, softmax for
single-label), as the public fine-tuning script does after training. Metrics: mAP, mAUC, d-prime (multi-label)
or top-1 / top-5 accuracy (single-label). Retrieval (pre-trained models): unmasked modality streams, mean-pooled,
cosine similarity, R@1/5/10 and median rank in both directions (cavmae/eval/retrieval.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from cavmae.eval.classify import frame_logits
from cavmae.eval.metrics import main_metric, retrieval_metrics, score_metrics, to_probabilities

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-frame logits of a set of clips."""

    logits: torch.Tensor  # [N, F, C] float32 (F = 1 for single-frame or audio-only evaluation)
    labels: torch.Tensor  # [N, C]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def cat(parts: list[Predictions]) -> Predictions:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no clips were evaluated (empty shards, or every sample was skipped)")
        frames = {p.logits.shape[1] for p in parts}
        if len(frames) > 1:
            raise ValueError(f"clips with different numbers of frames: {sorted(frames)}")
        return Predictions(
            torch.cat([p.logits for p in parts]),
            torch.cat([p.labels for p in parts]),
            [k for p in parts for k in p.keys],
        )


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[dict],
    mode: str,
    device: torch.device | str | None = None,
    progress: bool = False,
    head: str = "linear",
    windows: bool = False,
) -> Predictions:
    """Per-frame logits of every batch (``audio``, ``frames`` [B, 3, H, W] or [B, F, 3, H, W], ``labels``); with
    the attention head one clip-level logit row per clip (F = 1). ``windows``: each frame has its own audio window
    (data.audio_window > 0; :func:`cavmae.eval.classify.frame_logits`)."""
    model.eval()
    device = device or next(model.parameters()).device
    logits, labels, keys = [], [], []
    for batch in tqdm(batches, desc="evaluating", unit="batch", disable=not progress):
        x = {k: batch[k].to(device) for k in ("audio", "frames") if k in batch}  # audio-only batches: no frames
        logits.append(frame_logits(model, x, mode, head, windows).float().cpu())
        labels.append(batch["labels"].float().cpu())
        keys.extend(batch.get("keys", [f"clip-{len(keys) + i}" for i in range(len(batch["labels"]))]))
    if not keys:
        return Predictions(torch.empty(0, 1, 0), torch.empty(0, 0), [])
    return Predictions(torch.cat(logits), torch.cat(labels), keys)


def middle_frame(num_frames: int) -> int:
    """Index of the frame single-frame evaluation uses: 5 of 10 (the public loader's ``total_frame / 2``)."""
    return num_frames // 2


def classification_report(pred: Predictions, multilabel: bool) -> dict:
    """``single_frame`` metrics (the middle frame) and, with several frames, ``ten_frame`` metrics (per-frame
    probabilities averaged), plus ``metric`` (the main metric's name), ``frames`` and ``clips``."""
    probs = to_probabilities(pred.logits, multilabel)  # [N, F, C]
    frames = probs.shape[1]
    out: dict = {"metric": main_metric(multilabel), "clips": len(pred), "frames": frames}
    out["single_frame"] = score_metrics(probs[:, middle_frame(frames)], pred.labels, multilabel)
    if frames > 1:
        out["ten_frame" if frames == 10 else f"{frames}_frame"] = score_metrics(probs.mean(1), pred.labels, multilabel)
    return out


def infer_multilabel(labels: torch.Tensor) -> bool:
    """Multi-label when any clip has more than one positive label (AudioSet), single-label otherwise."""
    return bool(((labels > 0.5).sum(1) > 1).any())


def evaluate_classifier(
    model: nn.Module,
    batches: Iterable[dict],
    mode: str = "audiovisual",
    multilabel: bool | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    windows: bool = False,
) -> dict:
    """Predict and score: :func:`classification_report`, with ``multilabel`` read off the labels when None;
    ``windows`` as :func:`predict`."""
    pred = predict(model, batches, mode, device, progress, getattr(model, "head", "linear"), windows)
    if not len(pred):
        raise ValueError("no clips were evaluated (empty shards, or every sample was skipped)")
    if multilabel is None:
        multilabel = infer_multilabel(pred.labels)
        log.info("labels look %s-label: scoring with %s", "multi" if multilabel else "single", main_metric(multilabel))
    return {"mode": mode, **classification_report(pred, multilabel)}


def evaluate_retrieval(model: nn.Module, shards: list[str], cfg, device="cpu", chunk: int = 1024) -> dict:
    """R@1/5/10, median and mean rank in both directions (the same numbers as ``cavmae retrieve``), scored by
    ``eval.scoring`` (cavmae/eval/scoring.py)."""
    from cavmae.eval.retrieval import embed_shards
    from cavmae.eval.scoring import retrieval_metrics_scored

    gallery = embed_shards(model, shards, cfg, device)
    if gallery.scoring == "clip":
        metrics = retrieval_metrics(gallery.audio, gallery.video, chunk)
    else:
        metrics = retrieval_metrics_scored(gallery.audio, gallery.video, gallery.scoring, min(chunk, 256))
    metrics["scoring"] = gallery.scoring
    metrics["clips"] = len(gallery)
    return metrics


def format_table(result: dict) -> str:
    """A plain-text table of an evaluation result (classification or retrieval)."""
    rows: list[tuple[str, str, str]] = []
    for section, values in result.items():
        if isinstance(values, dict):
            for k, v in values.items():
                rows.append((section, k, f"{v:.4f}" if isinstance(v, float) else str(v)))
    if not rows:
        return ""
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'':<{w0}}  {'metric':<{w1}}  value"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    head = ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict))
    return (head + "\n" if head else "") + "\n".join(lines)


def evaluate_shards(
    model: nn.Module,
    shards: list[str],
    cfg,
    *,
    mode: str | None = None,
    ten_frame: bool = True,
    multilabel: bool | None = None,
    device: torch.device | str = "cpu",
    chunk: int = 1024,
    progress: bool = True,
) -> dict:
    """Evaluate `model` on `shards`: classification for a fine-tuned model (``mode`` defaults to the run's
    ``finetune.inputs``, audiovisual without one; ``ten_frame`` adds the ten-frame ensemble; ``multilabel`` when
    None is read off the labels), retrieval for a pre-trained one. ``cfg`` supplies the
    data settings (fbank statistics, label CSV, eval.batch_size, data.num_workers)."""
    from dataclasses import replace

    from cavmae.data.loader import loader_for
    from cavmae.eval.classify import AUDIO_ONLY_MODES
    from cavmae.models.weights import model_kind

    cfg = replace(cfg, model=model.cfg)  # input sizes of the model being evaluated
    if model_kind(model) == "pretrain":
        return {"kind": "retrieval", **evaluate_retrieval(model, shards, cfg, device, chunk)}
    mode = mode or (cfg.finetune.inputs if cfg.finetune is not None else "audiovisual")
    frames = "all" if ten_frame and mode not in AUDIO_ONLY_MODES else "middle"
    if getattr(model, "head", "linear") == "attention":
        frames = "all"  # the attention head classifies a whole clip: every frame with its window
    audio_only = mode in AUDIO_ONLY_MODES  # reads audio-only shards too (cavmae.data.loader's rule)
    loader = loader_for(cfg, shards, train=False, frame_mode=frames, rank=0, world_size=1, frames=not audio_only)
    model.to(device)
    windows = cfg.data.audio_window > 0  # every frame with its own audio window
    result = {
        "kind": "classification",
        **evaluate_classifier(model, loader, mode, multilabel, device, progress, windows),
    }
    skipped = {k: v for k, v in loader.errors.counts().items() if v}
    if skipped:
        log.warning("skipped samples while evaluating: %s", skipped)
        result["skipped"] = skipped
    return result
