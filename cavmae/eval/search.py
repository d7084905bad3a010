"""What ``cavmae retrieve`` searches: embeddings in memory (brute force) or a FAISS index folder, behind one API.

Rows are clips; a query of one modality is answered from the other modality's vectors. With embeddings only, top-k
and ranks are brute force (:mod:`cavmae.eval.metrics`); with an index, top-k comes from FAISS and ranks from the
flat index's stored vectors (exact), while an approximate index gives no ranks (evaluation stays exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cavmae.eval.retrieval import EmbeddingSet

DIRECTIONS = {"v2a": ("video", "audio"), "a2v": ("audio", "video")}  # direction -> (query, gallery) modality
METRIC_NAMES = {"v2a": "video_to_audio", "a2v": "audio_to_video"}


@dataclass
class SearchSpace:
    embeddings: EmbeddingSet | None = None
    index: object | None = None  # cavmae.eval.index.RetrievalIndex

    def __post_init__(self) -> None:
        if self.embeddings is None and self.index is None:
            raise ValueError("nothing to search: give embeddings or an index")
        if self.index is not None and self.embeddings is not None:
            indexed = self.index.info.get("scoring", "clip")
            if self.embeddings.scoring != indexed:
                raise ValueError(
                    f"the embeddings are scored by {self.embeddings.scoring!r}, the index by {indexed!r}: build the "
                    "index from these embeddings (cavmae index), or search the embeddings without --index"
                )
        self._rows = {k: i for i, k in enumerate(self.keys)}
        if self.embeddings is not None and self.index is not None:
            missing = [k for k in self.embeddings.keys if k not in self._rows]
            if missing:
                raise ValueError(f"{len(missing)} clip(s) of the embeddings are not in the index, e.g. {missing[0]!r}")

    @property
    def keys(self) -> list[str]:
        return self.index.keys if self.index is not None else self.embeddings.keys

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, key: str) -> int:
        try:
            return self._rows[key]
        except KeyError:
            raise KeyError(f"key {key!r} is not among the {len(self)} clips searched") from None

    def vector(self, key: str, modality: str) -> torch.Tensor:
        """The embedding [D] of clip `key` in `modality` (from the embeddings, else from a flat index)."""
        if self.embeddings is not None:
            return getattr(self.embeddings, modality)[self.embeddings.index(key)].float()
        if not self.index.exact:
            raise ValueError("key queries on an approximate index need --embeddings (its vectors are not stored)")
        return self.index.vectors(modality)[self.row(key)].clone()

    def top_k(self, query: torch.Tensor, modality: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and rows [Q, k] of the best `modality` items for queries [Q, D] (cosine) or [Q, N, D] (per-frame
        embeddings, scored by the embeddings' strategy); ties in row order."""
        from cavmae.eval.metrics import top_k

        if self.index is not None:
            return self.index.search(query, modality, k)
        if self.embeddings.scoring != "clip":
            from cavmae.eval.scoring import clip_scores

            s = clip_scores(query.float(), getattr(self.embeddings, modality).float(), self.embeddings.scoring)
            order = torch.sort(s, dim=1, descending=True, stable=True)
            k = min(k, s.shape[1])
            return order.values[:, :k], order.indices[:, :k]
        return top_k(query, getattr(self.embeddings, modality), k)

    @property
    def exact_ranks(self) -> bool:
        return self.index is None or self.index.exact

    def ranks(self, direction: str, chunk: int = 1024) -> torch.Tensor:
        """Rank of each clip's true pair [N] (row order), exactly as :func:`cavmae.eval.metrics.true_match_ranks`."""
        from cavmae.eval.metrics import true_match_ranks

        if self.index is not None:
            from cavmae.eval.index import index_ranks

            return index_ranks(self.index, direction, chunk)
        q, g = DIRECTIONS[direction]
        emb = self.embeddings
        if emb.scoring != "clip":
            from cavmae.eval.scoring import true_match_ranks_scored

            return true_match_ranks_scored(getattr(emb, q), getattr(emb, g), emb.scoring, min(chunk, 256))
        return true_match_ranks(
            F.normalize(getattr(emb, q).float(), dim=-1), F.normalize(getattr(emb, g).float(), dim=-1), chunk
        )

    def metrics(self, chunk: int = 1024) -> dict[str, dict]:
        """R@1/5/10, median and mean rank in both directions (``video_to_audio``, ``audio_to_video``)."""
        from cavmae.eval.metrics import rank_summary

        return {METRIC_NAMES[d]: rank_summary(self.ranks(d, chunk)) for d in DIRECTIONS}
