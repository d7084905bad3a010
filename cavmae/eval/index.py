"""FAISS indexes over an embedding set: one per modality, written to disk and memory-mapped when queried.

An index folder holds ``audio.faiss`` (audio vectors: the gallery of video -> audio queries), ``video.faiss``,
``keys.json`` (the clip of each row) and ``index.json`` (kind, parameters, sizes). Vectors are the L2-normalised
embeddings and the metric is the inner product, so scores are the cosine similarities of brute-force retrieval.

Kinds:

- ``flat``: exact (``IndexFlatIP``). Evaluation (R@k, ranks) on a flat index ranks the stored vectors with
  :func:`cavmae.eval.metrics.true_match_ranks`, so it equals brute force to the bit, ties included.
- ``ivf``: inverted file with exact vectors (``IVF<nlist>,Flat``): a query scans ``nprobe`` of ``nlist`` cells.
- ``ivfpq``: inverted file with product-quantised vectors (``IVF<nlist>,PQ<m>x8``): ``m`` bytes per vector,
  for corpora beyond memory.
- ``auto``: ``flat`` below 100,000 clips (exact search is fast enough there; scripts/bench_index.py), ``ivf`` up
  to 2 million, ``ivfpq`` beyond; ``nlist`` ~ 4 sqrt(N) (a power of two), ``nprobe`` = nlist / 16, ``m`` = D / 16.

The coarse quantiser of an approximate index is trained on audio AND video vectors (half each): a quantiser
trained on one modality places the other modality's queries in cells that hold no neighbours (the known failure
of cross-modal queries on an image-trained index). Approximate indexes answer queries only; evaluation stays
exact and refuses them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cavmae.eval.retrieval import EmbeddingSet

log = logging.getLogger(__name__)

FORMAT = "cavmae-index/1"
KINDS = ("flat", "ivf", "ivfpq", "auto")
MODALITIES = ("audio", "video")
TIE_MARGIN = 16  # extra candidates fetched so equal scores can be ordered by row, as brute force orders them


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            'FAISS indexes need the faiss extra: pip install "cavmae[faiss]" (or faiss-gpu where CUDA is)'
        ) from None
    return faiss


def choose_params(n: int, dim: int, kind: str = "auto", **overrides) -> dict:
    """The index parameters for `n` vectors of `dim` (see the module docstring); overrides win where given."""
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = "flat" if n < 100_000 else ("ivf" if n < 2_000_000 else "ivfpq")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if kind == "flat":
        if overrides:
            raise ValueError(f"a flat index takes no parameters (got {sorted(overrides)})")
        return {"kind": "flat"}
    nlist = overrides.get("nlist") or 2 ** max(4, round(math.log2(4 * math.sqrt(n))))
    if nlist > n:
        raise ValueError(f"nlist ({nlist}) must not exceed the number of vectors ({n}); use a flat index")
    params = {
        "kind": kind,
        "nlist": int(nlist),
        "nprobe": int(overrides.get("nprobe") or max(1, nlist // 16)),
        # FAISS warns below 39 training points per cell; 64 per cell, at most all vectors of both modalities
        "train_size": int(overrides.get("train_size") or min(2 * n, 64 * nlist)),
    }
    if kind == "ivfpq":
        m = int(overrides.get("pq_m") or max(1, dim // 16))
        if dim % m:
            raise ValueError(f"pq_m ({m}) must divide the embedding dimension ({dim})")
        params.update(pq_m=m, pq_nbits=8)
    elif "pq_m" in overrides:
        raise ValueError("pq_m applies to --kind ivfpq only")
    return params


def _factory(params: dict) -> str:
    if params["kind"] == "flat":
        return "Flat"
    if params["kind"] == "ivf":
        return f"IVF{params['nlist']},Flat"
    return f"IVF{params['nlist']},PQ{params['pq_m']}x{params['pq_nbits']}"


# Scorings an inner-product index computes exactly (cavmae/eval/scoring.py): the max strategies are not inner
# products, and "mean" is one only of unnormalised frame means (a cosine index would change the gallery's scale).
INDEXABLE_SCORINGS = ("clip", "diagonal_mean")


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(F.normalize(x.float(), dim=-1).numpy())


def build_index(
    emb: EmbeddingSet, out_dir: str | Path, kind: str = "flat", *, seed: int = 0, source: str = "", **overrides
) -> dict:
    """Build one index per modality from `emb` into `out_dir`; returns what ``index.json`` records."""
    if emb.scoring not in INDEXABLE_SCORINGS:
        raise ValueError(
            f"the embeddings are scored by {emb.scoring!r}, which an inner-product index cannot compute; "
            f"indexable: {', '.join(INDEXABLE_SCORINGS)} (embed with --scoring clip or diagonal_mean)"
        )
    faiss = import_faiss()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # diagonal_mean: a clip's N unit frame vectors flattened to [N*D] and normalised (/ sqrt(N)), so the inner
    # product of two clips is mean_k cos(a_k, v_k) exactly
    audio, video = (emb.audio.flatten(1), emb.video.flatten(1)) if emb.scoring != "clip" else (emb.audio, emb.video)
    n, dim = audio.shape
    params = choose_params(n, dim, kind, **overrides)
    vectors = {"audio": _as_numpy(audio), "video": _as_numpy(video)}
    timings = {}
    trained = None
    if params["kind"] != "flat":
        # one quantiser trained on both modalities, copied into both indexes
        rng = np.random.default_rng(seed)
        half = params["train_size"] // 2
        sample = np.concatenate([v[rng.choice(n, size=min(n, half), replace=False)] for v in vectors.values()])
        t0 = time.perf_counter()
        trained = faiss.index_factory(dim, _factory(params), faiss.METRIC_INNER_PRODUCT)
        trained.cp.seed = seed  # k-means seed of the coarse quantiser (and PQ), for reproducible indexes
        trained.train(sample)
        timings["train_s"] = round(time.perf_counter() - t0, 3)
        log.info(
            "trained %s on %d vectors (audio + video) in %.1f s", _factory(params), len(sample), timings["train_s"]
        )
    for modality, x in vectors.items():
        t0 = time.perf_counter()
        if trained is None:
            index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.clone_index(trained)
        index.add(x)
        faiss.write_index(index, str(out / f"{modality}.faiss"))
        timings[f"add_{modality}_s"] = round(time.perf_counter() - t0, 3)
    (out / "keys.json").write_text(json.dumps(emb.keys))
    info = {
        "format": FORMAT,
        **params,
        "factory": _factory(params),
        "metric": "inner_product (L2-normalised: cosine)",
        "num_vectors": n,
        "dim": dim,
        "scoring": emb.scoring,  # diagonal_mean: each vector is a clip's N frame vectors, flattened
        "frames": emb.audio.shape[1] if emb.scoring != "clip" else 1,
        "source": source,
        "quantiser_trained_on": "audio+video" if trained is not None else None,
        "timings": timings,
    }
    (out / "index.json").write_text(json.dumps(info, indent=1) + "\n")
    log.info("%s index of %d x %d (%s) -> %s", params["kind"], n, dim, _factory(params), out)
    return info


@dataclass
class RetrievalIndex:
    """A loaded index folder: keys, the memory-mapped FAISS index of each modality and the recorded parameters."""

    path: Path
    info: dict
    keys: list[str]
    indexes: dict  # modality -> faiss.Index

    @classmethod
    def load(cls, path: str | Path, nprobe: int | None = None) -> RetrievalIndex:
        faiss = import_faiss()
        path = Path(path)
        info_file = path / "index.json"
        if not info_file.is_file():
            raise ValueError(f"{path} is not an index folder written by cavmae index (no index.json)")
        info = json.loads(info_file.read_text())
        if info.get("format") != FORMAT:
            raise ValueError(f"{info_file}: format {info.get('format')!r}, expected {FORMAT!r}")
        keys = json.loads((path / "keys.json").read_text())
        # memory-mapped, read-only: flat codes through MMAP_IFC, IVF inverted lists through MMAP (OnDiskInvertedLists)
        mmap = faiss.IO_FLAG_MMAP_IFC if info["kind"] == "flat" else faiss.IO_FLAG_MMAP
        flags = mmap | faiss.IO_FLAG_READ_ONLY
        indexes = {m: faiss.read_index(str(path / f"{m}.faiss"), flags) for m in MODALITIES}
        for m, index in indexes.items():
            if index.ntotal != len(keys):
                raise ValueError(f"{path / f'{m}.faiss'} holds {index.ntotal} vectors for {len(keys)} keys")
        out = cls(path, info, keys, indexes)
        if info["kind"] != "flat":
            out.set_nprobe(nprobe or info["nprobe"])
        return out

    @property
    def exact(self) -> bool:
        return self.info["kind"] == "flat"

    def set_nprobe(self, nprobe: int) -> None:
        faiss = import_faiss()
        for index in self.indexes.values():
            faiss.extract_index_ivf(index).nprobe = int(nprobe)

    def vectors(self, modality: str) -> torch.Tensor:
        """The stored vectors [N, D] of a flat index (a view of the memory-mapped file, no copy)."""
        if not self.exact:
            raise ValueError(f"{self.path} is a {self.info['kind']} index: its vectors are not stored exactly")
        faiss = import_faiss()
        index = self.indexes[modality]
        flat = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)  # float32 view of the mapped file
        return torch.from_numpy(np.asarray(flat).reshape(index.ntotal, index.d))

    def search(self, query: torch.Tensor, modality: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and rows [Q, k] of the k best items of `modality` for queries [Q, D] (normalised here); an index of
        per-frame clips (``scoring`` diagonal_mean in index.json) takes queries [Q, N, D] (or flattened [Q, N*D]).

        Equal scores come in row order, as in :func:`cavmae.eval.metrics.top_k` (up to TIE_MARGIN extra ties).
        """
        index = self.indexes[modality]
        if self.info.get("scoring", "clip") != "clip":
            query = query.flatten(1)  # [Q, N, D] -> [Q, N*D], the layout of the stored vectors
        k = min(k, index.ntotal)
        fetch = min(k + TIE_MARGIN, index.ntotal)
        scores, rows = index.search(_as_numpy(query), fetch)  # [Q, fetch]; rows -1 where a probe found too few
        scores = torch.from_numpy(scores)
        rows = torch.from_numpy(rows)
        # order by (score descending, row ascending); missing rows (-1) last
        missing = rows < 0
        scores = torch.where(missing, torch.full_like(scores, -float("inf")), scores)
        by_row = torch.argsort(torch.where(missing, torch.full_like(rows, index.ntotal), rows), dim=1)
        scores, rows = scores.gather(1, by_row), rows.gather(1, by_row)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return scores.gather(1, order)[:, :k], rows.gather(1, order)[:, :k]


def index_ranks(index: RetrievalIndex, direction: str, chunk: int = 1024) -> torch.Tensor:
    """Rank of each clip's true pair, 'v2a' (video queries, audio gallery) or 'a2v', on a flat index: exact."""
    from cavmae.eval.metrics import true_match_ranks

    if not index.exact:
        raise ValueError(
            f"{index.path} is an approximate ({index.info['kind']}) index: R@k and ranks need an exact one "
            "(cavmae index --kind flat); approximate indexes answer queries only"
        )
    queries, gallery = ("video", "audio") if direction == "v2a" else ("audio", "video")
    return true_match_ranks(index.vectors(queries), index.vectors(gallery), chunk)


def index_metrics(index: RetrievalIndex, chunk: int = 1024) -> dict[str, dict]:
    """:func:`cavmae.eval.metrics.retrieval_metrics` of the clips of a flat index (both directions)."""
    from cavmae.eval.metrics import rank_summary

    return {
        "video_to_audio": rank_summary(index_ranks(index, "v2a", chunk)),
        "audio_to_video": rank_summary(index_ranks(index, "a2v", chunk)),
    }
