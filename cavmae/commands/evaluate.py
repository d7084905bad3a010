"""``cavmae evaluate``: score a model on a shard set, the paper's way, without training.

cavmae evaluate --model runs/as20k/model --shards 'as-eval-{000000..000099}.tar' --out as20k_eval.json
cavmae evaluate --model cav-mae-ft-as20k.pth --shards ... --mode missing_audio --frames middle
cavmae evaluate --model runs/base/model --shards 'eval-{000000..000009}.tar'     # pre-training: retrieval

A fine-tuned model (ours or a public .pth) gives classification metrics (mAP / mAUC / d-prime, or top-1 / top-5)
at the middle frame and with the ten-frame ensemble; a pre-trained one gives retrieval R@1/5/10 and median rank
in both directions (the same numbers as ``cavmae retrieve``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ["auto", "audiovisual", "audio", "video", "missing_video", "missing_audio"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="our model directory or a public CAV-MAE .pth")
    p.add_argument("--shards", nargs="+", required=True, help="shards to evaluate on (brace patterns allowed)")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="classifier inputs; auto: the run's finetune.inputs (audiovisual for a public .pth). missing_video / "
        "missing_audio: an audio-visual model tested with one modality",
    )
    p.add_argument(
        "--frames",
        choices=["ten", "middle"],
        default="ten",
        help="ten: the middle frame AND the ten-frame ensemble (probabilities averaged); middle: frame 5 only",
    )
    p.add_argument(
        "--label-kind",
        choices=["auto", "multi", "single"],
        default="auto",
        help="multi: mAP / mAUC / d-prime (AudioSet); single: top-1 / top-5 (VGGSound); auto: the run's "
        "finetune.loss, or for a public .pth multi when any clip has several labels",
    )
    p.add_argument("--label-csv", help="label index CSV (index,mid,display_name) mapping the shards' labels")
    p.add_argument("--out", help="write the result as JSON here")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=1024, help="retrieval queries scored at once (chunk x N floats)")
    p.add_argument(
        "--scoring",
        choices=["auto", "clip", "diagonal_mean", "diagonal_max", "mean", "max"],
        help="retrieval clip scores (eval.scoring; default: the run's, else auto): clip = one embedding per clip; "
        "per-frame pairs as CAV-MAE Sync (auto = diagonal_mean for a model with global tokens on per-frame data)",
    )
    p.add_argument("--device", default="auto", help="torch device; auto: cuda when available, else cpu")


def load_with_config(path: str):
    """(model, Config): a run's model directory brings its config (data settings, finetune.inputs / loss)."""
    from cavmae.config import Config
    from cavmae.models.weights import CONFIG, WEIGHTS, from_pretrained, load_model

    p = Path(path)
    if p.is_dir() or (p.name == WEIGHTS and (p.parent / CONFIG).is_file()):
        model, cfg = from_pretrained(p if p.is_dir() else p.parent)
        return model, cfg, True
    from cavmae.eval.scoring import windows_for_model

    model = load_model(p)
    cfg = Config(model=model.cfg)
    windows_for_model(cfg)  # a Sync model: every frame with its window (auto -> diagonal_mean)
    return model, cfg, False


def run(args: argparse.Namespace) -> int:
    """Errors escape to cavmae.cli: a missing or unreadable model, shard or label index is exit 1."""
    import torch

    from cavmae.data.media import MediaError
    from cavmae.eval.evaluate import evaluate_shards, format_table

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    from cavmae.eval.scoring import frames_from_shards

    model, cfg, from_run = load_with_config(args.model)
    cfg.data.num_workers, cfg.eval.batch_size = args.num_workers, args.batch_size
    frames_from_shards(cfg, args.shards)  # e.g. 16-frame Sync shards, whatever the run trained on
    if args.label_csv:
        cfg.data.label_csv = args.label_csv
    if args.scoring:
        cfg.eval.scoring = args.scoring
    mode = None if args.mode == "auto" else args.mode
    if mode is None and not from_run:
        mode = "audiovisual"
    multilabel = {"multi": True, "single": False}.get(args.label_kind)
    if multilabel is None and from_run and cfg.finetune is not None:
        multilabel = cfg.finetune.loss == "bce"
    try:
        result = evaluate_shards(
            model,
            args.shards,
            cfg,
            mode=mode,
            ten_frame=args.frames == "ten",
            multilabel=multilabel,
            device=args.device,
            chunk=args.chunk,
        )
    except MediaError as e:
        log.error("%s", e)
        return 1
    result["model"] = str(args.model)
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        log.info("wrote %s", args.out)
    return 0
