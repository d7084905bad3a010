"""``cavmae embed``: a shard set -> embedding shards (see cavmae.eval.embed); resumable; Accelerate for many GPUs.

cavmae embed --model runs/base/model --shards 'eval-{000000..000099}.tar' --out emb/eval
accelerate launch --multi_gpu -m cavmae.cli embed --model runs/base/model --shards ... --out emb/eval
cavmae embed --inputs audio --model runs/base/model --shards 'esc50/data-{000000..000003}.tar' --out emb/esc50
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="pre-trained model: our model directory or a public CAV-MAE .pth")
    p.add_argument("--shards", nargs="+", required=True, help="shards to embed (brace patterns allowed)")
    p.add_argument("--out", required=True, help="output folder: emb-<shard>.safetensors + embeddings.json")
    p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="storage precision (default fp16)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2, help="loader processes per GPU / process")
    p.add_argument(
        "--scoring",
        choices=["auto", "clip", "diagonal_mean", "diagonal_max", "mean", "max"],
        default="auto",
        help="what the embeddings serve (eval.scoring): clip = one vector per clip (the middle frame); a per-frame "
        "strategy stores [N, D] per clip (CAV-MAE Sync; auto = diagonal_mean for a model with global tokens on "
        "per-frame data)",
    )
    p.add_argument(
        "--inputs",
        choices=["audiovisual", "audio"],
        default="audiovisual",
        help="audiovisual: audio and video vectors (retrieval); audio: the audio stream only, from audio-only or "
        "audio-visual shards (audio features; no index / retrieve)",
    )
    p.add_argument("--overwrite", action="store_true", help="re-embed shards already done")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is")


def run(args: argparse.Namespace) -> int:
    """Errors escape to cavmae.cli: a missing or unreadable model or shard is exit 1."""
    from accelerate import Accelerator

    from cavmae.config import Config
    from cavmae.eval.embed import embed_to_shards
    from cavmae.eval.scoring import frames_from_shards, windows_for_model
    from cavmae.models.weights import load_model

    model = load_model(args.model)
    cfg = Config(model=model.cfg)
    cfg.data.num_workers, cfg.eval.batch_size = args.num_workers, args.batch_size
    cfg.eval.scoring = args.scoring
    windows_for_model(cfg)  # a Sync model: every frame with its window (auto -> diagonal_mean)
    frames_from_shards(cfg, args.shards)  # e.g. 16-frame Sync shards
    accelerator = Accelerator(cpu=args.cpu)
    manifest = embed_to_shards(
        model,
        args.shards,
        args.out,
        cfg,
        dtype=args.dtype,
        model_name=str(args.model),
        overwrite=args.overwrite,
        accelerator=accelerator,
        inputs=args.inputs,
    )
    if manifest is not None:
        log.info("%d clips embedded in %d shard(s): %s", manifest["num_clips"], len(manifest["shards"]), args.out)
    return 0
