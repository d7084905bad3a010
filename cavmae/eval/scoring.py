"""Clip-level retrieval scores from per-frame embeddings (CAV-MAE Sync, arXiv 2505.01237).

A Sync model embeds each of a clip's N frames with the audio window around it, so a clip is N audio vectors and
N video vectors, each L2-normalised. The score of a query clip q against a gallery clip g combines the cosine
similarities of their frame pairs:

- ``diagonal_mean`` (Sync's default): mean over k of cos(q_k, g_k), the pairs at the same time;
- ``diagonal_max``: max over k of cos(q_k, g_k);
- ``mean``: mean over all N x N pairs (k, l) of cos(q_k, g_l);
- ``max``: max over all N x N pairs.

``clip`` is the one-embedding-per-clip scoring of CAV-MAE (a plain cosine of [D] vectors). ``auto`` picks
``diagonal_mean`` for a model with global tokens evaluated on per-frame data (``data.audio_window`` > 0), ``clip``
otherwise. All four strategies are symmetric in (query, gallery) up to transposition, so one function serves both
retrieval directions. Memory: ``diagonal_mean`` and ``mean`` reduce to matrix products of [Q, N*D] / [Q, D]
matrices; the two ``max`` strategies hold [q, g, N] or [q, g, N, N] floats for blocks of at most ``chunk`` queries
and gallery clips.
"""

from __future__ import annotations

from typing import Any

import torch

from cavmae.eval.metrics import rank_summary

PER_FRAME = ("diagonal_mean", "diagonal_max", "mean", "max")
SCORINGS = ("auto", "clip", *PER_FRAME)


def resolve_scoring(scoring: str, model_cfg: Any, data_cfg: Any) -> str:
    """The concrete scoring of ``eval.scoring`` for a model and data config: ``auto`` -> ``diagonal_mean`` when the
    model has global tokens (``model.global_tokens``) and the data embeds every frame with its own audio window
    (``data.audio_window`` > 0), else ``clip``; any other value is returned as given (checked)."""
    if scoring not in SCORINGS:
        raise ValueError(f"eval.scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if scoring != "auto":
        return scoring
    per_frame = getattr(model_cfg, "global_tokens", False) and getattr(data_cfg, "audio_window", 0) > 0
    return "diagonal_mean" if per_frame else "clip"


def windows_for_model(cfg: Any) -> None:
    """Data settings of a bare model (``cavmae retrieve/evaluate/embed`` on a file with no run config): a model with
    global tokens (CAV-MAE Sync) sees each frame with the audio window it was built for (``data.audio_window`` =
    ``model.audio_length``), so that ``auto`` scores it the Sync way; other models and set windows are left alone.
    Edits ``cfg`` in place."""
    if getattr(cfg.model, "global_tokens", False) and getattr(cfg.data, "audio_window", 0) == 0:
        cfg.data.audio_window = cfg.model.audio_length


def frames_from_shards(cfg: Any, shards: Any) -> None:
    """Evaluation takes the frame count of the shards it reads (``data.num_frames`` from their manifests, e.g. 16
    for shards prepared with ``--frames 16``), whatever the model was trained on; shards without a manifest keep
    the config's. Edits ``cfg`` in place."""
    from cavmae.data.loader import manifest_frame_count
    from cavmae.data.shards import expand_shards

    held = manifest_frame_count(expand_shards(shards))
    if held is not None:
        cfg.data.num_frames = held


def _check(query: torch.Tensor, gallery: torch.Tensor, strategy: str) -> None:
    if strategy not in PER_FRAME and strategy != "clip":
        raise ValueError(f"unknown scoring {strategy!r}; expected clip or one of {', '.join(PER_FRAME)}")
    want = 2 if strategy == "clip" else 3
    if query.dim() != want or gallery.dim() != want:
        shape = "[n, D]" if want == 2 else "[n, N, D] (N frames per clip)"
        raise ValueError(
            f"scoring {strategy!r} needs query and gallery embeddings {shape}, got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    if query.shape[1:] != gallery.shape[1:]:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} differ in frames or dimension")


@torch.no_grad()
def clip_scores(query: torch.Tensor, gallery: torch.Tensor, strategy: str, chunk: int = 256) -> torch.Tensor:
    """Scores [Q, G] of query clips against gallery clips.

    query [Q, N, D], gallery [G, N, D]: per-frame embeddings, each L2-normalised (dot product = cosine); or
    [Q, D] / [G, D] with ``strategy="clip"``. ``chunk``: query and gallery clips per block of the max strategies.
    """
    _check(query, gallery, strategy)
    q, g = query.float(), gallery.float()
    if strategy == "clip":
        return q @ g.t()
    frames = q.shape[1]
    if strategy == "diagonal_mean":  # sum_k q_k . g_k = the dot product of the flattened [N*D] vectors
        return (q.flatten(1) @ g.flatten(1).t()) / frames
    if strategy == "mean":  # mean_{k,l} q_k . g_l = (mean_k q_k) . (mean_l g_l)
        return q.mean(1) @ g.mean(1).t()
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32, device=q.device)
    for qs in range(0, q.shape[0], chunk):
        qb = q[qs : qs + chunk]
        for gs in range(0, g.shape[0], chunk):
            gb = g[gs : gs + chunk]
            if strategy == "diagonal_max":
                pairs = torch.einsum("qkd,gkd->qgk", qb, gb)  # [q, g, N]
                out[qs : qs + chunk, gs : gs + chunk] = pairs.amax(-1)
            else:  # max over all pairs
                pairs = torch.einsum("qkd,gld->qgkl", qb, gb)  # [q, g, N, N]
                out[qs : qs + chunk, gs : gs + chunk] = pairs.flatten(2).amax(-1)
    return out


@torch.no_grad()
def true_match_ranks_scored(
    query: torch.Tensor, gallery: torch.Tensor, strategy: str, chunk: int = 256
) -> torch.Tensor:
    """1-based rank of gallery[i] for query[i] under ``strategy`` (paired sets, ties broken by gallery index as in
    :func:`cavmae.eval.metrics.true_match_ranks`) -> [Q] int64. Holds [chunk, G] scores at a time."""
    if query.shape[0] != gallery.shape[0]:
        raise ValueError(f"query ({query.shape[0]}) and gallery ({gallery.shape[0]}) clips must be paired")
    n = query.shape[0]
    ranks = torch.empty(n, dtype=torch.long)
    idx = torch.arange(n)
    for start in range(0, n, chunk):
        s = clip_scores(query[start : start + chunk], gallery, strategy, chunk).cpu()  # [c, G]
        rows = torch.arange(s.shape[0])
        own = s[rows, rows + start].unsqueeze(1)
        higher = (s > own).sum(1)
        tied_before = ((s == own) & (idx[None, :] < (rows + start)[:, None])).sum(1)
        ranks[start : start + chunk] = 1 + higher + tied_before
    return ranks


@torch.no_grad()
def retrieval_metrics_scored(
    audio: torch.Tensor, video: torch.Tensor, strategy: str, chunk: int = 256
) -> dict[str, dict[str, float]]:
    """``video_to_audio`` and ``audio_to_video`` R@1/5/10, median and mean rank of paired clips under
    ``strategy``; audio, video [C, N, D] per-frame (or [C, D] with ``clip``), L2-normalised per frame."""
    return {
        "video_to_audio": rank_summary(true_match_ranks_scored(video, audio, strategy, chunk)),
        "audio_to_video": rank_summary(true_match_ranks_scored(audio, video, strategy, chunk)),
    }
