"""The demo's baselines that learn nothing (or only a linear map), scored like the models:

- ``features_linear``: hand-made statistics of each modality, matched by a regularised CCA fitted on the training
  clips' pairs (no labels). Audio: per mel band the mean and standard deviation of the fbank, its loudness envelope
  (mean over bands) in 32 time bins, and the spectrum around the embedded frame's time (the middle 0.5 s).
  Picture (the middle frame): per colour channel the mean, standard deviation and an 8-bin histogram, and the mean
  colour of each cell of a 4 x 4 grid.
- ``event_times``: the solvability check, from the generator's ground truth (``events.json`` of
  :mod:`cavmae.data.clips`; NOT detected from the decoded data). A clip's audio side is its class and, on a time
  grid, the attributes (colour, shape, size) of the event sounding at each time; its video side is its class and
  the attributes of the event shown at the embedded frame's time, at that time. The score of a pair counts the
  agreements (class weighted as much as all three attributes), so the true pair scores highest unless another clip
  of the class plays an identical event at that moment: what the sound and the picture share when they are
  aligned in time is enough to match a clip to its own pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from cavmae.demo.heldout import HeldOut

ENVELOPE_BINS = 32  # time bins of the loudness envelope
MIDDLE_SECONDS = 0.5  # width of the audio window around the middle frame's time
FBANK_HOP_S = 0.01  # one fbank frame per 10 ms
HIST_BINS = 8  # per colour channel
GRID = 4  # cells per side of the mean-colour grid
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVENT_ATTRIBUTES = ("colour", "shape", "size")
EVENT_GRID_S = 0.05  # time step of the event grid (finer than one video frame at the demo's 8 fps)


def audio_statistics(audio: torch.Tensor) -> torch.Tensor:
    """Normalised fbank [N, T, F] -> [N, 3F + 32]: per-band mean and std, envelope, middle spectrum (module doc)."""
    n, t, _ = audio.shape
    envelope = F.adaptive_avg_pool1d(audio.mean(2).unsqueeze(1), ENVELOPE_BINS).squeeze(1)  # [N, 32]
    half = max(1, int(MIDDLE_SECONDS / FBANK_HOP_S / 2))
    middle = audio[:, max(0, t // 2 - half) : t // 2 + half].mean(1)  # [N, F]
    return torch.cat([audio.mean(1), audio.std(1), envelope, middle], dim=1).reshape(n, -1)


def picture_statistics(frames: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised frames [N, 3, S, S] -> [N, 6 + 3 * 8 + 3 * 16]: channel moments, histograms, grid."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (frames.float() * std + mean).clamp(0, 1)  # [N, 3, S, S] in [0, 1]
    pixels = rgb.flatten(2)  # [N, 3, S * S]
    bins = (pixels * HIST_BINS).long().clamp(max=HIST_BINS - 1)
    hist = torch.stack([(bins == b).float().mean(2) for b in range(HIST_BINS)], 2).flatten(1)  # [N, 3 * 8] fractions
    grid = F.adaptive_avg_pool2d(rgb, GRID).flatten(1)  # [N, 3 * 16]
    return torch.cat([pixels.mean(2), pixels.std(2), hist, grid], dim=1)


def fit_cca(
    x: torch.Tensor, y: torch.Tensor, dim: int = 32, reg: float = 1e-2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regularised CCA of paired features x [N, Dx], y [N, Dy] -> (mean_x, proj_x [Dx, d], mean_y, proj_y [Dy, d]):
    ``(x - mean_x) @ proj_x`` and ``(y - mean_y) @ proj_y`` are the most correlated d directions, each scaled by the
    square root of its canonical correlation. Each feature is scaled to unit variance first and ``reg`` is added to
    the diagonal of both covariances (ridge CCA)."""
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    sx, sy = x.std(0).clamp_min(1e-6), y.std(0).clamp_min(1e-6)
    xs, ys = (x - mx) / sx, (y - my) / sy
    n = x.shape[0]

    def inv_sqrt(c: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(c + reg * torch.eye(c.shape[0], dtype=c.dtype))
        return vecs @ torch.diag(vals.clamp_min(1e-12).rsqrt()) @ vecs.t()

    wx, wy = inv_sqrt(xs.t() @ xs / (n - 1)), inv_sqrt(ys.t() @ ys / (n - 1))
    u, rho, vh = torch.linalg.svd(wx @ (xs.t() @ ys / (n - 1)) @ wy)
    d = min(dim, rho.shape[0])
    # each direction weighted by the square root of its canonical correlation: in a dot product of the two sides a
    # direction counts as much as it is shared (directions of no correlation, pure noise, count for nothing)
    weight = rho[:d].clamp_min(0).sqrt()
    proj_x = (wx @ u[:, :d]) * weight / sx[:, None]
    proj_y = (wy @ vh[:d].t()) * weight / sy[:, None]
    return mx.float(), proj_x.float(), my.float(), proj_y.float()


def features_linear(
    train_audio: torch.Tensor, train_frames: torch.Tensor, audio: torch.Tensor, frames: torch.Tensor, dim: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The feature baseline's L2-normalised (audio [N, d], video [N, d]) embeddings of held-out clips, its CCA
    fitted on the training pairs (train_audio [M, T, F], train_frames [M, 3, S, S])."""
    mx, px, my, py = fit_cca(audio_statistics(train_audio), picture_statistics(train_frames), dim)
    a = (audio_statistics(audio) - mx) @ px
    v = (picture_statistics(frames) - my) @ py
    return F.normalize(a, dim=-1), F.normalize(v, dim=-1)


def read_events(clips_dir: Path) -> dict[str, list[dict]] | None:
    """``clips_dir/events.json`` (by sample key, each event a dict with start / end in seconds and its attributes),
    or None when the generator wrote none."""
    path = Path(clips_dir) / "events.json"
    if not path.is_file():
        return None
    events = json.loads(path.read_text())
    if not isinstance(events, dict):
        raise ValueError(f"{path}: expected a JSON object of sample key -> list of events")
    return events


def event_embeddings(
    keys: list[str],
    labels: torch.Tensor,
    events: dict[str, list[dict]],
    *,
    duration: float,
    frame_time: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The event-times check's (audio [N, D], video [N, D]) vectors (module docstring); their dot product is the
    number of agreements, class counting 3. labels [N] class indices or [N, C] multi-hot; every key must be in
    ``events``. Not normalised: score them with raw dot products."""
    missing = [k for k in keys if k not in events]
    if missing:
        raise ValueError(f"events.json has no events for {len(missing)} held-out clips, e.g. {missing[0]!r}")
    vocab = {a: sorted({str(e[a]) for k in keys for e in events[k]}) for a in EVENT_ATTRIBUTES}
    width = sum(len(v) for v in vocab.values())
    steps = max(1, math.ceil(duration / EVENT_GRID_S))
    frame_step = min(steps - 1, int(frame_time / EVENT_GRID_S))
    classes = (F.one_hot(labels.long()) if labels.dim() == 1 else (labels > 0.5).long()).float()  # [N, C]
    audio = torch.zeros(len(keys), steps, width)
    for i, key in enumerate(keys):
        for e in events[key]:
            code = torch.zeros(width)
            offset = 0
            for a in EVENT_ATTRIBUTES:
                code[offset + vocab[a].index(str(e[a]))] = 1.0
                offset += len(vocab[a])
            # grid step s covers [s, s + 1) * EVENT_GRID_S; it holds the event active at its start
            first = math.ceil(float(e["start"]) / EVENT_GRID_S - 1e-9)
            end = math.ceil(float(e["end"]) / EVENT_GRID_S - 1e-9)
            audio[i, first : min(end, steps)] = code
    video = torch.zeros_like(audio)
    video[:, frame_step] = audio[:, frame_step]  # what the frame shows: the event active at its time
    weight = math.sqrt(len(EVENT_ATTRIBUTES))  # class agreement counts as much as all attributes
    return (
        torch.cat([weight * classes, audio.flatten(1)], dim=1),
        torch.cat([weight * classes, video.flatten(1)], dim=1),
    )


def evaluate_baselines(
    held: HeldOut, train: HeldOut, clips_dir: Path, *, duration: float
) -> tuple[dict[str, dict | None], dict[str, str]]:
    """Both baselines on the held-out clips (:func:`cavmae.demo.heldout.score_retrieval` layout) and, for one that
    cannot run, why: ``event_times`` is None (with its reason) when the generator wrote no ``events.json``."""
    from cavmae.demo.heldout import score_retrieval

    results: dict[str, dict | None] = {}
    unavailable: dict[str, str] = {}
    a, v = features_linear(train.audio, train.frames, held.audio, held.frames)
    results["features_linear"] = score_retrieval(a, v, held.labels)
    events = read_events(clips_dir)
    if events is None:
        results["event_times"] = None
        unavailable["event_times"] = "the generator wrote no events.json (no event times)"
    else:
        # prepare stores the frame at the clip's middle (duration / 2) as the middle frame the models embed
        a, v = event_embeddings(held.keys, held.labels, events, duration=duration, frame_time=duration / 2)
        results["event_times"] = score_retrieval(a, v, held.labels)
    return results, unavailable
