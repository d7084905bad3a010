"""Loading the config tree: defaults <- YAML file(s) <- dotted command-line overrides (``model.backbone=vit``).

A recipe may start from another one (``base: other.yaml``). Unknown keys and values of the wrong type raise
:class:`ConfigError` naming the key and listing the valid ones; :func:`validate` adds the cross-field checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from cavmae.config.tree import Config


class ConfigError(ValueError):
    """A config key or value that does not fit the schema."""


# ---------------------------------------------------------------------------------------------------------------
# conversion between dicts / strings and the dataclass tree


def _parse_list(text: str) -> list:
    """A list from the command line: YAML (``[1, 2]``), or items split on commas outside braces, so shard
    patterns such as ``[/data/as-{000000..000999}.tar,/data/vgg-{0..9}.tar]`` survive unquoted."""
    text = text.strip()
    if text.startswith("["):
        try:
            parsed = yaml.safe_load(text)
            if isinstance(parsed, list):
                return parsed
        except yaml.YAMLError:
            pass
        text = text[1:-1] if text.endswith("]") else text[1:]
    items, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    return [i for i in items if i]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting strings from the command line."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
                    return None
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = _parse_list(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _valid_keys(cls: type, prefix: str) -> str:
    return ", ".join(f"{prefix}{f.name}" for f in dataclasses.fields(cls))


def merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict of updates to the dataclass tree `obj` in place, checking keys and types."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {updates!r}")
    hints = _hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; valid keys: {_valid_keys(type(obj), prefix)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def apply_overrides(cfg: Config, overrides: list[str]) -> None:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars/lists)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        value: Any = raw
        try:
            parsed = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            parsed = raw
        if not isinstance(parsed, dict):
            value = parsed if parsed is not None or raw.lower() in ("null", "none", "~") else raw
        nested: dict[str, Any] = {}
        node = nested
        parts = dotted.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        merge(cfg, nested)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at `path` (which may name a ``base:`` file to start from), then overrides."""
    cfg = Config()
    if path is not None:
        for layer in _yaml_chain(Path(path)):
            merge(cfg, layer)
    apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def _yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The YAML layers to apply, base files first. A recipe may say ``base: other.yaml`` (relative to itself)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    layers = []
    if base:
        layers = _yaml_chain((path.parent / base), seen + (path.resolve(),))
    return layers + [data]


def from_dict(data: dict[str, Any]) -> Config:
    """A Config from its saved dict form (checkpoints, run directories); strict like YAML loading."""
    cfg = Config()
    merge(cfg, data)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    m = cfg.model
    if m.embed_dim % m.num_heads:
        raise ConfigError(f"model.embed_dim ({m.embed_dim}) must be divisible by model.num_heads ({m.num_heads})")
    if m.decoder_embed_dim % m.decoder_num_heads:
        raise ConfigError(
            f"model.decoder_embed_dim ({m.decoder_embed_dim}) must be divisible by "
            f"model.decoder_num_heads ({m.decoder_num_heads})"
        )
    for name in ("audio_length", "num_mel_bins", "image_size"):
        if getattr(m, name) % m.patch_size:
            raise ConfigError(f"model.{name} ({getattr(m, name)}) must be a multiple of model.patch_size")
    for name in ("mask_ratio_a", "mask_ratio_v"):
        if not 0.0 <= getattr(m, name) < 1.0:
            raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(m, name)}")
    if m.shared_depth < 1:
        raise ConfigError("model.shared_depth must be at least 1")
    if not m.temperature > 0:
        raise ConfigError(f"model.temperature must be > 0 (it divides the similarities), got {m.temperature}")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be at least 1")
    if cfg.eval.batch_size < 1:
        raise ConfigError("eval.batch_size must be at least 1")
    d = cfg.data
    if d.synthetic and (d.train_shards or d.val_shards):
        given = "data.train_shards" if d.train_shards else "data.val_shards"
        raise ConfigError(
            f"data.synthetic=true and {given} are both set: synthetic clips would replace the shards; set "
            "data.synthetic=false to use the shards, or leave the shard lists empty"
        )
    for name in ("num_workers", "shuffle_buffer"):
        if getattr(d, name) < 0:
            raise ConfigError(f"data.{name} must be >= 0, got {getattr(d, name)}")
    for name in ("mixup", "label_smoothing"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise ConfigError(f"data.{name} must be in [0, 1], got {getattr(d, name)}")
    if d.synthetic:
        if d.synthetic_size < 1 or d.synthetic_val_size < 0:
            raise ConfigError("data.synthetic_size must be at least 1 and data.synthetic_val_size at least 0")
        if not 1 <= d.synthetic_classes <= m.num_classes:
            raise ConfigError(
                f"data.synthetic_classes ({d.synthetic_classes}) must be in [1, model.num_classes={m.num_classes}]"
            )
    t = cfg.train
    for name in ("grad_accum", "epochs", "log_every"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(t, name)}")
    for name in ("max_steps", "ckpt_every", "keep_last", "image_every", "val_every", "val_batches", "max_bad_steps"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0, got {getattr(t, name)}")
    if t.contrast_group < 0 or t.probe_every < 0:
        raise ConfigError("train.contrast_group and train.probe_every must be >= 0")
    if t.contrast_group and t.task != "pretrain":
        raise ConfigError("train.contrast_group applies to pre-training (train.task=pretrain) only")
    if t.freeze_base and t.task != "finetune":
        raise ConfigError("train.freeze_base (linear probe) applies to fine-tuning (train.task=finetune) only")
    if t.probe_every and t.task != "pretrain":
        raise ConfigError("train.probe_every applies to pre-training (train.task=pretrain) only")
    if t.probe_every and not (d.probe_shards or (d.synthetic and d.synthetic_val_size > 0)):
        raise ConfigError("train.probe_every needs held-out clips: set data.probe_shards")
    if cfg.eval.probe_clips < 2 or cfg.eval.knn_k < 1:
        raise ConfigError("eval.probe_clips must be at least 2 and eval.knn_k at least 1")
    if d.frame_mode == "all":
        raise ConfigError(
            "data.frame_mode='all' is not a training mode: training uses one frame per clip ('random', as the "
            "paper, or 'middle'); the ten-frame ensemble is part of the final evaluation (eval.ten_frame=true)"
        )
    if d.class_balanced and d.balance_mode == "weights" and t.task != "finetune":
        raise ConfigError(
            "data.balance_mode='weights' weights the fine-tuning loss per clip; pre-training has no per-clip loss "
            "to weight: use data.balance_mode='resample' or data.class_balanced=false"
        )
    o = cfg.optim
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {o.lr}")
    if o.warmup_steps < 0 or o.lr_decay_every < 1 or o.lr_decay_start < 0:
        raise ConfigError("optim.warmup_steps and optim.lr_decay_start must be >= 0, optim.lr_decay_every >= 1")
    if o.grad_clip < 0 or o.weight_decay < 0:
        raise ConfigError("optim.grad_clip and optim.weight_decay must be >= 0")
