"""A retrieval gallery people can look at and listen to: one self-contained HTML page plus its media files.

For each query clip (chosen keys, or a seeded random sample) and each direction, the page shows the query's frame
and an audio player, then the top-k clips retrieved in the other modality, each with its frame, an audio player,
its class names (where the shards hold labels), the cosine score and its rank; a green mark when it is the query's
true pair and a different, orange one when it only shares a class with the query. R@1/5/10 of the whole set and
which model the page shows sit at the top.

Frames are the shards' own JPEGs. Retrieval embeds the middle one; where that frame shows little (it is nearly one
flat colour: its pixels deviate from the frame's mean colour far less than those of the clip's most varied frame,
as when an object is out of view), the tile shows the most varied frame, says at which time, and keeps the middle
frame as a small inset. Audio is the first `audio_seconds` of each clip as 16-bit 16 kHz WAV; everything lies in
``media/`` beside ``index.html`` and the page loads nothing from the network (no scripts, fonts or styles from
elsewhere), so the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import io
import json
import logging
import random
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cavmae.eval.search import DIRECTIONS, METRIC_NAMES, SearchSpace

log = logging.getLogger(__name__)

NAMES = {"v2a": "video \u2192 audio", "a2v": "audio \u2192 video"}


@dataclass
class ClipMedia:
    jpeg: bytes | None = None  # the frame shown
    wav: bytes | None = None
    labels: list[str] = field(default_factory=list)  # class names; empty where the shards hold none
    model_jpeg: bytes | None = None  # the middle frame (what retrieval embeds) when the frame shown is another one
    frame_time: float | None = None  # seconds into the clip of the frame shown, when known


VISIBLE_FRACTION = 0.5  # the middle frame is shown unless its pixel spread is below this fraction of the best frame's


def pick_frame(frames: np.ndarray) -> int:
    """Index of the frame to show of a clip's frames uint8 [N, H, W, 3]: the middle one (what retrieval embeds),
    unless its pixels' standard deviation around the frame's mean colour is below ``VISIBLE_FRACTION`` of the most
    varied frame's; then that frame (an object or event is in view there, the middle frame is nearly flat)."""
    middle = len(frames) // 2
    spread = frames.astype(np.float32).reshape(len(frames), -1, frames.shape[-1]).std(axis=1).mean(axis=1)  # [N]
    best = int(spread.argmax())
    return middle if spread[middle] >= VISIBLE_FRACTION * spread[best] else best


def _wav(audio: np.ndarray, seconds: float) -> bytes:
    """float32 [N] 16 kHz -> the first `seconds` as 16-bit PCM WAV bytes."""
    import soundfile as sf

    pcm = np.clip(np.rint(audio[: int(seconds * 16000)] * 32768.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _decode(jpegs: list[bytes]) -> np.ndarray:
    """JPEG bytes of one clip -> uint8 [N, H, W, 3] (frames of one clip share a size)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs])


def _choose_frame(media: ClipMedia, jpegs: list[bytes], times: Sequence[float] | None) -> None:
    """Set the frame shown (:func:`pick_frame`) and, when it is not the middle one, keep the middle as the inset."""
    middle = len(jpegs) // 2  # f5 of ten: the frame retrieval embeds
    try:
        chosen = pick_frame(_decode(jpegs))
    except (OSError, ValueError):  # an unreadable or odd-sized frame: show the model's frame as it is
        chosen = middle
    media.jpeg = jpegs[chosen]
    media.model_jpeg = None if chosen == middle else jpegs[middle]
    media.frame_time = float(times[chosen]) if times is not None and len(times) == len(jpegs) else None


def _labels(meta: dict, names: list[str] | None) -> list[str]:
    """Class names of one sample: its label indices through the shards' label index, else its labels as stored."""
    indices = meta.get("label_indices") or []
    if names and indices and all(0 <= i < len(names) for i in indices):
        return [names[i] for i in indices]
    return [str(label) for label in meta.get("labels") or []]


def _from_members(members: dict[str, bytes], seconds: float, names: list[str] | None = None) -> ClipMedia:
    """Frame, audio and class names of one shard sample ({ext: bytes}); ``names``: the shards' class names."""
    import soundfile as sf

    media = ClipMedia()
    meta = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except ValueError:
            log.warning("unreadable json member (shown without class names)")
    media.labels = _labels(meta, names)
    frames = sorted((int(ext[1:-4]), ext) for ext in members if ext.startswith("f") and ext.endswith(".jpg"))
    if frames:
        _choose_frame(media, [members[ext] for _, ext in frames], meta.get("frame_times"))
    for ext in ("wav", "flac"):
        if ext in members:
            audio, rate = sf.read(io.BytesIO(members[ext]), dtype="float32", always_2d=True)
            media.wav = _wav(audio[:, 0], seconds) if rate == 16000 else None
            break
    if "mp4" in members and (media.jpeg is None or media.wav is None):
        _from_mp4(members["mp4"], media, seconds)
    return media


def _from_mp4(data: bytes, media: ClipMedia, seconds: float) -> None:
    """Fill what is missing from a raw video stored in the shard (``--store mp4``)."""
    from PIL import Image

    from cavmae.data.media import VideoFrames, evenly_spaced_times, probe, read_audio

    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        has_video, has_audio = probe(f.name)
        if media.wav is None and has_audio:
            media.wav = _wav(read_audio(f.name), seconds)
        if media.jpeg is None and has_video:
            video = VideoFrames(f.name)
            times = evenly_spaced_times(0.0, video.end_time, 10)
            frames, _ = video.at(times)
            jpegs = []
            for frame in frames:
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, format="JPEG", quality=90)
                jpegs.append(buf.getvalue())
            _choose_frame(media, jpegs, times)


def _shards_for(urls: list[str], keys: set[str]) -> list[str]:
    """The shards that may hold `keys`: prepared shards are sorted by key, so the manifest's key ranges tell."""
    from cavmae.data.shards import manifest_path

    out = []
    for url in urls:
        mp = manifest_path(url)
        entry = None
        if mp is not None and mp.is_file():
            name = Path(url).name
            entry = next((s for s in json.loads(mp.read_text()).get("shards", []) if s["file"] == name), None)
        if entry is None or any(entry["first_key"] <= k <= entry["last_key"] for k in keys):
            out.append(url)
    return out


def read_clip_media(shards: Sequence[str], keys: Sequence[str], audio_seconds: float = 5.0) -> dict[str, ClipMedia]:
    """{key: ClipMedia} for the given keys, read from local tar shards (brace patterns allowed)."""
    from cavmae.data.shards import expand_shards

    wanted = set(keys)
    found: dict[str, dict[str, bytes]] = {}
    names: dict[str, list[str] | None] = {}  # key -> class names of its shards' label index
    for url in _shards_for(expand_shards(list(shards)), wanted):
        url_names = _class_names(url)
        with tarfile.open(url) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key in wanted and member.isfile():
                    found.setdefault(key, {})[ext] = tar.extractfile(member).read()
                    names[key] = url_names
        if len(found) == len(wanted):
            break
    missing = wanted - set(found)
    if missing:
        log.warning("%d clip(s) not found in the shards (shown without media), e.g. %s", len(missing), min(missing))
    return {k: _from_members(m, audio_seconds, names.get(k)) for k, m in found.items()}


def _class_names(url: str) -> list[str] | None:
    """Display names of the label index in the manifest beside a prepared shard (the label CSV it was made with)."""
    from cavmae.data.shards import manifest_path

    mp = manifest_path(url)
    if mp is None or not mp.is_file():
        return None
    records = json.loads(mp.read_text()).get("label_index") or []
    return [str(r.get("display_name", r.get("mid", ""))) for r in records] or None


def choose_queries(keys: Sequence[str], chosen: Sequence[str], sample: int, seed: int) -> list[str]:
    """The chosen keys (checked) or a seeded random sample of `sample` keys in their row order."""
    if chosen:
        known = set(keys)
        for k in chosen:
            if k not in known:
                raise KeyError(f"query key {k!r} is not among the {len(keys)} clips")
        return list(chosen)
    rows = sorted(random.Random(seed).sample(range(len(keys)), min(sample, len(keys))))
    return [keys[r] for r in rows]


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px} .sub{color:#666;font-size:13px}
table.metrics{border-collapse:collapse;margin:12px 0} table.metrics td,table.metrics th{border:1px solid #ccc;
padding:4px 10px;font-size:14px;text-align:right} table.metrics th{background:#eee}
.row{display:flex;gap:10px;align-items:flex-start;margin:10px 0;padding:10px;background:#fff;border:1px solid #ddd;
border-radius:6px;overflow-x:auto} .query{border-right:3px solid #888;padding-right:10px}
.clip{width:176px;flex:0 0 176px;font-size:12px} .clip img{width:176px;height:132px;object-fit:cover;
display:block;border-radius:4px;background:#ddd} .clip audio{width:176px;height:32px;margin-top:4px}
.noimg{width:176px;height:132px;background:#ddd;border-radius:4px;display:flex;align-items:center;
justify-content:center;color:#777} .key{font-family:monospace;word-break:break-all}
.score{font-weight:600} .tile.hit{outline:3px solid #2a9d3a;outline-offset:2px;border-radius:4px}
.tile[data-match="class"]{outline:3px dashed #e07b00;outline-offset:2px;border-radius:4px}
.mark{color:#2a9d3a;font-weight:700} .same{color:#b35f00;font-weight:700} .miss{color:#999}
.cls{font-weight:600;margin-top:2px} .frame{position:relative} .clip img.inset{position:absolute;right:4px;
bottom:4px;width:48px;height:36px;border:2px solid #fff;border-radius:3px;object-fit:cover}
.note{color:#666;font-size:11px} .legend span{margin-right:16px} .model{font-size:14px;margin:6px 0}
"""


@dataclass
class _Files:
    """Where one clip's media lie in the page's folder, and what the page says about them."""

    jpg: str | None = None
    wav: str | None = None
    model_jpg: str | None = None  # the middle frame, inset, when the frame shown is another one
    frame_time: float | None = None
    labels: tuple[str, ...] = ()


def _clip_html(key: str, f: _Files, extra: str, cls: str, match: str = "") -> str:
    """One clip: frame (with the model's frame inset where another is shown), audio, key, class names, ``extra``."""
    name = html.escape(key)
    if f.jpg and f.model_jpg:
        when = f" at {f.frame_time:.2f} s" if f.frame_time is not None else ""
        img = (
            f'<div class="frame"><img src="{f.jpg}" alt="frame{when} of {name}">'
            f'<img class="inset" src="{f.model_jpg}" alt="middle frame of {name}" '
            'title="the middle frame, which retrieval embeds"></div>'
            f'<div class="note">frame{when}; inset: the middle frame, which the model saw</div>'
        )
    elif f.jpg:
        img = f'<img src="{f.jpg}" alt="middle frame of {name}">'
    else:
        img = '<div class="noimg">no frame</div>'
    audio = (
        f'<audio controls preload="metadata" src="{f.wav}"></audio>' if f.wav else '<div class="miss">no audio</div>'
    )
    label = f'<div class="cls">{html.escape(", ".join(f.labels))}</div>' if f.labels else ""
    attr = f' data-match="{match}"' if match else ""
    return f'<div class="{cls}"{attr}>{img}{audio}<div class="key">{name}</div>{label}{extra}</div>'


def write_gallery(
    out_dir: str | Path,
    space: SearchSpace,
    shards: Sequence[str],
    *,
    query_keys: Sequence[str] = (),
    num_queries: int = 8,
    directions: Sequence[str] = ("v2a", "a2v"),
    k: int = 5,
    seed: int = 0,
    audio_seconds: float = 5.0,
    metrics: dict | None = None,
    title: str = "Audio-visual retrieval",
    chunk: int = 1024,
    model: str = "",
) -> Path:
    """Write ``index.html`` and ``media/`` into `out_dir` (see the module docstring); returns the page's path.

    `metrics` (R@k per direction, as :meth:`SearchSpace.metrics`) is computed here when not given and the search
    is exact; an approximate index gives none (the page says so). `model`: which model's embeddings the page shows
    (e.g. its path and training seed), printed under the title.
    """
    out = Path(out_dir)
    media_dir = out / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    queries = choose_queries(space.keys, query_keys, num_queries, seed)
    ranks = {}
    if space.exact_ranks:
        ranks = {d: space.ranks(d, chunk) for d in directions}
        if metrics is None:
            from cavmae.eval.metrics import rank_summary

            metrics = {METRIC_NAMES[d]: rank_summary(r) for d, r in ranks.items()}
    # retrieve first, then read the media of every clip shown once
    results: dict[str, list[tuple[str, list[tuple[str, float]]]]] = {}
    for d in directions:
        qmod, gmod = DIRECTIONS[d]
        q = torch.stack([space.vector(key, qmod) for key in queries])
        scores, rows = space.top_k(q, gmod, k)
        results[d] = [
            (key, [(space.keys[r], s) for s, r in zip(sc.tolist(), rw.tolist()) if r >= 0])
            for key, sc, rw in zip(queries, scores, rows)
        ]
    shown = sorted({key for res in results.values() for q, hits in res for key in [q, *(h for h, _ in hits)]})
    media = read_clip_media(shards, shown, audio_seconds)
    files: dict[str, _Files] = {}
    for n, key in enumerate(shown):
        m = media.get(key, ClipMedia())
        f = files[key] = _Files(frame_time=m.frame_time, labels=tuple(m.labels))
        for attr, data, name in (("jpg", m.jpeg, f"{n:05d}.jpg"), ("wav", m.wav, f"{n:05d}.wav")):
            if data:
                setattr(f, attr, f"media/{name}")
                (media_dir / name).write_bytes(data)
        if m.jpeg and m.model_jpeg:
            f.model_jpg = f"media/{n:05d}_middle.jpg"
            (media_dir / f"{n:05d}_middle.jpg").write_bytes(m.model_jpeg)
    labelled = any(f.labels for f in files.values())
    moved = sum(f.model_jpg is not None for f in files.values())

    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *([f'<div class="model">Model: {html.escape(model)}</div>'] if model else []),
        f'<div class="sub">{len(space)} clips; top {k} of {len(queries)} queries per direction; scores are cosine '
        "similarities.</div>",
        '<div class="sub legend"><span class="mark">\u2713 green, solid: the query\'s true pair</span>'
        + (
            '<span class="same">\u2248 orange, dashed: same class as the query (not its pair)</span>'
            "<span>unmarked: another class</span>"
            if labelled
            else "<span>(the shards hold no class labels: same-class matches are not marked)</span>"
        )
        + "</div>",
        *(
            [
                f'<div class="sub">Frames: retrieval embeds each clip\'s middle frame; for {moved} clip(s) that frame '
                "is nearly flat (the object or event is not in view then), so the tile shows the clip's most varied "
                "frame, with the middle frame as an inset.</div>"
            ]
            if moved
            else []
        ),
    ]
    if metrics:
        parts.append('<table class="metrics"><tr><th>direction</th><th>R@1</th><th>R@5</th><th>R@10</th></tr>')
        for d in directions:
            m = metrics[METRIC_NAMES[d]]
            parts.append(
                f"<tr><td>{NAMES[d]}</td>" + "".join(f"<td>{m[f'R@{r}']:.1f} %</td>" for r in (1, 5, 10)) + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append('<p class="sub">No R@k: an approximate index answers queries only.</p>')
    for d in directions:
        qmod, gmod = DIRECTIONS[d]
        parts.append(f'<h2>{NAMES[d]}: {qmod} queries, {gmod} retrieved</h2><section class="direction" id="{d}">')
        for qkey, hits in results[d]:
            rank = ""
            if d in ranks:
                rank = f"<div>true pair at rank {int(ranks[d][space.row(qkey)])}</div>"
            parts.append('<div class="row">')
            qfiles = files.get(qkey, _Files())
            parts.append(_clip_html(qkey, qfiles, f"<div><b>query ({qmod})</b></div>{rank}", "clip query"))
            for r, (hkey, score) in enumerate(hits, 1):
                hfiles = files.get(hkey, _Files())
                hit = hkey == qkey
                same = not hit and bool(set(hfiles.labels) & set(qfiles.labels))
                mark = (
                    '<div class="mark">\u2713 true pair</div>'
                    if hit
                    else ('<div class="same">\u2248 same class</div>' if same else "")
                )
                extra = f'<div>#{r} <span class="score">{score:.3f}</span></div>{mark}'
                cls = "clip tile hit" if hit else "clip tile"
                parts.append(_clip_html(hkey, hfiles, extra, cls, "class" if same else ""))
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    log.info("gallery of %d queries x %d direction(s) -> %s", len(queries), len(directions), page)
    return page
