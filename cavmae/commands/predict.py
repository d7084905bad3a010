"""``cavmae predict FILE... --model M``: top-k classes of raw video / audio files with a fine-tuned model.

The mode follows the inputs: both streams -> the model's fine-tuning mode (audiovisual by default); one stream
missing -> the paper's missing-modality mode for an audio-visual model (or the single-modality mode it was
fine-tuned for). Class names come from the label index the model was trained with (see :func:`class_names`);
indices are printed only when no index is known. File names that begin with '-' go after ``--``:
``cavmae predict --model M -- -0DLPzsiXXE_30000.mp4``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cavmae.config import Config

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        help="video (mp4, mkv, ...) or audio (wav, flac, mp3) files; after '--' when one begins with '-'",
    )
    p.add_argument("--model", required=True, help="fine-tuned model: our model directory or a public .pth")
    p.add_argument(
        "--label-csv",
        help="label index CSV (index,mid,display_name); default: the one the model was trained with (its "
        "data.label_csv, else the label index in its training shards' manifests), else the bundled AudioSet (527 "
        "classes) or VGGSound (309) index when the model has that many classes",
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


def class_names(cfg: Config, num_classes: int, label_csv: str | None = None) -> tuple[list[str] | None, str]:
    """(names, where they come from) of a model's classes; (None, why) when no label index is known.

    In order: `label_csv` (the user's); the run's ``data.label_csv``; the label index recorded in the manifests of
    the run's ``data.train_shards`` (what the loader used when ``data.label_csv`` was empty); the bundled AudioSet /
    VGGSound index when the model has 527 / 309 classes. A model directory carries its run's config, so its shards
    and label index are found while they are where training read them (paths relative to where it ran).
    """
    from cavmae.data.labels import LabelIndex, bundled_label_csv_for

    if label_csv:  # asked for: a missing or malformed file is an error
        return LabelIndex.from_csv(label_csv).names, label_csv
    if cfg.data.label_csv and Path(cfg.data.label_csv).is_file():
        return LabelIndex.from_csv(cfg.data.label_csv).names, f"{cfg.data.label_csv} (the model's data.label_csv)"
    manifest_index = _manifest_label_index(cfg.data.train_shards)
    if manifest_index is not None:
        records, manifest = manifest_index
        return LabelIndex.from_records(records).names, f"{manifest} (the label index of its training shards)"
    bundled = bundled_label_csv_for(num_classes)
    if bundled is not None:
        return LabelIndex.from_csv(bundled).names, f"{bundled} (bundled, for {num_classes} classes)"
    if cfg.data.label_csv:
        return None, f"{cfg.data.label_csv} (the model's data.label_csv) does not exist here"
    if cfg.data.train_shards:
        return None, f"no manifest beside the model's training shards {', '.join(cfg.data.train_shards)}"
    return None, "the model records no label index"


def _manifest_label_index(patterns: list[str]) -> tuple[list[dict], Path] | None:
    """The label index (records) shared by the manifests beside the shards of `patterns`, and one manifest's
    path; None when a manifest is missing or the manifests disagree."""
    import braceexpand

    from cavmae.data.shards import manifest_path

    manifests = {
        manifest_path(url)
        for pattern in patterns
        for part in pattern.split("::")
        for url in braceexpand.braceexpand(part.strip())
        if part.strip()
    }
    if not manifests or None in manifests or not all(m.is_file() for m in manifests):
        return None
    indices = [json.loads(m.read_text()).get("label_index") or [] for m in sorted(manifests)]
    if not indices[0] or any(i != indices[0] for i in indices):
        return None
    return indices[0], sorted(manifests)[0]


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
    """A missing or unreadable model or label index is exit 1 (raised to cavmae.cli); a pre-training model, 2;
    files that cannot be read are named and the others still answered, then exit 1."""
    import torch

    from cavmae.config import Config
    from cavmae.data.media import MediaError
    from cavmae.eval.classify import classify
    from cavmae.eval.inputs import load_file
    from cavmae.models.classifier import CAVMAEClassifier
    from cavmae.models.weights import from_pretrained, load_model

    path = Path(args.model)
    cfg = from_pretrained(path)[1] if path.is_dir() else Config()
    model = load_model(path)
    if not isinstance(model, CAVMAEClassifier):
        log.error("%s is a pre-training model; predict needs a fine-tuned classifier", args.model)
        return 2
    names, source = class_names(cfg, model.cfg.num_classes, args.label_csv)
    if names is None:
        log.info("class names unknown (%s): printing class indices; --label-csv FILE names them", source)
    elif len(names) != model.cfg.num_classes:
        log.warning("%s has %d classes, the model %d", source, len(names), model.cfg.num_classes)
    else:
        log.debug("class names from %s", source)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model.eval().to(args.device)
    failed = 0
    for file in args.files:
        try:
            x = load_file(file, model.cfg, all_frames=args.ten_frames, audio_channel=args.audio_channel)
            mode = choose_mode(cfg.train.ft_mode, x.audio is not None, x.frames is not None)
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
        probs = logits.float().sigmoid() if cfg.train.ft_loss == "bce" else logits.float().softmax(-1)
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
