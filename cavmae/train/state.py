"""Training checkpoints: atomic, complete, loadable without unpickling anything but tensors and plain containers.

Layout of ``<out_dir>/checkpoints/ckpt-00001000/``::

    model.safetensors    weights of the unwrapped model (safetensors)
    optimizer.pt         optimizer.state_dict()                     (torch.save, loads with weights_only=True)
    trainer_state.pt     step / epoch / data position / counters, scheduler and grad-scaler state
    rng-<rank>.pt        python / numpy / torch / cuda RNG states of each process, as tensors and lists
    config.yaml          the resolved config
    meta.json            written last: step, world size, file list

Every process writes into ``.tmp-ckpt-<step>`` and the main process renames it to ``ckpt-<step>`` once all have
finished: a crash mid-write leaves only a temporary directory, which is ignored (and removed by the next save), so
``--resume auto`` always finds the previous complete checkpoint. This assumes ``out_dir`` is on a file system that
every process sees (as does Accelerate's save_state).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from cavmae.config import Config
from cavmae.config.loading import upgrade_saved
from cavmae.models.weights import (
    CheckpointError,
    DamagedCheckpointError,
    _load_strict,
    load_weights_only,
    read_safetensors,
)

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt-(\d{8})$")
FILES = ("model.safetensors", "optimizer.pt", "trainer_state.pt", "config.yaml", "meta.json")


@dataclass
class TrainState:
    """Where a run is. ``batch_in_epoch`` counts micro-batches of the current epoch already consumed."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0  # clips seen, all processes together
    bad_in_row: int = 0  # consecutive steps skipped for a non-finite loss or gradient
    bad_total: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# RNG states as tensors / lists (loadable with weights_only=True; numpy's state is a tuple holding an ndarray)


def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generators :func:`torch.random.fork_rng` must fork so that a forward on ``device``
    leaves the training RNG streams alone ([] off CUDA: the CPU generator is always forked)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# finding checkpoints


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints (renamed into place, with meta.json), oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=_step_of)


def _step_of(path: Path) -> int:
    return int(CKPT_RE.match(path.name).group(1))


def list_incomplete(out_dir: str | Path) -> list[Path]:
    """``ckpt-*`` directories without meta.json, oldest first. A save renames its directory into place only after
    writing meta.json, so these are not crashes mid-save (those stay ``.tmp-ckpt-*``): the file was lost or the
    directory only partly copied."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CKPT_RE.match(p.name) and p.is_dir() and not (p / "meta.json").is_file()]
    return sorted(found, key=_step_of)


def resume_candidates(resume: str, out_dir: str | Path) -> list[Path]:
    """The checkpoints to try, newest first: ``""`` -> none; ``auto`` -> the complete checkpoints of out_dir
    (none if there are none yet, said in a warning that names the folder: :func:`load_newest_readable` falls back
    through them); otherwise the one checkpoint directory named, which must exist and be complete.

    A ``ckpt-*`` directory without meta.json is reported, never skipped silently: newer than the one resumed, it
    is named in a warning; with no complete checkpoint beside it, resuming stops instead of starting afresh."""
    if not resume:
        return []
    if resume == "auto":
        found = list_checkpoints(out_dir)
        incomplete = list_incomplete(out_dir)
        newest = _step_of(found[-1]) if found else -1
        skipped = [str(p) for p in incomplete if _step_of(p) > newest]
        if skipped and not found:
            raise DamagedCheckpointError(
                f"--resume auto: {', '.join(skipped)} has no meta.json (lost, or the directory was partly copied) "
                f"and {checkpoint_root(out_dir)} holds no complete checkpoint; restore the checkpoint, or remove "
                "it to start from scratch"
            )
        if skipped:
            log.warning(
                "--resume auto: skipping %s: no meta.json (lost, or the directory was partly copied)",
                ", ".join(skipped),
            )
        if not found:
            # A preemptible job passes auto from its first start on, so this is no error; but a mistyped
            # train.out_dir lands here too, and must not pass for a resume.
            where = Path(out_dir).resolve()
            state = "holds no checkpoint" if where.exists() else "does not exist yet"
            log.warning("--resume auto: no checkpoint found: %s %s; training starts at step 0", where, state)
        return found[::-1]
    path = Path(resume)
    if not path.exists():
        raise CheckpointError(f"--resume {resume}: {path} does not exist")
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"--resume {resume}: {_not_a_checkpoint(path)}")
    return [path]


def _not_a_checkpoint(path: Path) -> str:
    """What ``path`` is instead of a checkpoint, and what to pass."""
    expected = "expected a checkpoint directory RUN/checkpoints/ckpt-NNNNNNNN holding meta.json, or 'auto'"
    if path.is_file():
        return f"{path} is a file; {expected}"
    if CKPT_RE.match(path.name):
        return f"{path} has no meta.json: an incomplete checkpoint (lost, or partly copied); {expected}"
    newest = list_checkpoints(path)
    if newest:
        return f"{path} is a run directory; pass --resume auto with train.out_dir={path}, or {newest[-1]}"
    return f"{path} is not a checkpoint (no meta.json); {expected}"


def resolve_resume(resume: str, out_dir: str | Path) -> Path | None:
    """The newest checkpoint :func:`resume_candidates` gives, or None."""
    found = resume_candidates(resume, out_dir)
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------------------------
# saving


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a.b": value}`` of a nested dict; a section saved as null (finetune) is one entry."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    accelerator,
    out_dir: str | Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: Config,
    keep_last: int = 0,
) -> Path:
    """Write the checkpoint of ``state.step`` atomically (every process must call this). Returns its path."""
    root = checkpoint_root(out_dir)
    final = root / f"ckpt-{state.step:08d}"
    tmp = root / f".tmp-ckpt-{state.step:08d}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-ckpt-*"):  # left by a crash mid-save: never complete, never read
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()

    torch.save(capture_rng(), tmp / f"rng-{accelerator.process_index}.pt")
    if main:
        weights = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"step": str(state.step)})
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        trainer = {"state": state.to_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler}
        torch.save(trainer, tmp / "trainer_state.pt")
        cfg.save(tmp / "config.yaml")
    accelerator.wait_for_everyone()
    if main:
        meta = {
            "step": state.step,
            "epoch": state.epoch,
            "world_size": accelerator.num_processes,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():
            _fsync(f)
        if final.exists():  # the same step saved again (e.g. the final save after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        if keep_last > 0:
            for old in list_checkpoints(out_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------------------------
# loading


def _load_pt(path: Path):
    if not path.is_file():
        raise DamagedCheckpointError(f"checkpoint file {path} is missing")
    return load_weights_only(path)


def load_newest_readable(
    paths: list[Path], accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, cfg: Config
) -> tuple[TrainState, Path]:
    """:func:`load_checkpoint` of the first of `paths` (newest first) whose files are all readable, saying which
    damaged ones it passed over. Every file a process reads here is shared by all processes, so all of them
    settle on the same checkpoint. A checkpoint that is readable but does not fit stops the run at once."""
    errors = []
    for i, path in enumerate(paths):
        try:
            state = load_checkpoint(path, accelerator, model, optimizer, scheduler, cfg)
        except DamagedCheckpointError as e:
            errors.append(str(e))
            if i + 1 < len(paths):
                log.warning("checkpoint %s is damaged (%s); falling back to the older %s", path, e, paths[i + 1])
            continue
        if errors:
            log.warning("resumed from %s, the newest readable checkpoint (%d newer one(s) damaged)", path, i)
        return state, path
    raise DamagedCheckpointError(
        f"no readable checkpoint to resume from ({len(paths)} tried): " + "; ".join(errors)
        if len(paths) > 1
        else errors[0]
    )


def load_checkpoint(
    path: str | Path, accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, cfg: Config
) -> TrainState:
    """Restore everything :func:`save_checkpoint` wrote into the (prepared) model, optimizer and scheduler, plus
    this process's RNG states. Returns the run state to continue from. Raises :class:`DamagedCheckpointError`
    when a file is missing or unreadable, :class:`CheckpointError` when a readable file does not fit."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise DamagedCheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise DamagedCheckpointError(f"{path / 'meta.json'} is not readable JSON (damaged): {e}") from e
    # Read every file before changing anything, so a damaged one leaves the model and optimizer as they were.
    weights = read_safetensors(path / "model.safetensors")
    optim_state = _load_pt(path / "optimizer.pt")
    trainer = _load_pt(path / "trainer_state.pt")
    if not isinstance(trainer, dict) or not {"state", "scheduler"} <= set(trainer):
        raise DamagedCheckpointError(f"{path / 'trainer_state.pt'} does not hold a trainer state (damaged)")
    _load_strict(accelerator.unwrap_model(model), weights, str(path / "model.safetensors"))
    try:
        optimizer.load_state_dict(optim_state)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / 'optimizer.pt'} does not fit this model's parameter groups: {e}") from e
    scheduler.load_state_dict(trainer["scheduler"])
    if accelerator.scaler is not None and trainer.get("scaler"):
        accelerator.scaler.load_state_dict(trainer["scaler"])
    rng = path / f"rng-{accelerator.process_index}.pt"
    if meta.get("world_size") != accelerator.num_processes:
        log.warning(
            "checkpoint %s was written by %s processes, this run has %d: the data order and random masks will "
            "differ from an uninterrupted run",
            path,
            meta.get("world_size"),
            accelerator.num_processes,
        )
    rng_state = None
    if rng.is_file():
        try:  # this process's own file: a damaged one must not send this process alone to another checkpoint
            rng_state = _load_pt(rng)
        except DamagedCheckpointError as e:
            log.warning("%s; continuing with fresh seeds", e)
    else:
        log.warning("%s has no RNG state for process %d; continuing with fresh seeds", path, accelerator.process_index)
    if rng_state is not None:
        restore_rng(rng_state)
    _warn_config_changes(path, cfg)
    state = TrainState(**trainer["state"])
    log.info("resumed from %s (step %d, epoch %d)", path, state.step, state.epoch)
    return state


def _warn_config_changes(path: Path, cfg: Config) -> None:
    """Log the settings that differ from the checkpoint's (some changes are intended, e.g. more epochs)."""
    saved = _flat(upgrade_saved(yaml.safe_load((path / "config.yaml").read_text()) or {}))
    now = _flat(cfg.to_dict())
    changed = [
        f"{key}: {saved.get(key)!r} -> {value!r}"
        for key, value in now.items()
        if saved.get(key) != value and key != "train.out_dir"
    ]
    if changed:
        log.warning("config differs from checkpoint %s: %s", path, "; ".join(changed))
