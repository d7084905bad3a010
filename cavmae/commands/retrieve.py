"""``cavmae retrieve``: embed a shard set and score audio <-> video retrieval, or query saved embeddings.

cavmae retrieve --model runs/base/model --shards 'eval-{000000..000009}.tar' --out eval_emb.safetensors
cavmae retrieve --model runs/base/model --embeddings eval_emb.safetensors --query clip.mp4 --top-k 5
cavmae retrieve --embeddings eval_emb.safetensors --query-key 00W1lcxW-WU_40000 --direction a2v
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="pre-trained model: our model directory or a public CAV-MAE .pth")
    p.add_argument("--shards", nargs="+", help="shards to embed (brace patterns allowed)")
    p.add_argument("--out", help="where to save the embeddings (.safetensors) and metrics (.json beside it)")
    p.add_argument("--embeddings", help="embeddings saved by an earlier run (the gallery for queries)")
    p.add_argument("--query", nargs="+", default=[], help="audio or video files to look up in the gallery")
    p.add_argument("--query-key", nargs="+", default=[], help="keys of clips in the gallery to use as queries")
    p.add_argument(
        "--direction",
        choices=["auto", "a2v", "v2a"],
        default="auto",
        help="a2v: audio query, video gallery; auto: a2v for audio files and keys, v2a for video files",
    )
    p.add_argument(
        "--audio-channel",
        choices=["first", "mean"],
        default="first",
        help="audio of stereo files: the first channel (CAV-MAE's preprocessing, default) or (L+R)/2",
    )
    p.add_argument("--top-k", type=int, default=5, help="matches printed per query")
    p.add_argument("--chunk", type=int, default=1024, help="queries scored at once (memory: chunk x N floats)")
    p.add_argument("--batch-size", type=int, default=32, help="clips embedded at once")
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    p.add_argument("--device", default="auto", help="torch device; auto: cuda when available, else cpu")


def run(args: argparse.Namespace) -> int:
    import torch

    from cavmae.config import Config
    from cavmae.data.media import MediaError
    from cavmae.eval.metrics import retrieval_metrics
    from cavmae.eval.retrieval import EmbeddingSet, embed_shards
    from cavmae.models.weights import CheckpointError, load_model

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = load_model(args.model) if args.model else None
        if args.shards:
            if model is None:
                log.error("--shards needs --model")
                return 2
            cfg = Config(model=model.cfg)
            cfg.data.num_workers, cfg.eval.batch_size = args.num_workers, args.batch_size
            cfg.data.audio_channel = args.audio_channel  # for shards that hold raw .mp4 members
            gallery = embed_shards(model, args.shards, cfg, args.device)
            metrics = retrieval_metrics(gallery.audio, gallery.video, args.chunk)
            metrics["clips"] = len(gallery)
            print(json.dumps(metrics, indent=2))
            if args.out:
                path = gallery.save(args.out)
                Path(path).with_suffix(".json").write_text(json.dumps(metrics, indent=2))
                log.info("saved %d embeddings to %s and metrics beside it", len(gallery), path)
        elif args.embeddings:
            gallery = EmbeddingSet.load(args.embeddings)
        else:
            log.error("give --shards (with --model) to embed a set, or --embeddings to query a saved one")
            return 2
        for key in args.query_key:
            i = gallery.index(key)
            a2v = args.direction != "v2a"
            _print_matches(f"key {key}", gallery.audio[i] if a2v else gallery.video[i], gallery, a2v, args.top_k)
        for file in args.query:
            if model is None:
                log.error("file queries need --model to embed them")
                return 2
            _query_file(model, Path(file), gallery, args)
    except KeyError as e:  # str(KeyError) quotes its message: log the message itself
        log.error("%s", e.args[0] if e.args else e)
        return 1
    except (CheckpointError, MediaError, ValueError) as e:
        log.error("%s", e)
        return 1
    return 0


def _query_file(model, path: Path, gallery, args) -> None:
    import torch
    import torch.nn.functional as F

    from cavmae.eval.inputs import load_file

    x = load_file(path, model.cfg, audio_channel=args.audio_channel)
    model.eval().to(args.device)
    direction = args.direction
    if direction == "auto":
        direction = "v2a" if x.frames is not None and path.suffix.lower() not in (".wav", ".flac", ".mp3") else "a2v"
    if direction == "a2v":
        if x.audio is None:
            raise ValueError(f"{path}: no audio stream to query with (try --direction v2a)")
        with torch.no_grad():
            q = model.embed_audio(x.audio.to(args.device))[0]
    else:
        if x.frames is None:
            raise ValueError(f"{path}: no video stream to query with (try --direction a2v)")
        with torch.no_grad():
            q = model.embed_video(x.frames.to(args.device))[0]
    _print_matches(str(path), F.normalize(q.float().cpu(), dim=-1), gallery, direction == "a2v", args.top_k)


def _print_matches(name: str, query: torch.Tensor, gallery, a2v: bool, k: int) -> None:  # query: [D]
    from cavmae.eval.metrics import top_k

    target = gallery.video if a2v else gallery.audio
    scores, idx = top_k(query[None], target, k)
    kind = "videos" if a2v else "audios"
    print(f"{name}: top {scores.shape[1]} {kind}")
    for rank, (s, i) in enumerate(zip(scores[0].tolist(), idx[0].tolist()), 1):
        print(f"  {rank:>2}. {gallery.keys[i]}  {s:.4f}")
