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
    p.add_argument(
        "--ten-frames",
        action="store_true",
        help="average the probabilities of every frame (data.num_frames: ten, 16 for Sync), each with its audio "
        "window when the model has one (data.audio_window)",
    )
    p.add_argument(
        "--audio-channel",
        choices=["first", "mean"],
        default="first",
        help="audio of stereo files: the first channel (CAV-MAE's preprocessing, default) or (L+R)/2",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.add_argument("--device", default="auto", help="torch device; auto: cuda when available, else cpu")


def class_names(
    cfg: Config, num_classes: int, label_csv: str | None = None, model_dir: Path | None = None
) -> tuple[list[str] | None, str]:
    """(names, where they come from) of a model's classes; (None, why) when no label index is known.

    In order: `label_csv` (the user's); the run's ``data.label_csv``; the label index recorded in the manifests of
    the run's ``data.train_shards`` (what the loader used when ``data.label_csv`` was empty); the bundled AudioSet /
    VGGSound index when the model has 527 / 309 classes. The run's relative paths are taken from the folder it was
    started in (found from `model_dir`, the model directory ``<out_dir>/model``), else from the current one.
    """
    from cavmae.data.labels import LabelIndex, bundled_label_csv_for

    if label_csv:  # asked for: a missing or malformed file is an error
        return LabelIndex.from_csv(label_csv).names, label_csv
    base = training_folder(model_dir, cfg.train.out_dir) if model_dir is not None else None
    run_label_csv = _from(base, cfg.data.label_csv) if cfg.data.label_csv else ""
    if run_label_csv and Path(run_label_csv).is_file():
        return LabelIndex.from_csv(run_label_csv).names, f"{run_label_csv} (the model's data.label_csv)"
    shards = [_from(base, pattern) for pattern in cfg.data.train_shards]
    manifest_index = _manifest_label_index(shards)
    if manifest_index is not None:
        records, manifest = manifest_index
        return LabelIndex.from_records(records).names, f"{manifest} (the label index of its training shards)"
    bundled = bundled_label_csv_for(num_classes)
    if bundled is not None:
        return LabelIndex.from_csv(bundled).names, f"{bundled} (bundled, for {num_classes} classes)"
    if run_label_csv:
        return None, f"the model's data.label_csv {run_label_csv} does not exist"
    if shards:
        return None, f"no manifest beside the model's training shards {', '.join(shards)}"
    return None, "the model records no label index"


def training_folder(model_dir: Path, out_dir: str) -> Path | None:
    """The folder a run was started in: the model directory ``<that folder>/<train.out_dir>/model`` minus its
    relative ``out_dir``; None when the model is not where its run put it (or out_dir is absolute)."""
    parts = Path(out_dir).parts
    run = model_dir.resolve().parent
    if not parts or Path(out_dir).is_absolute() or run.parts[-len(parts) :] != parts:
        return None
    return Path(*run.parts[: -len(parts)])


def _from(base: Path | None, path: str) -> str:
    """A run's path as seen from here: relative ones from the folder the run was started in, when known."""
    if base is None or "://" in path or path.startswith("pipe:") or Path(path).is_absolute():
        return path
    return "::".join(str(base / part.strip()) for part in path.split("::") if part.strip())


def _manifest_label_index(patterns: list[str]) -> tuple[list[dict], Path] | None:
    """The label index (records) shared by the manifests beside the shards of `patterns`, and one manifest's
    path; None when a manifest is missing or the manifests disagree."""
    import glob

    import braceexpand

    from cavmae.data.shards import manifest_path

    parts = [part.strip() for pattern in patterns for part in pattern.split("::") if part.strip()]
    urls = [url for part in parts for url in braceexpand.braceexpand(part)]
    urls = [match for url in urls for match in (sorted(glob.glob(url)) if glob.has_magic(url) else [url])]
    manifests = {manifest_path(url) for url in urls}
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

    from cavmae.config import Config, FinetuneConfig
    from cavmae.data.media import MediaError
    from cavmae.eval.classify import frame_logits
    from cavmae.eval.inputs import load_file
    from cavmae.eval.scoring import windows_for_model
    from cavmae.models.classifier import CAVMAEClassifier
    from cavmae.models.weights import from_pretrained, load_model, model_directory

    path = Path(args.model)
    if path.is_dir():  # our model directory (or a run directory / checkpoint): it brings its run's config
        model, cfg = from_pretrained(path)
        model_dir = model_directory(path)
    else:
        model, model_dir = load_model(path), None
        cfg = Config(model=model.cfg)
        windows_for_model(cfg)  # a bare Sync model sees the audio window of its frame
    finetune = cfg.finetune or FinetuneConfig()  # a public .pth: audio-visual, multi-label
    if not isinstance(model, CAVMAEClassifier):
        log.error("%s is a pre-training model; predict needs a fine-tuned classifier", args.model)
        return 2
    names, source = class_names(cfg, model.cfg.num_classes, args.label_csv, model_dir)
    if names is None:
        log.info("class names unknown (%s): printing class indices; --label-csv FILE names them", source)
    elif len(names) != model.cfg.num_classes:
        log.warning("%s has %d classes, the model %d", source, len(names), model.cfg.num_classes)
    else:
        log.debug("class names from %s", source)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model.eval().to(args.device)
    head = getattr(model, "head", "linear")
    all_frames = (args.ten_frames or head == "attention") and finetune.inputs != "audio"  # attention: whole clips
    failed = 0
    for file in args.files:
        try:
            x = load_file(
                file,
                model.cfg,
                all_frames=all_frames,
                audio_channel=args.audio_channel,
                num_frames=cfg.data.num_frames,
                audio_window=cfg.data.audio_window,
                clip_fbank_frames=cfg.data.clip_fbank_frames,
            )
            mode = choose_mode(finetune.inputs, x.audio is not None, x.frames is not None)
            batch = {"audio": x.audio, "frames": x.frames}
            batch = {k: v.to(args.device) if v is not None else None for k, v in batch.items()}
            windows = all_frames and cfg.data.audio_window > 0 and x.audio is not None and x.frames is not None
            with torch.no_grad():
                if batch["frames"] is not None:
                    logits = frame_logits(model, batch, mode, head, windows)[0]  # [frames, C]
                else:
                    logits = model(batch["audio"], None, mode=mode)  # [1, C]
        except (MediaError, ValueError) as e:
            log.error("%s", e)
            failed += 1
            continue
        probs = logits.float().sigmoid() if finetune.loss == "bce" else logits.float().softmax(-1)
        probs = probs.mean(0)  # the frames' probabilities averaged, as the evaluation's ensemble
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
