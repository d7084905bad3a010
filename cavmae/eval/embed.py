"""``cavmae embed``: a shard set -> embedding shards (one per input shard), resumable, on one or many GPUs.

Each input shard ``.../<name>-000123.tar`` gives ``<out>/emb-000123.safetensors`` holding ``audio`` and ``video``
[n, D] (L2-normalised, fp16 or fp32) with the clip keys and the source shard in its metadata, in the shard's
order; ``<out>/embeddings.json`` lists them in input order. A file is written to ``.tmp`` and renamed, so an
embedding shard on disk is complete: a rerun after an interruption skips the shards already done (checked by
their recorded source) and embeds the rest. Under ``accelerate launch`` process r of W takes input shards r, r+W,
...; the main process writes the manifest once every process is done.

With a per-frame scoring (``eval.scoring`` / ``--scoring``; cavmae/eval/scoring.py) every frame of a clip is
embedded (with its audio window when data.audio_window > 0) and a shard holds ``audio`` / ``video`` [n, N, D],
each frame normalised; the manifest and each shard record the scoring.

``inputs="audio"`` (``--inputs audio``, the name of finetune.inputs): the audio stream only, for audio features
of audio datasets. It is an audio job under the loader's rule (cavmae/data/loader.py): audio-only and audio-visual
shards alike are read, frames never decoded, and each embedding shard holds ``audio`` alone; the manifest and each
shard record their ``modalities``. One vector per clip: a per-frame scoring pairs frames and is refused.

The vectors are the paper's retrieval features (unmasked modality streams, mean-pooled; see
:mod:`cavmae.eval.retrieval`); fp16 halves the disk and loses ~1e-3 of cosine (L2-normalised values, 11-bit
mantissa), which is below the spread of retrieval scores.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from cavmae.config import Config
from cavmae.eval.retrieval import EmbeddingSet, embed_frames
from cavmae.eval.scoring import resolve_scoring

log = logging.getLogger(__name__)

FORMAT = "cavmae-embeddings/1"
MANIFEST = "embeddings.json"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
INPUTS = {"audiovisual": ["audio", "video"], "audio": ["audio"]}  # --inputs -> the modalities embedded


class AudioOnlyEmbeddingsError(ValueError):
    """An audio-only embedding set (``embed --inputs audio``) given to cross-modal retrieval (index, retrieve)."""


def embedding_file(index: int) -> str:
    return f"emb-{index:06d}.safetensors"


def _done_count(path: Path, source: str, scoring: str = "clip", inputs: str = "audiovisual") -> int | None:
    """Clips in a finished embedding shard made from `source` for `scoring` and `inputs`, or None (absent,
    unreadable, from elsewhere, for another scoring or other modalities)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("source") != source or meta.get("scoring", "clip") != scoring:
                return None
            if json.loads(meta.get("modalities", '["audio", "video"]')) != INPUTS[inputs]:
                return None
            return len(json.loads(meta["keys"]))
    except Exception:
        return None


def _embed_one(
    model, shard: str, cfg: Config, device, scoring: str, inputs: str = "audiovisual"
) -> tuple[list[str], torch.Tensor, torch.Tensor | None, dict]:
    """(keys, audio, video normalised float32 ([n, D]; [n, N, D] per frame with a per-frame scoring; video None
    with ``inputs="audio"``), skipped-sample counts) of one input shard."""
    from cavmae.data.loader import loader_for

    frames = "middle" if scoring == "clip" else "all"
    with_video = inputs == "audiovisual"
    loader = loader_for(cfg, [shard], train=False, frame_mode=frames, rank=0, world_size=1, frames=with_video)
    windows = cfg.data.audio_window > 0
    keys, audio, video = [], [], []
    with torch.no_grad():
        for batch in loader:
            if not with_video:  # audio [B, L, F] (the middle frame's window with data.audio_window)
                audio.append(F.normalize(model.embed_audio(batch["audio"].to(device)).float(), dim=-1).cpu())
                keys.extend(batch["keys"])
                continue
            if scoring == "clip":
                a, v = model.embed(batch["audio"].to(device), batch["frames"].to(device))
            else:
                a, v = embed_frames(model, batch["audio"].to(device), batch["frames"].to(device), windows)
            audio.append(F.normalize(a.float(), dim=-1).cpu())
            video.append(F.normalize(v.float(), dim=-1).cpu())
            keys.extend(batch["keys"])
    empty = (0, model.cfg.embed_dim) if scoring == "clip" else (0, cfg.data.num_frames, model.cfg.embed_dim)
    a = torch.cat(audio) if audio else torch.empty(empty)
    v = (torch.cat(video) if video else torch.empty(empty)) if with_video else None
    return keys, a, v, {k: n for k, n in loader.errors.counts().items() if n}


def embed_to_shards(
    model,
    shards: list[str],
    out_dir: str | Path,
    cfg: Config,
    *,
    dtype: str = "fp16",
    model_name: str = "",
    overwrite: bool = False,
    accelerator=None,
    progress: bool = True,
    inputs: str = "audiovisual",
) -> dict | None:
    """Embed every input shard into `out_dir` (see the module docstring); returns the manifest (main process).

    `accelerator`: an ``accelerate.Accelerator`` (its device and process split are used); None = this process only.
    `inputs`: ``audiovisual`` (audio and video vectors) or ``audio`` (the audio stream only, any shards).
    """
    from tqdm import tqdm

    from cavmae.data.shards import expand_shards

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    urls = expand_shards(shards)
    if not urls:
        raise ValueError("no shards given")
    if len(set(urls)) != len(urls):
        raise ValueError("the shard list names a shard twice")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else torch.device("cpu")
    main = rank == 0
    manifest_file = out / MANIFEST
    if inputs == "audio":
        if cfg.eval.scoring not in ("auto", "clip"):
            raise ValueError(
                f"eval.scoring={cfg.eval.scoring} scores frames against audio; --inputs audio embeds one audio vector "
                "per clip: use --scoring clip (or auto)"
            )
        scoring = "clip"
    else:
        scoring = resolve_scoring(cfg.eval.scoring, model.cfg, cfg.data)
    modalities = INPUTS[inputs]
    if manifest_file.is_file() and not overwrite:
        old = json.loads(manifest_file.read_text())
        if [s["source"] for s in old.get("shards", [])] != urls or old.get("dtype") != dtype:
            raise ValueError(f"{manifest_file} describes other shards or another dtype; pass --overwrite")
        if old.get("scoring", "clip") != scoring:
            raise ValueError(f"{manifest_file} holds {old.get('scoring', 'clip')!r} embeddings; pass --overwrite")
        old_modalities = old.get("modalities", INPUTS["audiovisual"])
        if old_modalities != modalities:
            raise ValueError(f"{manifest_file} holds {'+'.join(old_modalities)} embeddings; pass --overwrite")
    cfg = replace(cfg, model=model.cfg)  # input sizes of the model being used
    model.eval().to(device)

    mine = list(range(rank, len(urls), world))
    todo = [i for i in mine if overwrite or _done_count(out / embedding_file(i), urls[i], scoring, inputs) is None]
    if len(todo) < len(mine):
        log.info(
            "%d of %d shard(s) already embedded; embedding the other %d", len(mine) - len(todo), len(mine), len(todo)
        )
    bar = tqdm(total=len(todo), desc="embedding", unit="shard", disable=not (progress and main))
    clips, start = 0, time.perf_counter()
    for i in todo:
        keys, a, v, skipped = _embed_one(model, urls[i], cfg, device, scoring, inputs)
        if skipped:
            log.warning("%s: skipped samples: %s", urls[i], skipped)
        path = out / embedding_file(i)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {"audio": a.to(DTYPES[dtype]).contiguous()}
        if v is not None:
            tensors["video"] = v.to(DTYPES[dtype]).contiguous()
        meta = {"keys": json.dumps(keys), "source": urls[i], "format": FORMAT, "scoring": scoring}
        save_file(tensors, str(tmp), metadata={**meta, "modalities": json.dumps(modalities)})
        tmp.replace(path)
        clips += len(keys)
        bar.update(1)
        bar.set_postfix(clips=clips, clips_per_s=f"{clips / max(time.perf_counter() - start, 1e-9):.1f}")
    bar.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if not main:
        return None
    entries = []
    for i, url in enumerate(urls):
        n = _done_count(out / embedding_file(i), url, scoring, inputs)
        if n is None:
            raise RuntimeError(f"{out / embedding_file(i)} is missing after embedding {url}")
        entries.append({"source": url, "file": embedding_file(i), "count": n})
    manifest = {
        "format": FORMAT,
        "model": model_name,
        "dtype": dtype,
        "dim": model.cfg.embed_dim,
        "scoring": scoring,  # per-frame scorings store [n, N, D] per shard (cavmae/eval/scoring.py)
        "modalities": modalities,  # ["audio"]: embed --inputs audio, the shards hold no video tensor
        "num_clips": sum(e["count"] for e in entries),
        "shards": entries,
    }
    tmp = manifest_file.with_name(manifest_file.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(manifest_file)
    log.info("%d clips from %d shard(s) -> %s", manifest["num_clips"], len(entries), out)
    return manifest


def load_embeddings(path: str | Path, need_video: bool = False) -> EmbeddingSet:
    """An :class:`EmbeddingSet` (float32) from one embeddings file (``retrieve --out``) or an ``embed`` folder.
    ``need_video`` (cross-modal retrieval): an audio-only set raises :class:`AudioOnlyEmbeddingsError`."""
    emb = _load_embeddings(Path(path))
    if need_video and emb.video is None:
        raise AudioOnlyEmbeddingsError(
            f"{path} holds audio embeddings only (cavmae embed --inputs audio): cross-modal retrieval needs video "
            "embeddings (embed audio-visual shards with --inputs audiovisual)"
        )
    return emb


def _load_embeddings(path: Path) -> EmbeddingSet:
    if not path.is_dir():
        return EmbeddingSet.load(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise ValueError(f"{path} is a folder without {MANIFEST}: not written by cavmae embed (or not finished)")
    manifest = json.loads(manifest_file.read_text())
    keys, audio, video = [], [], []
    scoring = manifest.get("scoring", "clip")
    for entry in manifest["shards"]:
        part = EmbeddingSet.load(path / entry["file"])
        keys.extend(part.keys)
        audio.append(part.audio.float())
        if part.video is not None:
            video.append(part.video.float())
    if video and len(video) != len(manifest["shards"]):
        raise ValueError(f"{path}: some embedding shards hold video and others do not")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate keys across embedding shards")
    if not keys:
        raise ValueError(f"{path}: the embedding shards hold no clips")
    return EmbeddingSet(keys, torch.cat(audio), torch.cat(video) if video else None, scoring)
