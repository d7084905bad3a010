"""Index benchmark: an approximate FAISS index against the exact flat one on N random D-dim embedding pairs.

Builds both through ``cavmae.eval.index.build_index`` (the ``cavmae index`` code: one index per modality, the IVF
quantiser trained on both modalities), loads them memory-mapped as ``cavmae retrieve --index`` does, and answers a
batch of video -> audio queries with each. Reports build time (train + add; one build of each), query time
(interleaved rounds: each times flat and every nprobe once, order rotating; median (min-max), and the median
(min-max) of the per-round speed-ups over flat) and the approximate index's recall@10 against flat, at several
nprobe, with the machine and its load average at start and end; the raw rounds go to
scripts/results/bench_index_<dev>.json (or --out).

Random vectors have no cluster structure, the hardest case for an inverted file (real embeddings cluster by
content), so the recall here is a lower bound for a given nprobe.

    python scripts/bench_index.py --n 200000 --dim 768 --queries 1000
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from benchtools import Record, default_out, ratio_spread, ratios, rounds, spread, summary  # noqa: E402

from cavmae.eval.index import RetrievalIndex, build_index, import_faiss  # noqa: E402
from cavmae.eval.retrieval import EmbeddingSet  # noqa: E402

log = logging.getLogger("bench_index")


def recall_at(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Fraction of the exact top-k rows the approximate search also returns ([Q, k] each)."""
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / exact.numel()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--kind", default="auto", help="approximate kind (auto picks ivf at 200k)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", type=Path, help="JSON of the raw rounds (default: scripts/results/bench_index_<dev>.json)")
    args = p.parse_args(argv)
    record = Record("bench_index", vars(args))
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

        def search(index: RetrievalIndex, nprobe: int | None):
            def call() -> torch.Tensor:
                if nprobe is not None:
                    index.set_nprobe(nprobe)
                return index.search(queries, "audio", args.k)[1]

            return call

        searches = {"flat": search(flat, None)} | {f"nprobe={n}": search(approx, n) for n in args.nprobe}
        runs = rounds(searches, args.rounds, warmup=0)  # every round: flat and every nprobe, order rotating

    times = {name: [r.wall_s for r in rs] for name, rs in runs.items()}
    result = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "build": builds, "query": {}}
    for name, ts in times.items():
        result["query"][name] = {
            "seconds": summary(ts),
            "queries_per_s": summary([args.queries / t for t in ts]),
            "speedup_vs_flat": summary(ratios(times["flat"], ts)),
            "recall": recall_at(runs[name][-1].value, exact_rows),
        }
    record.finish(raw={"query_s": times, "build": builds}, summary=result)
    print(record.machine_lines())
    print(f"{args.n} x {args.dim} vectors, {args.queries} queries, top {args.k}; {args.rounds} interleaved rounds")
    for name in ("flat", "approx"):
        b = builds[name]
        parts = {k: round(v, 1) for k, v in b.items() if k.endswith("_s")}
        print(f"build {b['factory']:>16}: {b['total_s']:7.1f} s (one build)  {parts}")
    for name, ts in times.items():
        row = result["query"][name]
        print(
            f"{name:>12}: {spread(ts)}, speed-up vs flat {ratio_spread(times['flat'], ts)} (per-round ratios), "
            f"recall@{args.k} {row['recall']:.3f}"
        )
    print(f"wrote {record.write(args.out or default_out('bench_index'))}")


if __name__ == "__main__":
    main()
