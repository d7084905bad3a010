"""Model files: our format (safetensors + config), the public CAV-MAE ``.pth`` layout, and MAE ImageNet init.

Our model directory holds ``model.safetensors`` (weights; metadata names the model class) and ``config.yaml``
(the full resolved :class:`~cavmae.config.Config`). Public CAV-MAE checkpoints are state dicts saved from
``nn.DataParallel`` (``module.`` prefix) whose key names equal ours. Untrusted ``.pth`` files are read with
``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from cavmae.config import Config, ConfigError, ModelConfig, from_dict
from cavmae.models.embed import sincos_2d

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
KINDS = ("pretrain", "classifier")


class CheckpointError(ValueError):
    """A model file that cannot be read or does not fit the model."""


class DamagedCheckpointError(CheckpointError):
    """A file that cannot be read at all (truncated, corrupt, missing from its checkpoint), as opposed to a
    readable one that does not fit the model: resume falls back to an older checkpoint only on these."""


def model_kind(model: nn.Module) -> str:
    from cavmae.models.classifier import CAVMAEClassifier

    return "classifier" if isinstance(model, CAVMAEClassifier) else "pretrain"


def build_model(kind: str, cfg: ModelConfig, head: str = "linear") -> nn.Module:
    from cavmae.models.cavmae import CAVMAE
    from cavmae.models.classifier import CAVMAEClassifier

    if kind not in KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    return CAVMAE(cfg) if kind == "pretrain" else CAVMAEClassifier(cfg, head)


# ---------------------------------------------------------------------------------------------------------------
# our format


def save_pretrained(model: nn.Module, directory: str | Path, config: Config | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.yaml`` into `directory` (created; files replaced atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = config or Config(model=model.cfg)
    if config.model != model.cfg:
        raise ConfigError("save_pretrained: config.model differs from the model's own config")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"cavmae_kind": model_kind(model), "format": "pt"})
    tmp.replace(directory / WEIGHTS)
    tmp_cfg = directory / (CONFIG + ".tmp")
    config.save(tmp_cfg)
    tmp_cfg.replace(directory / CONFIG)
    return directory


def _read_kind(weights: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
    return meta.get("cavmae_kind")


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, with an error that names the file when it is damaged or truncated."""
    path = Path(path)
    if not path.is_file():
        raise DamagedCheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise DamagedCheckpointError(f"{path} is not a readable safetensors file (damaged or truncated): {e}") from e


def model_directory(path: str | Path) -> Path:
    """The folder holding ``model.safetensors`` that a user means by `path`: our model directory or a training
    checkpoint (``ckpt-*``) as it is, a run directory through its final ``model/``. Anything else is an error
    that says what to pass instead."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    if (path / "model" / WEIGHTS).is_file():  # a run directory: its final model
        log.info("%s is a run directory: using its final model %s", path, path / "model")
        return path / "model"
    checkpoints = sorted((path / "checkpoints").glob("ckpt-*/" + WEIGHTS))
    if checkpoints:
        raise CheckpointError(
            f"{path} is a run directory without a final model ({path / 'model'} is missing: the run has not "
            f"finished); pass one of its checkpoints instead, e.g. {checkpoints[-1].parent}"
        )
    raise CheckpointError(
        f"{path} is not a cavmae model directory: {WEIGHTS} is missing (expected our model directory such as "
        "runs/NAME/model, a run directory holding model/, a training checkpoint, or a .pth file)"
    )


def from_pretrained(directory: str | Path) -> tuple[nn.Module, Config]:
    """Load a model directory written by :func:`save_pretrained` (or a run directory / training checkpoint, see
    :func:`model_directory`). Returns (model in eval mode, config)."""
    directory = model_directory(directory)
    weights, cfg_path = directory / WEIGHTS, directory / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory} is not a cavmae model directory: {CONFIG} is missing")
    try:
        cfg = from_dict(yaml.safe_load(cfg_path.read_text()) or {})
    except (ConfigError, yaml.YAMLError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e
    state = read_safetensors(weights)
    # Training checkpoints do not record the kind in their metadata: their config's task says it.
    kind = _read_kind(weights) or ("classifier" if cfg.task == "finetune" else "pretrain")
    head = "attention" if "probe_cls" in state else "linear"  # the attention probe's CLS (finetune.head)
    model = build_model(kind, cfg.model, head)
    _load_strict(model, state, str(weights))
    return model.eval(), cfg


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                f"{' ...' if len(unexpected) > 8 else ''}"
            )
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:8]))
        raise CheckpointError(f"{source} does not fit the model: " + " | ".join(parts))
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------------------------
# the public CAV-MAE layout


def read_torch_file(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    obj = load_weights_only(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    return obj


def load_weights_only(path: str | Path):
    """``torch.load(weights_only=True)`` of an existing file; a file it cannot read is named as damaged."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DamagedCheckpointError(
            f"{path} could not be read as a weights-only PyTorch file (damaged or truncated, or it holds pickled "
            f"objects other than tensors, which we refuse to unpickle): {e}"
        ) from e


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that nn.DataParallel / DDP put on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


# Tensors of the public files that no CAV-MAE model uses: the adapted ImageNet initialisation (IN-initial.pth)
# carries MAE's CLS token three times (cls_token_a / cls_token_v / cls_token_av); CAV-MAE has no CLS token. A
# CAV-MAE Sync file's cls_token_a / cls_token_v (no cls_token_av) are its global tokens and are kept.
UNUSED_PUBLIC_KEYS = re.compile(r"cls_token(_a|_v|_av)?$")
SYNC_GLOBAL_KEYS = ("cls_token_a", "cls_token_v")
SYNC_HEADS = ("constrative_head_audio", "constrative_head_visual")  # the public code's spelling


def has_sync_global_tokens(state: dict[str, torch.Tensor]) -> bool:
    """Global tokens of CAV-MAE Sync: cls_token_a / cls_token_v without IN-initial.pth's cls_token_av."""
    return any(k in state for k in SYNC_GLOBAL_KEYS) and "cls_token_av" not in state


def drop_unused_public_keys(
    state: dict[str, torch.Tensor], source: str | Path, keep_global_tokens: bool = False
) -> dict[str, torch.Tensor]:
    """`state` without the tensors no CAV-MAE model uses (``cls_token_*``); names them in one log line.
    ``keep_global_tokens``: a CAV-MAE Sync model takes a Sync file's cls_token_a / cls_token_v (never
    IN-initial.pth's MAE CLS copies)."""
    keep = set(SYNC_GLOBAL_KEYS) if keep_global_tokens and has_sync_global_tokens(state) else set()
    dropped = sorted(k for k in state if UNUSED_PUBLIC_KEYS.fullmatch(k) and k not in keep)
    if dropped:
        log.info("%s: ignoring %d tensors CAV-MAE does not use: %s", source, len(dropped), ", ".join(dropped))
    return {k: v for k, v in state.items() if k not in dropped}


def describe_state(state: dict[str, torch.Tensor]) -> str:
    """What a public-layout state dict holds, in words: which model family and the Sync tensors found."""
    parts = [
        f"{k} {list(state[k].shape)}" for k in (*SYNC_GLOBAL_KEYS, "cls_token_av", "register_tokens") if k in state
    ]
    heads = [h for h in SYNC_HEADS if any(k.startswith(h + ".") for k in state)]
    found = ", ".join(parts + heads)
    if "register_tokens" in state or has_sync_global_tokens(state):
        return f"a CAV-MAE Sync model ({found})"
    return (
        "a plain CAV-MAE model (no cls_token_a / cls_token_v global tokens, no register_tokens"
        + (f"; holds {found}" if found else "")
        + ")"
    )


def _infer_sync(state: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> None:
    """Set cfg.global_tokens / registers / contrastive_heads from the Sync tensors of `state`, checking shapes:
    an inconsistent file is a CheckpointError saying what it holds."""
    dim = cfg.embed_dim
    what = describe_state(state)
    cfg.global_tokens = has_sync_global_tokens(state)
    if cfg.global_tokens:
        for key in SYNC_GLOBAL_KEYS:
            if key not in state or tuple(state[key].shape) != (1, 1, dim):
                got = list(state[key].shape) if key in state else "missing"
                raise CheckpointError(f"{source}: {what}, but {key} is {got}, expected [1, 1, {dim}]")
    cfg.registers = 0
    if "register_tokens" in state:
        shape = tuple(state["register_tokens"].shape)
        if len(shape) != 2 or shape[0] % 2 or shape[0] == 0 or shape[1] != dim:
            raise CheckpointError(
                f"{source}: {what}, but register_tokens is {list(shape)}, expected [2R, {dim}] (audio rows first)"
            )
        cfg.registers = shape[0] // 2
    head_depths = {h: len({k.split(".")[1] for k in state if k.startswith(h + ".")}) for h in SYNC_HEADS}
    cfg.contrastive_heads = any(head_depths.values())
    if cfg.contrastive_heads and set(head_depths.values()) != {2}:
        raise CheckpointError(
            f"{source}: {what}, but its contrastive heads have "
            + ", ".join(f"{h} {n} blocks" for h, n in head_depths.items())
            + " (expected 2 each)"
        )


def is_cavmae_layout(state: dict[str, torch.Tensor]) -> bool:
    """Keys of the CAV-MAE layout (ours or public, e.g. the adapted IN-initial.pth), not of an MAE ViT."""
    return "patch_embed_a.proj.weight" in state and any(k.startswith("blocks_a.") for k in state)


def infer_model_config(
    state: dict[str, torch.Tensor], base: ModelConfig | None = None, source: str = "state dict"
) -> tuple[str, ModelConfig]:
    """Model kind and architecture read off a public-layout state dict's key names and shapes, CAV-MAE Sync's
    global tokens, registers (R from register_tokens' [2R, D]) and contrastive heads included."""
    cfg = ModelConfig(**{k: getattr(base or ModelConfig(), k) for k in ModelConfig.__dataclass_fields__})
    if "pos_embed_a" not in state or "patch_embed_a.proj.weight" not in state:
        raise CheckpointError(
            "not a CAV-MAE state dict: no pos_embed_a / patch_embed_a.proj.weight "
            f"(first keys: {', '.join(list(state)[:5])})"
        )
    kind = "classifier" if "mlp_head.1.weight" in state else "pretrain"
    dim = state["pos_embed_a"].shape[-1]
    cfg.embed_dim = dim
    cfg.patch_size = state["patch_embed_a.proj.weight"].shape[-1]
    if dim != 768 and cfg.num_heads == 12:
        cfg.num_heads = max(dim // 64, 1)  # head count is not visible in the weights; ViT convention: 64 per head

    def depth(prefix: str) -> int:
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return max(ids) + 1 if ids else 0

    cfg.modality_depth = depth("blocks_a")
    cfg.shared_depth = depth("blocks_u")
    n_a = state["pos_embed_a"].shape[1]
    n_v = state["pos_embed_v"].shape[1]
    cfg.audio_length = n_a // (cfg.num_mel_bins // cfg.patch_size) * cfg.patch_size
    cfg.image_size = int(round(n_v**0.5)) * cfg.patch_size
    cfg.mlp_ratio = state["blocks_a.0.mlp.fc1.weight"].shape[0] / dim if "blocks_a.0.mlp.fc1.weight" in state else 4.0
    cfg.qkv_bias = "blocks_u.0.attn.qkv.bias" in state
    _infer_sync(state, cfg, source)
    if kind == "classifier":
        cfg.num_classes = state["mlp_head.1.weight"].shape[0]
    else:
        ddim = state["decoder_embed.weight"].shape[0]
        cfg.decoder_embed_dim = ddim
        cfg.decoder_depth = depth("decoder_blocks")
        if ddim != 512 and cfg.decoder_num_heads == 16:
            cfg.decoder_num_heads = max(ddim // 32, 1)
    return kind, cfg


def load_official(
    path: str | Path, base: ModelConfig | None = None, expect: str | None = None
) -> tuple[nn.Module, ModelConfig]:
    """A public CAV-MAE or CAV-MAE Sync ``.pth`` (pre-training or fine-tuning; with or without ``module.``) -> our
    model. Logs which kind of model the file holds; ``expect="sync"`` makes a file without the Sync tensors an
    error (``expect="cavmae"`` one with them)."""
    raw = strip_prefix(read_torch_file(path))
    what = describe_state(raw)
    sync = what.startswith("a CAV-MAE Sync")
    if expect is not None and expect not in ("sync", "cavmae"):
        raise ValueError(f"expect must be 'sync', 'cavmae' or None, got {expect!r}")
    if expect is not None and sync != (expect == "sync"):
        raise CheckpointError(
            f"{path} was expected to be a {'CAV-MAE Sync' if expect == 'sync' else 'CAV-MAE'} "
            f"checkpoint but holds {what}"
        )
    log.info("%s holds %s", path, what)
    state = drop_unused_public_keys(raw, path, keep_global_tokens=True)
    kind, cfg = infer_model_config(state, base, str(path))
    model = build_model(kind, cfg)
    _load_strict(model, state, str(path))
    return model.eval(), cfg


def to_official(model: nn.Module, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Our model's state dict in the public layout (DataParallel ``module.`` prefix by default)."""
    return {prefix + k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_official(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(to_official(model), str(tmp))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------------------
# MAE ImageNet initialisation


def mae_to_cavmae(mae_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a facebookresearch/mae ViT checkpoint onto a CAV-MAE model (the paper's ImageNet initialisation).

    MAE block i < modality_depth -> blocks_a.i and blocks_v.i; the next shared_depth blocks -> blocks_u; each
    block's norm1 / norm2 is copied to all three norm pairs; audio patch weights = sum over RGB of the image patch
    weights; the decoder (if present) is copied, with decoder_pred_a = the first p*p rows of MAE's decoder_pred.
    Position embeddings stay sin-cos (the grids differ) and MAE's cls_token is dropped.
    """
    state = strip_prefix(mae_state.get("model", mae_state))
    if "patch_embed.proj.weight" not in state or not any(k.startswith("blocks.") for k in state):
        raise CheckpointError("not an MAE ViT checkpoint: no patch_embed.proj.weight / blocks.* keys")
    cfg = model.cfg
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}

    def put(dst: str, value: torch.Tensor) -> None:
        if dst in own:
            if own[dst].shape != value.shape:
                raise CheckpointError(
                    f"MAE weight for {dst} has shape {tuple(value.shape)}, model has {tuple(own[dst].shape)}"
                )
            out[dst] = value

    def copy_block(src: str, dst: str) -> None:
        for k, v in state.items():
            if not k.startswith(src + "."):
                continue
            rest = k[len(src) + 1 :]
            m = re.match(r"norm([12])\.(weight|bias)$", rest)
            if m:
                for suffix in ("", "_a", "_v"):
                    put(f"{dst}.norm{m.group(1)}{suffix}.{m.group(2)}", v)
            else:
                put(f"{dst}.{rest}", v)

    n_mae = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    need = cfg.modality_depth + cfg.shared_depth
    if n_mae < need:
        raise CheckpointError(f"MAE checkpoint has {n_mae} blocks, the model needs {need} (modality + shared)")
    for i in range(cfg.modality_depth):
        copy_block(f"blocks.{i}", f"blocks_a.{i}")
        copy_block(f"blocks.{i}", f"blocks_v.{i}")
    for j in range(cfg.shared_depth):
        copy_block(f"blocks.{cfg.modality_depth + j}", f"blocks_u.{j}")
    w = state["patch_embed.proj.weight"]  # [D, 3, p, p]
    put("patch_embed_v.proj.weight", w)
    put("patch_embed_a.proj.weight", w.sum(dim=1, keepdim=True))
    for name in ("patch_embed_v.proj.bias", "patch_embed_a.proj.bias"):
        put(name, state["patch_embed.proj.bias"])
    for n in ("norm_a", "norm_v", "norm"):
        for p in ("weight", "bias"):
            if f"norm.{p}" in state:
                put(f"{n}.{p}", state[f"norm.{p}"])
    if "decoder_embed.weight" in state:
        for k, v in state.items():
            if k.startswith("decoder_blocks."):
                copy_block(".".join(k.split(".")[:2]), ".".join(k.split(".")[:2]))
            elif k in (
                "decoder_embed.weight",
                "decoder_embed.bias",
                "decoder_norm.weight",
                "decoder_norm.bias",
                "mask_token",
            ):
                put(k, v)
        pa = cfg.patch_size**2
        put("decoder_pred_v.weight", state["decoder_pred.weight"])
        put("decoder_pred_v.bias", state["decoder_pred.bias"])
        put("decoder_pred_a.weight", state["decoder_pred.weight"][:pa])
        put("decoder_pred_a.bias", state["decoder_pred.bias"][:pa])
    return out


def init_from_mae(model: nn.Module, path: str | Path) -> list[str]:
    """Load MAE weights into `model` in place; returns the model keys that kept their own initialisation.

    A file already in the CAV-MAE layout (the public adapted ``IN-initial.pth``: MAE weights mapped onto CAV-MAE
    key names, plus unused ``cls_token_*``) is loaded as such, by :func:`init_from_cavmae`.
    """
    raw = read_torch_file(path)
    if is_cavmae_layout(strip_prefix(raw.get("model", raw))):
        log.info("%s is an MAE initialisation already in the CAV-MAE layout (IN-initial.pth); loading it as such", path)
        return init_from_cavmae(model, path)
    mapped = mae_to_cavmae(raw, model)
    model.load_state_dict(mapped, strict=False)
    kept = sorted(set(model.state_dict()) - set(mapped))
    log.info("initialised %d tensors from MAE checkpoint %s; %d kept their init", len(mapped), path, len(kept))
    return kept


def init_from_cavmae(model: nn.Module, path: str | Path) -> list[str]:
    """Copy every tensor of a CAV-MAE checkpoint (ours or public) whose name and shape fit `model`.

    Used to start fine-tuning from pre-training (the decoder is dropped, the head keeps its init) or to continue
    pre-training from another run. Returns the keys that kept their own initialisation.
    """
    src = Path(path)
    if src.is_dir():
        state = read_safetensors(model_directory(src) / WEIGHTS)
    elif src.suffix == ".safetensors":
        state = read_safetensors(src)
    else:
        state = strip_prefix(read_torch_file(src))
    state = drop_unused_public_keys(state, path, keep_global_tokens=model.cfg.global_tokens)
    state = adapt_audio_length(state, model, path)
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("blocks_") for k in use):
        raise CheckpointError(f"{path}: no encoder weights fit the model (is it a CAV-MAE checkpoint of this size?)")
    model.load_state_dict(use, strict=False)
    kept = sorted(set(own) - set(use))
    log.info(
        "initialised %d tensors from %s; kept init for %d (%s)",
        len(use),
        path,
        len(kept),
        ", ".join(kept[:4]) + (" ..." if len(kept) > 4 else ""),
    )
    return kept


def adapt_audio_length(state: dict[str, torch.Tensor], model: nn.Module, source: str | Path) -> dict[str, torch.Tensor]:
    """`state` with its audio position embeddings fitted to `model`'s audio length (``model.audio_length``).

    The audio patch grid is (frequency rows, time columns), token index = row * cols + col (``audio_to_image``),
    so a checkpoint of another clip length differs in the number of time columns only. Per tensor:
    - fixed sin-cos (pre-training, or a checkpoint whose values still equal the sin-cos grid): rebuilt for the new
      grid, so a shorter model gets exactly the first time columns of the old grid;
    - trained (fine-tuned, ``trainable_pos``): cut from the middle (shorter) or bilinearly interpolated (longer)
      along time, as AST does for its pre-trained position embeddings.
    One log line says what was done. Tensors whose width differs, or whose token count is not a multiple of the
    model's frequency rows, are left alone (they keep the model's own initialisation, like any other tensor that
    does not fit). The checkpoint is taken to have the model's mel bins: only the clip length may differ.
    """
    own = model.state_dict()
    rows, cols = model.cfg.audio_grid
    done = []
    out = dict(state)
    for key in ("pos_embed_a", "decoder_pos_embed_a"):  # the encoder's and (pre-training) the decoder's
        if key not in state or key not in own or state[key].shape == own[key].shape:
            continue
        old = state[key]  # [1, rows * old_cols, dim]
        dim = old.shape[-1]
        if old.dim() != 3 or dim != own[key].shape[-1] or old.shape[1] % rows:
            continue
        old_cols = old.shape[1] // rows
        if torch.allclose(old[0].float(), sincos_2d(dim, rows, old_cols), atol=1e-4):
            out[key] = sincos_2d(dim, rows, cols).unsqueeze(0).to(old.dtype)
            how = "rebuilt (sin-cos)"
        else:
            grid = old.float().reshape(1, rows, old_cols, dim).permute(0, 3, 1, 2)  # [1, dim, rows, old_cols]
            if cols < old_cols:
                start = old_cols // 2 - cols // 2
                grid = grid[..., start : start + cols]
                how = f"cut to the middle {cols} time columns (trained)"
            else:
                grid = nn.functional.interpolate(grid, size=(rows, cols), mode="bilinear")
                how = "interpolated along time (trained)"
            out[key] = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(old.dtype)
        done.append(f"{key} {how}")
    if done:
        log.info(
            "%s: audio length %d -> %d frames, audio patch grid %dx%d -> %dx%d (freq x time): %s",
            source,
            old_cols * model.cfg.patch_size,
            model.cfg.audio_length,
            rows,
            old_cols,
            rows,
            cols,
            "; ".join(done),
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# the one entry point


def load_model(path: str | Path, base: ModelConfig | None = None, expect: str | None = None) -> nn.Module:
    """Our model directory (or its ``model.safetensors``) or a public CAV-MAE ``.pth``; returns the model in eval mode.

    The kind (pre-training or classifier) and the architecture are read from the file, CAV-MAE Sync's global
    tokens, registers and contrastive heads included (``expect="sync"``: a public file without them is an error
    saying what it holds; the kind found is logged either way). For public files the
    attention head counts are not stored in the weights: they follow ViT's 64 dims per head unless `base` says
    otherwise.
    """
    path = Path(path)
    if path.is_dir():
        return from_pretrained(path)[0]
    if path.name == WEIGHTS and (path.parent / CONFIG).is_file():
        return from_pretrained(path.parent)[0]
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    return load_official(path, base, expect)[0]


def describe(model: nn.Module) -> dict[str, int | str]:
    """Kind, parameter counts and state-dict size of a model (for ``cavmae info`` and logs)."""
    return {
        "kind": model_kind(model),
        "backbone": model.cfg.backbone,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tensors": len(model.state_dict()),
    }
