"""``cavmae retrieve``: embed a shard set and score audio <-> video retrieval, or query saved embeddings.

cavmae retrieve --model runs/base/model --shards 'eval-{000000..000009}.tar' --out eval_emb.safetensors
cavmae retrieve --model runs/base/model --embeddings eval_emb.safetensors --query clip.mp4 --top-k 5
cavmae retrieve --embeddings eval_emb.safetensors --query-key 00W1lcxW-WU_40000 --direction a2v
cavmae retrieve --embeddings eval_emb.safetensors --query-key=-0DLPzsiXXE_30000     # a key that begins with '-'
cavmae retrieve --index index/eval                       # R@k from an exact (flat) index, see cavmae index
cavmae retrieve --index index/as2m --embeddings emb/as2m --query-key KEY --top-k 10
cavmae retrieve --embeddings eval_emb.safetensors --shards 'eval-{000000..000009}.tar' --html gallery/

--embeddings takes a .safetensors file (retrieve --out) or a folder written by ``cavmae embed``. With --embeddings
or --index, --shards only supplies the frames and sounds of the --html gallery.
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
    p.add_argument("--embeddings", help="embeddings saved by an earlier run or an embed folder (the gallery)")
    p.add_argument("--index", help="an index folder from cavmae index: queries answered by FAISS")
    p.add_argument("--nprobe", type=int, help="approximate index: cells scanned per query (default: recorded)")
    p.add_argument(
        "--query",
        nargs="+",
        action="extend",
        default=[],
        help="audio or video files to look up in the gallery (one that begins with '-': --query=-x.mp4)",
    )
    p.add_argument(
        "--query-key",
        nargs="+",
        action="extend",
        default=[],
        help="keys of clips in the gallery to use as queries (one that begins with '-': --query-key=-0DLPzsiXXE_30000)",
    )
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
    p.add_argument(
        "--scoring",
        choices=["auto", "clip", "diagonal_mean", "diagonal_max", "mean", "max"],
        default="auto",
        help="clip scores (eval.scoring): one embedding per clip, or per-frame pairs (CAV-MAE Sync; auto = "
        "diagonal_mean for a model with global tokens on per-frame data)",
    )
    p.add_argument("--top-k", type=int, default=5, help="matches printed per query")
    p.add_argument("--chunk", type=int, default=1024, help="queries scored at once (memory: chunk x N floats)")
    p.add_argument("--batch-size", type=int, default=32, help="clips embedded at once")
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    p.add_argument("--device", default="auto", help="torch device; auto: cuda when available, else cpu")
    html = p.add_argument_group("gallery page (--html)")
    html.add_argument("--html", metavar="DIR", help="write a retrieval gallery (index.html + media/) into DIR")
    html.add_argument("--html-queries", type=int, default=8, help="random queries when no --query-key is given")
    html.add_argument("--html-seconds", type=float, default=5.0, help="seconds of audio per clip on the page")
    html.add_argument("--seed", type=int, default=0, help="seed of the random query sample")


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of options (exit 2 before any work), or None."""
    if not (args.shards or args.embeddings or args.index):
        return "give --shards (with --model) to embed a set, or --embeddings / --index to query a saved one"
    if args.shards and not (args.model or args.embeddings or args.index):
        return "--shards needs --model (or --embeddings / --index, then --shards is the gallery's media)"
    if args.out and (args.embeddings or args.index or not args.shards):
        return "--out saves embeddings made from --shards (with --model, without --embeddings / --index)"
    if args.query and not args.model:
        return "file queries (--query) need --model to embed them"
    if args.html and not args.shards:
        return "--html needs --shards: the gallery shows the clips' frames and sounds from them"
    return None


def run(args: argparse.Namespace) -> int:
    """Errors escape to cavmae.cli: a missing model, embedding set or index, or an unknown key, is exit 1."""
    import torch

    from cavmae.config import Config
    from cavmae.data.media import MediaError
    from cavmae.eval.embed import load_embeddings
    from cavmae.eval.retrieval import embed_shards
    from cavmae.eval.scoring import frames_from_shards, windows_for_model
    from cavmae.eval.search import SearchSpace
    from cavmae.models.weights import load_model

    problem = usage_problem(args)
    if problem:
        log.error("%s", problem)
        return 2
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model) if args.model else None
    embeddings = index = metrics = None
    if args.index:
        from cavmae.eval.index import RetrievalIndex

        index = RetrievalIndex.load(args.index, args.nprobe)
    if args.embeddings:
        embeddings = load_embeddings(args.embeddings, need_video=True)
    elif args.shards and index is None:
        cfg = Config(model=model.cfg)
        cfg.data.num_workers, cfg.eval.batch_size = args.num_workers, args.batch_size
        cfg.data.audio_channel = args.audio_channel  # for shards that hold raw .mp4 members
        cfg.eval.scoring = args.scoring
        windows_for_model(cfg)  # a Sync model: every frame with its window (auto -> diagonal_mean)
        frames_from_shards(cfg, args.shards)  # e.g. 16-frame Sync shards
        embeddings = embed_shards(model, args.shards, cfg, args.device)
    space = SearchSpace(embeddings, index)
    embedded_here = embeddings is not None and not args.embeddings
    if embedded_here or (index is not None and index.exact):
        metrics = space.metrics(args.chunk)
        metrics["clips"] = len(space)
        print(json.dumps(metrics, indent=2))
    elif index is not None:
        log.info("approximate %s index: answering queries only (R@k needs an exact flat index)", index.info["kind"])
    if args.out:
        path = embeddings.save(args.out)
        Path(path).with_suffix(".json").write_text(json.dumps(metrics, indent=2))
        log.info("saved %d embeddings to %s and metrics beside it", len(embeddings), path)
    direction = args.direction
    for key in args.query_key:
        a2v = direction != "v2a"
        _print_matches(f"key {key}", space.vector(key, "audio" if a2v else "video"), space, a2v, args.top_k)
    for file in args.query:
        try:
            _query_file(model, Path(file), space, args)
        except MediaError as e:
            log.error("%s", e)
            return 1
    if args.html:
        from cavmae.eval.gallery import write_gallery

        page = write_gallery(
            args.html,
            space,
            args.shards,
            query_keys=args.query_key,
            num_queries=args.html_queries,
            directions=("v2a", "a2v") if direction == "auto" else (direction,),
            k=args.top_k,
            seed=args.seed,
            audio_seconds=args.html_seconds,
            metrics={k: v for k, v in metrics.items() if k != "clips"} if metrics else None,
            title=f"Retrieval: {args.model or args.embeddings or args.index}",
            chunk=args.chunk,
        )
        log.info("gallery: %s", page)
    return 0


def _query_file(model, path: Path, gallery, args) -> None:
    import torch
    import torch.nn.functional as F

    from cavmae.eval.inputs import load_file

    scoring = gallery.embeddings.scoring if gallery.embeddings is not None else gallery.index.info.get("scoring")
    if scoring not in (None, "clip"):  # an index of per-frame clips as much as embeddings
        raise ValueError(
            f"{path}: a file query gives one embedding; the gallery is scored per frame "
            f"({scoring}): query with --query-key, or embed the gallery with --scoring clip"
        )
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


def _print_matches(name: str, query: torch.Tensor, space, a2v: bool, k: int) -> None:  # query: [D]
    scores, idx = space.top_k(query[None], "video" if a2v else "audio", k)
    kind = "videos" if a2v else "audios"
    print(f"{name}: top {scores.shape[1]} {kind}")
    for rank, (s, i) in enumerate(zip(scores[0].tolist(), idx[0].tolist()), 1):
        print(f"  {rank:>2}. {space.keys[i]}  {s:.4f}")
