"""``cavmae prepare``: media files + metadata -> WebDataset shards and a manifest.

Three kinds of input (see :mod:`cavmae.data.labels` for the file formats):

- a folder of videos and an AudioSet segments CSV or a VGGSound CSV (labelled);
- a CAV-MAE datafile JSON (wav files + pre-extracted frames, labelled);
- a plain folder of videos (unlabelled, for self-supervised pre-training);
- an ESC-50 ``meta/esc50.csv`` with its audio folder (labelled, with each clip's fold).

Audio-only files (no video stream) are accepted by every kind and give samples without frames
(:mod:`cavmae.data.encode`). The manifest says what the shards hold: ``modalities`` of each shard (those every
sample in it has: ``["audio", "video"]`` or ``["audio"]``) and of the whole set, and ``fold_counts`` of each shard
when the metadata gives folds.

Planning (:func:`cavmae.data.sources.plan_inputs`) turns these into a sorted list of clips plus the rows and files
that cannot be used. Preparing (:func:`prepare_shards`) decodes every input in worker processes
(:func:`cavmae.data.encode.process_clip`) and packs the results in input order into ``<name>-000000.tar`` ... (a
new shard starts when the current one holds ``samples_per_shard`` samples or would pass ``max_shard_bytes``), then
writes ``<name>-manifest.json`` and ``<name>-labels.csv``.

Determinism and restarts: inputs are sorted by key and results are packed in that order whatever the number of
workers, and tars carry fixed metadata, so the same inputs and options give byte-identical shards. Each shard is
written to ``<shard>.tmp`` and renamed when complete; ``<name>-progress.json`` (rewritten atomically after every
shard) records the finished shards and the input index where the next one starts. Running again after an
interruption checks the finished shards (size), keeps them, discards the partial one and continues from there, so
the result is the same as an uninterrupted run. A finished job (manifest present, same inputs and options) is not
redone.

Failures never stop the job: every input that cannot be used is listed in the manifest with its reason
(``failed``), as are metadata rows without a file (``missing``), media files no row names (``unmatched``) and
files that are not media (``ignored``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from cavmae.data.encode import PrepareOptions, clipped_samples, process_clip
from cavmae.data.shards import TarShardWriter, file_sha256, sample_bytes, shard_name
from cavmae.data.sources import ClipInput, Plan

# Re-exported: callers and tests import these from here. The local pool below looks process_clip up in this
# module's namespace, so a test that replaces cavmae.data.prepare.process_clip reaches the workers.
__all__ = [
    "CRASHED",
    "FORMAT",
    "PrepareError",
    "PrepareOptions",
    "clipped_samples",
    "failure_summary",
    "prepare_shards",
    "process_clip",
]

log = logging.getLogger(__name__)

FORMAT = "cavmae-shards/1"


# ---------------------------------------------------------------------------------------------------------------
# packing into shards, with restart


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _fingerprint(plan: Plan, opts: PrepareOptions, samples_per_shard: int, max_shard_bytes: int) -> str:
    payload = {
        "format": FORMAT,
        "inputs": [_fingerprint_fields(c) for c in plan.inputs],
        "options": dataclasses.asdict(opts),
        "samples_per_shard": samples_per_shard,
        "max_shard_bytes": max_shard_bytes,
        "labels": plan.label_index.to_records() if plan.label_index else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fingerprint_fields(clip: ClipInput) -> dict:
    """An input's fields; ``fold`` only when set, so inputs without one keep the fingerprints they had before it."""
    fields = dataclasses.asdict(clip)
    if fields["fold"] is None:
        del fields["fold"]
    return fields


def _modalities(members: dict[str, bytes]) -> tuple[str, ...]:
    """What a sample holds: ("audio", "video") with frames (JPEGs or a raw mp4), ("audio",) without."""
    has_video = "mp4" in members or any(k.endswith(".jpg") for k in members)
    return ("audio", "video") if has_video else ("audio",)


CRASHED = "decoder crashed (its worker process died)"


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: exit when the parent process is gone (killed prepare must not leave workers behind)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _results(inputs: list[ClipInput], opts: PrepareOptions, workers: int):
    """(True, members) / (False, reason) for each input, in input order; at most 4 clips per worker in flight.

    A decoder that kills its process (a segfault in a codec on a damaged file) breaks the pool and every pending
    clip with it; the first unfinished clip is then retried alone in a fresh process, recorded as CRASHED if it
    kills that one too, and a new pool takes the rest. (With workers=0 a crash ends the job; a rerun resumes.)
    """
    if workers <= 0:
        for inp in inputs:
            yield process_clip(inp, opts)
        return
    ctx = multiprocessing.get_context()
    i = 0
    while i < len(inputs):
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),))
        pending: collections.deque = collections.deque()
        submitted = i
        try:
            while i < len(inputs):
                while submitted < len(inputs) and len(pending) < 4 * workers:
                    pending.append(pool.submit(process_clip, inputs[submitted], opts))
                    submitted += 1
                result = pending.popleft().result()
                i += 1
                yield result
        except BrokenProcessPool:
            log.warning("a decoder process died; retrying %s alone", inputs[i].rel)
            yield _isolated(inputs[i], opts, ctx)
            i += 1
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _isolated(inp: ClipInput, opts: PrepareOptions, ctx) -> tuple[bool, dict[str, bytes] | str]:
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        try:
            return pool.submit(process_clip, inp, opts).result()
        except BrokenProcessPool:
            return False, CRASHED


class PrepareError(RuntimeError):
    """The output folder holds something prepare must not overwrite without being told to."""


def prepare_shards(
    plan: Plan,
    out_dir: str | Path,
    *,
    name: str = "data",
    samples_per_shard: int = 1000,
    max_shard_bytes: int = 0,
    workers: int = 0,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    engine: Callable[[list[ClipInput], PrepareOptions], Iterator] | None = None,
) -> dict:
    """Decode the plan's inputs and write shards + manifest into `out_dir`; returns the manifest.

    samples_per_shard / max_shard_bytes (0 = no limit) bound each shard; workers = 0 decodes in this process.
    `progress(event, shard, count)` is called with ("sample", shard index, samples in it so far) after each sample
    and ("shard", shard index, samples) after each finished shard. `engine(inputs, options)` yields
    :func:`process_clip`'s result for each input, in order (default: this process or a local pool of `workers`;
    cavmae.data.engines.RayEngine decodes on a Ray cluster); packing, resume and the manifest do not depend on it.
    """
    opts = options or PrepareOptions()
    if samples_per_shard < 1:
        raise ValueError("samples_per_shard must be at least 1")
    if "/" in name or not name:
        raise ValueError(f"shard name {name!r} must be a plain file name prefix")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_file = out / f"{name}-manifest.json"
    progress_file = out / f"{name}-progress.json"
    fp = _fingerprint(plan, opts, samples_per_shard, max_shard_bytes)

    if manifest_file.exists() and not overwrite:
        old = json.loads(manifest_file.read_text())
        if old.get("fingerprint") == fp and all((out / s["file"]).is_file() for s in old["shards"]):
            log.info("%s is complete (same inputs and options); nothing to do", manifest_file)
            return old
        raise PrepareError(f"{manifest_file} comes from other inputs or options; pass overwrite (--overwrite)")
    state = {"fingerprint": fp, "shards": [], "failed": [], "next_input": 0}
    if progress_file.exists() and not overwrite:
        saved = json.loads(progress_file.read_text())
        if saved.get("fingerprint") != fp:
            raise PrepareError(
                f"{progress_file} belongs to an interrupted run with other inputs or options; "
                "pass overwrite (--overwrite) to start again"
            )
        state = _resume_state(saved, out)
    elif not overwrite and any(out.glob(f"{name}-[0-9]*.tar")):
        raise PrepareError(
            f"{out} already holds {name}-*.tar shards that no progress file describes; "
            "pass overwrite (--overwrite) or choose another --name"
        )
    # Drop partial shards and shards past the resume point (from the interrupted run; rewritten identically).
    keep = {s["file"] for s in state["shards"]}
    for p in list(out.glob(f"{name}-[0-9]*.tar")) + list(out.glob(f"{name}-[0-9]*.tar.tmp")):
        if p.name not in keep:
            p.unlink()
    if overwrite:
        manifest_file.unlink(missing_ok=True)
    _write_json_atomic(progress_file, state)

    num_classes = len(plan.label_index) if plan.label_index else 0
    start = state["next_input"]
    if start:
        log.info(
            "resuming after %d finished shard(s), at input %d of %d", len(state["shards"]), start, len(plan.inputs)
        )
    writer: TarShardWriter | None = None
    shard_first = start
    shard_labels: collections.Counter = collections.Counter()
    shard_keys: list[str] = []
    shard_folds: collections.Counter = collections.Counter()
    shard_modalities: set[tuple[str, ...]] = set()

    def finish(end_input: int) -> None:
        nonlocal writer, shard_first, shard_labels, shard_keys, shard_folds, shard_modalities
        assert writer is not None
        index = len(state["shards"])
        writer.close()
        final = out / shard_name(name, index)
        os.replace(writer.path, final)
        state["shards"].append(
            {
                "file": final.name,
                "count": writer.count,
                "bytes": final.stat().st_size,
                "sha256": file_sha256(final),
                "first_key": shard_keys[0],
                "last_key": shard_keys[-1],
                "first_input": shard_first,
                "end_input": end_input,
                "label_counts": {str(k): v for k, v in sorted(shard_labels.items())},
                # the modalities every sample of the shard holds (a shard mixing kinds counts as audio only)
                "modalities": sorted(set.intersection(*(set(m) for m in shard_modalities))),
            }
        )
        if shard_folds:
            state["shards"][-1]["fold_counts"] = {str(k): v for k, v in sorted(shard_folds.items())}
        state["next_input"] = end_input
        _write_json_atomic(progress_file, state)
        log.info(
            "wrote %s (%d samples, %.1f MB); %d of %d inputs done",
            final.name,
            writer.count,
            final.stat().st_size / 1e6,
            end_input,
            len(plan.inputs),
        )
        if progress:
            progress("shard", index, writer.count)
        writer, shard_first, shard_labels, shard_keys = None, end_input, collections.Counter(), []
        shard_folds, shard_modalities = collections.Counter(), set()

    results = engine(plan.inputs[start:], opts) if engine else _results(plan.inputs[start:], opts, workers)
    for i, (ok, result) in enumerate(results, start=start):
        inp = plan.inputs[i]
        if not ok:
            log.warning("skipped %s: %s", inp.rel, result)
            state["failed"].append({"input": inp.rel, "index": i, "reason": result})
            continue
        members = result
        size = sample_bytes(inp.key, members)
        if writer is not None and (
            writer.count >= samples_per_shard or (max_shard_bytes and writer.size + size + 1024 > max_shard_bytes)
        ):
            finish(i)
        if writer is None:
            writer = TarShardWriter(out / (shard_name(name, len(state["shards"])) + ".tmp"))
        writer.write(inp.key, members)
        shard_keys.append(inp.key)
        shard_labels.update(inp.label_indices)
        shard_modalities.add(_modalities(members))
        if inp.fold is not None:
            shard_folds[inp.fold] += 1
        if progress:
            progress("sample", len(state["shards"]), writer.count)
    if writer is not None:
        finish(len(plan.inputs))

    manifest = _manifest(plan, state, opts, name, samples_per_shard, max_shard_bytes, num_classes)
    if plan.label_index is not None:
        plan.label_index.to_csv(out / f"{name}-labels.csv")
    _write_json_atomic(manifest_file, manifest)
    progress_file.unlink(missing_ok=True)
    log.info(
        "%d samples in %d shard(s); %d failed, %d rows without a file -> %s",
        manifest["num_samples"],
        len(manifest["shards"]),
        len(manifest["failed"]),
        len(manifest["missing"]),
        manifest_file,
    )
    return manifest


def _resume_state(saved: dict, out: Path) -> dict:
    """The saved progress, cut at the first finished shard that is missing or has the wrong size."""
    good = []
    for s in saved["shards"]:
        p = out / s["file"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            log.warning("finished shard %s is missing or changed; redoing from there", s["file"])
            break
        good.append(s)
    next_input = good[-1]["end_input"] if good else 0
    return {
        "fingerprint": saved["fingerprint"],
        "shards": good,
        "failed": [f for f in saved["failed"] if f["index"] < next_input],
        "next_input": next_input,
    }


def _manifest(
    plan: Plan, state: dict, opts: PrepareOptions, name: str, samples_per_shard: int, max_bytes: int, k: int
) -> dict:
    counts = [0] * k
    for s in state["shards"]:
        for idx, c in s["label_counts"].items():
            counts[int(idx)] += c
    failed = sorted(plan.failed, key=lambda f: f["input"]) + [
        {"input": f["input"], "reason": f["reason"]} for f in state["failed"]
    ]
    shards = []
    for s in state["shards"]:
        entry = {k2: s[k2] for k2 in ("file", "count", "bytes", "sha256", "first_key", "last_key")}
        entry["modalities"] = s.get("modalities", ["audio", "video"])  # a progress file of an older version
        if "fold_counts" in s:
            entry["fold_counts"] = s["fold_counts"]
        shards.append(entry)
    kinds = [set(s["modalities"]) for s in shards]
    return {
        "format": FORMAT,
        "name": name,
        "mode": plan.mode,
        # the modalities every shard holds: ["audio"] when any shard has a sample without frames
        "modalities": sorted(set.intersection(*kinds)) if kinds else [],
        "fingerprint": state["fingerprint"],
        "options": {**dataclasses.asdict(opts), "samples_per_shard": samples_per_shard, "max_shard_bytes": max_bytes},
        "num_inputs": len(plan.inputs),
        "num_samples": sum(s["count"] for s in state["shards"]),
        "shards": shards,
        "label_index": plan.label_index.to_records() if plan.label_index else [],
        "label_counts": counts,
        "failed": failed,
        "missing": plan.missing,
        "unmatched": plan.unmatched,
        "ignored": plan.ignored,
    }


def failure_summary(manifest: dict) -> str:
    """Why inputs are not in the shards, counted, on one line: '3 input(s) failed (2 empty file (0 bytes), 1 no
    audio stream); 2 metadata row(s) name no file found; 1 file(s) are not audio/video (notes.txt)'.

    Failures are counted by the head of their reason (the text before its first ': ', which holds per-file
    detail)."""
    parts = []
    failed = manifest.get("failed") or []
    if failed:
        heads = collections.Counter(f["reason"].split(": ", 1)[0] for f in failed)
        parts.append(f"{len(failed)} input(s) failed ({', '.join(f'{n} {head}' for head, n in heads.most_common())})")
    if manifest.get("missing"):
        parts.append(f"{len(manifest['missing'])} metadata row(s) name no file found")
    if manifest.get("unmatched"):
        parts.append(f"{len(manifest['unmatched'])} media file(s) are named by no metadata row")
    ignored = manifest.get("ignored") or []
    if ignored:
        shown = ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        parts.append(f"{len(ignored)} file(s) are not audio/video ({shown})")
    return "; ".join(parts) if parts else "no input found"
