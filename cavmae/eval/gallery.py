"""A retrieval gallery people can look at and listen to: one self-contained HTML page plus its media files.

For each query clip (chosen keys, or a seeded random sample) and each direction, the page shows the query's middle
frame and an audio player, then the top-k clips retrieved in the other modality, each with its frame, an audio
player, the cosine score, its rank and a mark when it is the query's true pair; R@1/5/10 of the whole set sit at
the top. Frames are the shards' own JPEGs (the middle frame, as retrieval embeds it), audio is the first
`audio_seconds` of each clip as 16-bit 16 kHz WAV; everything lies in ``media/`` beside ``index.html`` and the
page loads nothing from the network (no scripts, fonts or styles from elsewhere), so the folder can be copied or
served as it is.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cavmae.eval.search import DIRECTIONS, METRIC_NAMES, SearchSpace

log = logging.getLogger(__name__)

NAMES = {"v2a": "video \u2192 audio", "a2v": "audio \u2192 video"}


@dataclass
class ClipMedia:
    jpeg: bytes | None = None
    wav: bytes | None = None


def _wav(audio: np.ndarray, seconds: float) -> bytes:
    """float32 [N] 16 kHz -> the first `seconds` as 16-bit PCM WAV bytes."""
    import soundfile as sf

    pcm = np.clip(np.rint(audio[: int(seconds * 16000)] * 32768.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _from_members(members: dict[str, bytes], seconds: float) -> ClipMedia:
    """Middle frame and audio of one shard sample ({ext: bytes})."""
    import soundfile as sf

    media = ClipMedia()
    frames = sorted((int(ext[1:-4]), ext) for ext in members if ext.startswith("f") and ext.endswith(".jpg"))
    if frames:
        media.jpeg = members[frames[len(frames) // 2][1]]  # f5 of ten: the frame retrieval embeds
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
            frame, _ = video.at([evenly_spaced_times(0.0, video.end_time, 10)[5]])
            buf = io.BytesIO()
            Image.fromarray(frame[0]).save(buf, format="JPEG", quality=90)
            media.jpeg = buf.getvalue()


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
    for url in _shards_for(expand_shards(list(shards)), wanted):
        with tarfile.open(url) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key in wanted and member.isfile():
                    found.setdefault(key, {})[ext] = tar.extractfile(member).read()
        if len(found) == len(wanted):
            break
    missing = wanted - set(found)
    if missing:
        log.warning("%d clip(s) not found in the shards (shown without media), e.g. %s", len(missing), min(missing))
    return {k: _from_members(m, audio_seconds) for k, m in found.items()}


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
.mark{color:#2a9d3a;font-weight:700} .miss{color:#999}
"""


def _clip_html(key: str, files: dict[str, tuple[str | None, str | None]], extra: str, cls: str) -> str:
    jpg, wav = files.get(key, (None, None))
    img = f'<img src="{jpg}" alt="middle frame of {html.escape(key)}">' if jpg else '<div class="noimg">no frame</div>'
    audio = f'<audio controls preload="metadata" src="{wav}"></audio>' if wav else '<div class="miss">no audio</div>'
    return f'<div class="{cls}">{img}{audio}<div class="key">{html.escape(key)}</div>{extra}</div>'


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
) -> Path:
    """Write ``index.html`` and ``media/`` into `out_dir` (see the module docstring); returns the page's path.

    `metrics` (R@k per direction, as :meth:`SearchSpace.metrics`) is computed here when not given and the search
    is exact; an approximate index gives none (the page says so).
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
    files: dict[str, tuple[str | None, str | None]] = {}
    for n, key in enumerate(shown):
        m = media.get(key, ClipMedia())
        jpg = wav = None
        if m.jpeg:
            jpg = f"media/{n:05d}.jpg"
            (out / jpg).write_bytes(m.jpeg)
        if m.wav:
            wav = f"media/{n:05d}.wav"
            (out / wav).write_bytes(m.wav)
        files[key] = (jpg, wav)

    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="sub">{len(space)} clips; top {k} of {len(queries)} queries per direction; '
        "a green frame marks the query's true pair; scores are cosine similarities.</div>",
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
            parts.append(_clip_html(qkey, files, f"<div><b>query ({qmod})</b></div>{rank}", "clip query"))
            for r, (hkey, score) in enumerate(hits, 1):
                hit = hkey == qkey
                mark = '<div class="mark">\u2713 true pair</div>' if hit else ""
                extra = f'<div>#{r} <span class="score">{score:.3f}</span></div>{mark}'
                parts.append(_clip_html(hkey, files, extra, "clip tile hit" if hit else "clip tile"))
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    log.info("gallery of %d queries x %d direction(s) -> %s", len(queries), len(directions), page)
    return page
