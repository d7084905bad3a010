"""``cavmae predict FILE... --model M``: top-k classes of raw video / audio files with a fine-tuned model.

The mode follows the inputs: both streams -> the model's fine-tuning mode (audiovisual by default); one stream
missing -> the paper's missing-modality mode for an audio-visual model (or the single-modality mode it was
fine-tuned for). Class names come from --labels (index,mid,display_name), the model's data.label_csv, or the bundled
AudioSet / VGGSound index when the model has 527 / 309 classes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="video (mp4, mkv, ...) or audio (wav, flac, mp3) files")
    p.add_argument("--model", required=True, help="fine-tuned model: our model directory or a public .pth")
    p.add_argument(
        "--labels",
        help="label index CSV (index,mid,display_name); default: the model's data.label_csv, else the bundled "
        "AudioSet (527 classes) or VGGSound (309) index when the model has that many classes",
    )
    p.add_argument("--top-k", type=int, default=5, help="classes printed per file")
    p.add_argument("--ten-frames", action="store_true", help="average the logits of the ten frames")
    p.add_argument(
        "--audio-channel",
        choices=["first", "mean"],
        default="first",
        help="audio of stereo files: the first channel (CAV-MAE's preprocessing, default) or (L+R)/2",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.add_argument("--device", default="auto", help="torch device; auto: cuda when available, else cpu")


def choose_mode(trained_mode: str, has_audio: bool, has_video: bool) -> str:
    if has_audio and has_video:
        return trained_mode
    if trained_mode == "audiovisual":
        return "missing_video" if has_audio else "missing_audio"
    needed = {"audio": has_audio, "video": has_video}[trained_mode]
    if not needed:
        raise ValueError(f"the model was fine-tuned on {trained_mode} alone and the file has no {trained_mode}")
    return trained_mode


def run(args: argparse.Namespace) -> int:
    import torch

    from cavmae.config import Config, FinetuneConfig
    from cavmae.data.labels import LabelIndex, bundled_label_csv_for
    from cavmae.data.media import MediaError
    from cavmae.eval.classify import classify
    from cavmae.eval.inputs import load_file
    from cavmae.models.classifier import CAVMAEClassifier
    from cavmae.models.weights import CheckpointError, from_pretrained, load_model

    try:
        path = Path(args.model)
        cfg = from_pretrained(path)[1] if path.is_dir() else Config()
        finetune = cfg.finetune or FinetuneConfig()  # a public .pth: audio-visual, multi-label
        model = load_model(path)
        if not isinstance(model, CAVMAEClassifier):
            log.error("%s is a pre-training model; predict needs a fine-tuned classifier", args.model)
            return 2
        label_csv = args.labels or cfg.data.label_csv or bundled_label_csv_for(model.cfg.num_classes)
        names = LabelIndex.from_csv(label_csv).names if label_csv else None
        if names is not None and len(names) != model.cfg.num_classes:
            log.warning("%s has %d classes, the model %d", label_csv, len(names), model.cfg.num_classes)
    except (CheckpointError, ValueError, OSError) as e:
        log.error("%s", e)
        return 2
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model.eval().to(args.device)
    failed = 0
    for file in args.files:
        try:
            x = load_file(file, model.cfg, all_frames=args.ten_frames, audio_channel=args.audio_channel)
            mode = choose_mode(finetune.inputs, x.audio is not None, x.frames is not None)
            batch = {"audio": x.audio, "frames": x.frames}
            batch = {k: v.to(args.device) if v is not None else None for k, v in batch.items()}
            with torch.no_grad():
                if batch["frames"] is not None:
                    logits = classify(model, batch, mode)[0]
                else:
                    logits = model(batch["audio"], None, mode=mode)[0]
        except (MediaError, ValueError) as e:
            log.error("%s", e)
            failed += 1
            continue
        probs = logits.float().sigmoid() if finetune.loss == "bce" else logits.float().softmax(-1)
        scores, idx = probs.topk(min(args.top_k, probs.numel()))
        top = [
            {"class": int(i), "name": names[i] if names and i < len(names) else str(int(i)), "score": float(s)}
            for s, i in zip(scores, idx)
        ]
        if args.json:
            print(json.dumps({"file": str(file), "mode": mode, "inputs": x.modalities, "top": top}))
        else:
            print(f"{file} ({x.modalities}, mode {mode})")
            for t in top:
                print(f"  {t['score']:.4f}  {t['name']}")
    return 1 if failed else 0
