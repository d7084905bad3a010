"""Planning for ``cavmae prepare``: which clips to make from a folder of videos, a metadata CSV or a datafile.

Three kinds of input (file formats in :mod:`cavmae.data.labels`):

- a folder of videos and an AudioSet segments CSV or a VGGSound CSV (labelled): rows are matched to files named
  ``<ytid>_<start:.3f>`` / ``<ytid>_<start:06d>`` / ``<ytid>_<start>`` (the file holds just the clip) or ``<ytid>``
  (the whole video; the row's window is cut from it);
- a CAV-MAE datafile JSON (wav files + pre-extracted frames, labelled);
- a plain folder of videos (unlabelled, for self-supervised pre-training; the first ``clip_seconds`` of each file);
- a folder of audio files and ESC-50's ``meta/esc50.csv`` (recognised by its header; labelled, with folds).

Every kind takes audio-only files too (wav / flac / mp3 / ogg / m4a / an mp4 without video): they become samples
without frames (:mod:`cavmae.data.encode`).

The result is a :class:`Plan`: the clips sorted by key (so the shards do not depend on directory order), plus the
rows and files that cannot be used, each with its reason, for the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cavmae.data.labels import (
    LabelIndex,
    MetadataError,
    detect_csv_layout,
    esc50_label_index,
    read_audioset_csv,
    read_datafile,
    read_esc50_csv,
    read_vggsound_csv,
)
from cavmae.data.shards import NUM_FRAMES, make_key

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ts"}
AUDIO_EXTS = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"}
MEDIA_EXTS = VIDEO_EXTS | AUDIO_EXTS


@dataclass
class ClipInput:
    """One clip to turn into a sample (picklable: it travels to the worker processes)."""

    key: str
    source: str  # absolute path of the media file (datafile mode: the wav)
    rel: str  # source as recorded in the sample (relative to the input folder when possible)
    clip_start: float = 0.0  # window of the file to use (s)
    clip_end: float | None = None  # None: to the end of the file
    ytid: str | None = None
    start: float | None = None  # segment in the original video, as the metadata gives it
    end: float | None = None
    labels: list[str] = field(default_factory=list)
    label_indices: list[int] = field(default_factory=list)
    split: str | None = None
    frame_paths: list[str] | None = None  # datafile mode: frame_0 .. frame_9 JPEG paths ([]: audio only)
    fold: int | None = None  # cross-validation fold the metadata gives (ESC-50), stored in the sample json


@dataclass
class Plan:
    """What prepare will do: inputs in order, plus what was found unusable while reading the metadata."""

    mode: str  # "audioset", "vggsound", "datafile" or "folder"
    inputs: list[ClipInput]
    label_index: LabelIndex | None
    failed: list[dict] = field(default_factory=list)  # {"input", "reason"}
    missing: list[dict] = field(default_factory=list)  # metadata rows whose file was not found
    unmatched: list[str] = field(default_factory=list)  # media files that no metadata row names
    ignored: list[str] = field(default_factory=list)  # files that are not media


# ---------------------------------------------------------------------------------------------------------------
# planning


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _scan(folder: Path) -> tuple[list[Path], list[str]]:
    """Media files under `folder` (recursive, sorted) and the other files (ignored)."""
    if not folder.is_dir():
        raise MetadataError(f"video folder {folder} does not exist or is not a folder")
    media, ignored = [], []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        (media if p.suffix.lower() in MEDIA_EXTS else ignored).append(p)
    names = [_rel(p, folder) for p in ignored]
    if names:
        log.warning(
            "skipped %d file(s) in %s that are not audio/video: %s%s (audio/video: %s)",
            len(names),
            folder,
            ", ".join(names[:10]),
            " ..." if len(names) > 10 else "",
            " ".join(sorted(MEDIA_EXTS)),
        )
    return media, names


def _dedupe(inputs: list[ClipInput], failed: list[dict]) -> list[ClipInput]:
    """Sort by key; a later input with a key already taken fails (keys must be unique inside the shards)."""
    inputs = sorted(inputs, key=lambda c: (c.key, c.rel))
    out, seen = [], {}
    for c in inputs:
        if c.key in seen:
            failed.append({"input": c.rel, "reason": f"duplicate key {c.key} (also the key of {seen[c.key]})"})
            continue
        seen[c.key] = c.rel
        out.append(c)
    return out


def plan_folder(videos: str | Path, clip_seconds: float = 10.0) -> Plan:
    """Every media file of a folder as one unlabelled clip (its first `clip_seconds`)."""
    root = Path(videos).resolve()
    media, ignored = _scan(root)
    failed: list[dict] = []
    inputs = []
    for p in media:
        try:
            key = make_key(p.stem)
        except ValueError as e:
            failed.append({"input": _rel(p, root), "reason": str(e)})
            continue
        inputs.append(ClipInput(key=key, source=str(p), rel=_rel(p, root), clip_start=0.0, clip_end=clip_seconds))
    return Plan("folder", _dedupe(inputs, failed), None, failed=failed, ignored=ignored)


def _candidate_stems(ytid: str, start: float) -> list[tuple[str, bool]]:
    """File stems that name a clip, and whether the file is the clip itself (True) or the whole video (False)."""
    stems = [(f"{ytid}_{start:.3f}", True), (f"{ytid}_{int(start):06d}", True), (f"{ytid}_{int(start)}", True)]
    if float(start).is_integer():
        stems.append((f"{ytid}_{start:.1f}", True))
    stems.append((ytid, False))
    return stems


def plan_segments(
    videos: str | Path,
    csv_path: str | Path,
    label_csv: str | Path | None = None,
    *,
    layout: Literal["auto", "audioset", "vggsound"] = "auto",
    split: str | None = None,
    clip_seconds: float = 10.0,
) -> Plan:
    """Clips named by an AudioSet segments CSV or a VGGSound CSV, matched to the files of a folder.

    A row matches ``<ytid>_<start:.3f>``, ``<ytid>_<start:06d>`` or ``<ytid>_<start>`` (a file holding just the
    clip: used from 0 s) or ``<ytid>`` (the whole video: the window [start, end] is used). Labels are mapped with
    `label_csv` (mids for AudioSet, display names or mids for VGGSound); without it an index is built from the
    labels in the CSV (sorted).
    """
    root = Path(videos).resolve()
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MetadataError(f"metadata CSV {csv_path} does not exist")
    if layout == "auto":
        layout = detect_csv_layout(csv_path)  # type: ignore[assignment]
    if layout == "audioset":
        rows, problems = read_audioset_csv(csv_path)
    elif layout == "vggsound":
        rows, problems = read_vggsound_csv(csv_path, split)
    else:
        raise MetadataError(f"unknown CSV layout {layout!r}; expected 'audioset' or 'vggsound'")
    if label_csv:
        index = LabelIndex.from_csv(label_csv)
    else:
        index = LabelIndex.from_names([label for r in rows for label in r.labels])
        log.warning("no label index given: built one from the %d labels in %s (sorted)", len(index), csv_path)
    media, ignored = _scan(root)
    by_stem: dict[str, Path] = {}
    for p in media:
        by_stem.setdefault(p.stem, p)
    failed = [{"input": p.where, "reason": p.reason} for p in problems]
    missing, inputs, used = [], [], set()
    for row in rows:
        stems = _candidate_stems(row.ytid, row.start)
        found = next(((by_stem[s], is_clip) for s, is_clip in stems if s in by_stem), None)
        if found is None:
            missing.append({"input": row.where, "ytid": row.ytid, "start": row.start, "reason": "no file found"})
            continue
        path, is_clip = found
        used.add(path)
        found_idx = [index.get(label) for label in row.labels]
        indices = [int(i) for i in found_idx if i is not None]
        if None in found_idx:
            failed.append({"input": _rel(path, root), "reason": index.problem(row.labels)})
            continue
        length = (row.end - row.start) if row.end is not None else clip_seconds
        clip_start = 0.0 if is_clip else row.start
        inputs.append(
            ClipInput(
                key=make_key(path.stem),
                source=str(path),
                rel=_rel(path, root),
                clip_start=clip_start,
                clip_end=clip_start + length,
                ytid=row.ytid,
                start=row.start,
                end=row.end if row.end is not None else row.start + length,
                labels=list(row.labels),
                label_indices=indices,
                split=row.split,
            )
        )
    unmatched = [_rel(p, root) for p in media if p not in used]
    return Plan(
        layout,
        _dedupe(inputs, failed),
        index,
        failed=failed,
        missing=missing,
        unmatched=unmatched,
        ignored=ignored,
    )


def plan_esc50(audio: str | Path, csv_path: str | Path, label_csv: str | Path | None = None) -> Plan:
    """Clips of an ESC-50 ``meta/esc50.csv`` matched by file name to the files of `audio` (ESC-50's ``audio/``):
    each clip keeps its fold and its class (``category``, index ``target``; `label_csv` maps categories to other
    indices when given). The whole file is the clip."""
    root = Path(audio).resolve()
    if not Path(csv_path).is_file():
        raise MetadataError(f"metadata CSV {csv_path} does not exist")
    rows, problems = read_esc50_csv(csv_path)
    index = LabelIndex.from_csv(label_csv) if label_csv else esc50_label_index(rows)
    media, ignored = _scan(root)
    by_name: dict[str, Path] = {}
    for p in media:
        by_name.setdefault(p.name, p)
    failed = [{"input": p.where, "reason": p.reason} for p in problems]
    missing, inputs, used = [], [], set()
    for row in rows:
        path = by_name.get(Path(row.filename).name)
        if path is None:
            missing.append({"input": row.where, "filename": row.filename, "reason": "no file found"})
            continue
        used.add(path)
        target = row.target if not label_csv else index.get(row.category)
        if target is None:
            failed.append({"input": _rel(path, root), "reason": index.problem([row.category])})
            continue
        try:
            key = make_key(path.stem)
        except ValueError as e:
            failed.append({"input": _rel(path, root), "reason": str(e)})
            continue
        inputs.append(
            ClipInput(
                key=key,
                source=str(path),
                rel=_rel(path, root),
                clip_end=None,
                labels=[row.category],
                label_indices=[target],
                fold=row.fold,
            )
        )
    unmatched = [_rel(p, root) for p in media if p not in used]
    return Plan(
        "esc50", _dedupe(inputs, failed), index, failed=failed, missing=missing, unmatched=unmatched, ignored=ignored
    )


def plan_datafile(datafile: str | Path, label_csv: str | Path | None = None) -> Plan:
    """Clips of a CAV-MAE datafile JSON: audio from the wav, frames from ``<video_path>/frame_<i>/<id>.jpg``.

    Relative paths are taken relative to the datafile's folder.
    """
    datafile = Path(datafile)
    entries, problems = read_datafile(datafile)
    if label_csv:
        index = LabelIndex.from_csv(label_csv)
    else:
        index = LabelIndex.from_names([m for e in entries for m in e.labels])
        log.warning("no label index given: built one from the %d labels in %s (sorted)", len(index), datafile)
    base = datafile.resolve().parent
    failed = [{"input": p.where, "reason": p.reason} for p in problems]
    inputs = []
    for e in entries:
        wav = Path(e.wav) if Path(e.wav).is_absolute() else base / e.wav
        vpath = Path(e.video_path) if Path(e.video_path).is_absolute() else base / e.video_path
        indices = [index.get(m) for m in e.labels]
        if None in indices:
            failed.append({"input": e.where, "reason": index.problem(e.labels)})
            continue
        try:
            key = make_key(e.video_id)
        except ValueError as err:
            failed.append({"input": e.where, "reason": str(err)})
            continue
        # a row without video_path is audio only
        frames = [str(vpath / f"frame_{i}" / f"{e.video_id}.jpg") for i in range(NUM_FRAMES)] if e.video_path else []
        inputs.append(
            ClipInput(
                key=key,
                source=str(wav),
                rel=e.wav,
                labels=list(e.labels),
                label_indices=[int(i) for i in indices],
                frame_paths=frames,
            )
        )
    return Plan("datafile", _dedupe(inputs, failed), index, failed=failed)


def plan_inputs(
    *,
    videos: str | Path | None = None,
    csv: str | Path | None = None,
    datafile: str | Path | None = None,
    label_csv: str | Path | None = None,
    layout: Literal["auto", "audioset", "vggsound", "esc50"] = "auto",
    split: str | None = None,
    clip_seconds: float = 10.0,
) -> Plan:
    """The plan for one of the three input kinds: `datafile`, or `videos` with `csv`, or `videos` alone."""
    if datafile is not None:
        if videos is not None or csv is not None:
            raise MetadataError("give either a datafile or a video folder (with or without a CSV), not both")
        return plan_datafile(datafile, label_csv)
    if videos is None:
        raise MetadataError("nothing to prepare: give a video folder (--videos) or a datafile (--datafile)")
    if csv is not None and (
        layout == "esc50" or (layout == "auto" and Path(csv).is_file() and detect_csv_layout(csv) == "esc50")
    ):
        return plan_esc50(videos, csv, label_csv)
    if csv is not None:
        return plan_segments(videos, csv, label_csv, layout=layout, split=split, clip_seconds=clip_seconds)
    return plan_folder(videos, clip_seconds)
