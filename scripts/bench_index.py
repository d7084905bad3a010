"""Index benchmark: an approximate FAISS index against the exact flat one on N random D-dim embedding pairs.

Builds both through ``cavmae.eval.index.build_index`` (the ``cavmae index`` code: one index per modality, the IVF
quantiser trained on both modalities), loads them memory-mapped as ``cavmae retrieve --index`` does, and answers a
batch of video -> audio queries with each. Reports build time (train + add), query time (rounds alternate between
flat and approximate; median and range) and the approximate index's recall@10 against flat, at several nprobe.

Random vectors have no cluster structure, the hardest case for an inverted file (real embeddings cluster by
content), so the recall here is a lower bound for a given nprobe.

    python scripts/bench_index.py --n 200000 --dim 768 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cavmae.eval.index import RetrievalIndex, build_index, import_faiss  # noqa: E402
from cavmae.eval.retrieval import EmbeddingSet  # noqa: E402

log = logging.getLogger("bench_index")


def recall_at(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Fraction of the exact top-k rows the approximate search also returns ([Q, k] each)."""
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / exact.numel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--kind", default="auto", help="approximate kind (auto picks ivf at 200k)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    faiss = import_faiss()
    log.info("faiss %s, %d OpenMP threads", faiss.__version__, faiss.omp_get_max_threads())

    g = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(args.n, args.dim, generator=g), dim=-1)
    video = F.normalize(audio + torch.randn(args.n, args.dim, generator=g), dim=-1)  # paired, noisy
    emb = EmbeddingSet([str(i) for i in range(args.n)], audio, video)
    queries = video[torch.randperm(args.n, generator=g)[: args.queries]]
    del audio, video

    with tempfile.TemporaryDirectory() as tmp:
        builds = {}
        for name, kind in (("flat", "flat"), ("approx", args.kind)):
            t0 = time.perf_counter()
            info = build_index(emb, Path(tmp) / name, kind)
            builds[name] = {"total_s": time.perf_counter() - t0, **info["timings"], "factory": info["factory"]}
            builds[name]["params"] = {k: info[k] for k in ("kind", "nlist", "nprobe", "train_size") if k in info}
            log.info("built %s in %.1f s: %s", info["factory"], builds[name]["total_s"], info["timings"])
        del emb
        flat = RetrievalIndex.load(Path(tmp) / "flat")
        approx = RetrievalIndex.load(Path(tmp) / "approx")
        _, exact_rows = flat.search(queries, "audio", args.k)
        times: dict[str, list[float]] = {"flat": []} | {f"nprobe={n}": [] for n in args.nprobe}
        recalls = {}
        for _ in range(args.rounds):  # interleaved: each round times flat, then every nprobe
            t0 = time.perf_counter()
            flat.search(queries, "audio", args.k)
            times["flat"].append(time.perf_counter() - t0)
            for n in args.nprobe:
                approx.set_nprobe(n)
                t0 = time.perf_counter()
                _, rows = approx.search(queries, "audio", args.k)
                times[f"nprobe={n}"].append(time.perf_counter() - t0)
                recalls[f"nprobe={n}"] = recall_at(rows, exact_rows)

    flat_median = statistics.median(times["flat"])
    result = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "build": builds, "query": {}}
    print(f"\n{args.n} x {args.dim} vectors, {args.queries} queries, top {args.k}")
    for name in ("flat", "approx"):
        b = builds[name]
        parts = {k: round(v, 1) for k, v in b.items() if k.endswith("_s")}
        print(f"build {b['factory']:>16}: {b['total_s']:7.1f} s  {parts}")
    recall_name = f"recall@{args.k}"
    print(f"{'search':>22} {'median s':>9} {'range s':>15} {'queries/s':>10} {'speed-up':>9} {recall_name:>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        row = {
            "median_s": med,
            "min_s": min(ts),
            "max_s": max(ts),
            "queries_per_s": args.queries / med,
            "speedup_vs_flat": flat_median / med,
            "recall": 1.0 if name == "flat" else recalls[name],
        }
        result["query"][name] = row
        print(
            f"{name:>22} {med:9.3f} {min(ts):7.3f}-{max(ts):<7.3f} {row['queries_per_s']:10.0f} "
            f"{row['speedup_vs_flat']:8.1f}x {row['recall']:10.3f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
