"""``cavmae index``: FAISS indexes (one per modality) over embeddings, for ``cavmae retrieve --index``.

cavmae index --embeddings emb/eval --out index/eval --kind flat        # exact: evaluation
cavmae index --embeddings emb/as2m --out index/as2m --kind auto        # approximate beyond 100k clips
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="an embed folder or a retrieve --out .safetensors file")
    p.add_argument("--out", required=True, help="index folder: audio.faiss, video.faiss, keys.json, index.json")
    p.add_argument(
        "--kind",
        choices=["flat", "ivf", "ivfpq", "auto"],
        default="flat",
        help="flat: exact (default, for evaluation); ivf / ivfpq: approximate; auto: chosen by the number of clips",
    )
    p.add_argument("--nlist", type=int, help="approximate kinds: inverted-file cells (default ~4 sqrt(N))")
    p.add_argument("--nprobe", type=int, help="approximate kinds: cells scanned per query (default nlist / 16)")
    p.add_argument("--pq-m", type=int, help="ivfpq: bytes per vector (default D / 16)")
    p.add_argument("--train-size", type=int, help="approximate kinds: training vectors (default 64 per cell)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Errors escape to cavmae.cli: missing embeddings or FAISS not installed is exit 1."""
    from cavmae.eval.embed import load_embeddings
    from cavmae.eval.index import build_index

    approximate = {"--nlist": args.nlist, "--nprobe": args.nprobe, "--pq-m": args.pq_m, "--train-size": args.train_size}
    given = [name for name, value in approximate.items() if value is not None]
    if args.kind == "flat" and given:
        log.error("%s set the approximate kinds (--kind ivf / ivfpq / auto); a flat index takes none", ", ".join(given))
        return 2
    if args.pq_m is not None and args.kind == "ivf":
        log.error("--pq-m applies to --kind ivfpq only")
        return 2
    emb = load_embeddings(args.embeddings, need_video=True)
    info = build_index(
        emb,
        args.out,
        args.kind,
        seed=args.seed,
        source=str(args.embeddings),
        nlist=args.nlist,
        nprobe=args.nprobe,
        pq_m=args.pq_m,
        train_size=args.train_size,
    )
    print(json.dumps(info, indent=2))
    return 0
