"""Loading the config tree: defaults <- YAML file(s) <- dotted command-line overrides (``model.backbone=vit``).

A recipe may start from another one (``base: other.yaml``); :func:`recipe_path` finds the shipped ones. A misspelt
key or a value outside its choices raises :class:`ConfigError` naming the nearest valid ones; :func:`validate`
adds the cross-field checks, among them settings that would do nothing. Nothing here imports torch: a command
checks its config before loading the heavy modules.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from cavmae.config.tree import (
    Config,
    DataConfig,
    EvalConfig,
    FinetuneConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


class ConfigError(ValueError):
    """A config key or value that does not fit the schema."""


Task = Literal["pretrain", "finetune"]

# Keys of earlier versions: a recipe or override that names one is told where it went.
MOVED = {
    "train.ft_mode": "finetune.inputs",
    "train.ft_loss": "finetune.loss",
    "train.freeze_base": "finetune.freeze_base",
    "optim.head_lr_mult": "finetune.head_lr_mult",
    "optim.layer_decay": "finetune.layer_decay",
    "eval.ten_frame": "finetune.ten_frame",
}
GONE = {
    "train.task": "the command says it (cavmae pretrain / cavmae finetune)",
    "train.resume": "resume with the --resume flag (auto or a checkpoint directory)",
    "train.avg_weights_from": "set finetune.average_epochs=[FIRST,LAST]",
    "train.avg_weights_to": "set finetune.average_epochs=[FIRST,LAST]",
    "eval.retrieval_chunk": "it was never read",
    "model.contrast_input": "set model.contrast_mask_ratio (0 = unmasked; equal to model.mask_ratio_a = masked)",
}
# Options removed since, with the value whose behaviour is the one left: a saved config (model directory,
# checkpoint) of an earlier version holding that value still loads; another value stays an error.
REMOVED_DEFAULTS: dict[str, Any] = {
    "model.audio_token_order": "freq_major",
    "model.encoder_masking": "drop",
    "model.mamba.bidirectional_combine": "add",
    "model.mamba.gap_aware_dt": False,
    "model.mamba.gap_fill": "zero",
    "model.mamba.gap_aware_conv": False,
}


# ---------------------------------------------------------------------------------------------------------------
# conversion between dicts / strings and the dataclass tree


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true / false. YAML 1.1 (PyYAML's default) also reads yes / no / on / off
    as booleans, which turned ``train.mixed_precision=no`` into False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's booleans (see :class:`_Yaml12Loader`)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506  (a SafeLoader subclass)


def _parse_list(text: str) -> list:
    """A list from the command line: YAML (``[1, 2]``), or items split on commas outside braces, so shard
    patterns such as ``[/data/as-{000000..000999}.tar,/data/vgg-{0..9}.tar]`` survive unquoted."""
    text = text.strip()
    if text.startswith("["):
        try:
            parsed = load_yaml(text)
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
            near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}{hint}")
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
        or_null = " (or null)" if type(None) in get_args(tp) else ""
        raise ConfigError("; ".join(errors) + or_null)
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


def _section_type(tp: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), or None for a plain value."""
    for arg in (tp, *get_args(tp)):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the config tree, sections that may be null included."""
    keys = []
    for name, tp in _hints(cls).items():
        section = _section_type(tp)
        keys += all_keys(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"]
    return keys


def _unknown_key(full: str, cls: type, prefix: str) -> str:
    """The message for a key the schema lacks: where it went, or the nearest valid names."""
    if full in MOVED:
        return f"config key {full!r} is now {MOVED[full]!r}"
    if full in GONE:
        return f"config key {full!r} was removed: {GONE[full]}"
    names = [f.name for f in dataclasses.fields(cls)]
    leaf = full.rsplit(".", 1)[-1]
    if not prefix:
        near = difflib.get_close_matches(leaf, names, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        return f"unknown config section {full!r} (sections: {', '.join(names)}){hint}"
    near = [prefix + n for n in difflib.get_close_matches(leaf, names, n=3, cutoff=0.75)]
    near += [k for k in all_keys() if k.rsplit(".", 1)[-1] == leaf and k not in near]  # the name in another section
    if near:
        return f"unknown config key {full!r}; did you mean {' or '.join(repr(n) for n in near[:3])}?"
    return f"unknown config key {full!r}; {prefix.rstrip('.')} has: {', '.join(names)}"


def merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict of updates to the dataclass tree `obj` in place, checking keys and types. A section
    that may be null (``finetune``) is created by the first key given for it and removed by ``null``."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {updates!r}")
    hints = _hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(_unknown_key(full, type(obj), prefix))
        section = _section_type(hints[key])
        if section is None:
            setattr(obj, key, _coerce(value, hints[key], full))
        elif value is None and type(None) in get_args(hints[key]):
            setattr(obj, key, None)
        else:
            if getattr(obj, key) is None:
                setattr(obj, key, section())
            merge(getattr(obj, key), value, f"{full}.")


def apply_overrides(cfg: Config, overrides: list[str]) -> None:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars/lists)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        value: Any = raw
        try:
            parsed = load_yaml(raw) if raw != "" else ""
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, task: Task | None = None) -> Config:
    """Defaults, then the YAML file at `path` (which may name a ``base:`` file to start from), then overrides.

    ``task`` is the command's (``cavmae pretrain`` / ``cavmae finetune``): fine-tuning gets a finetune section
    (the defaults if the recipe has none); pre-training refuses one. None: the config says it (its finetune
    section or none)."""
    cfg = Config()
    if path is not None:
        for layer in _yaml_chain(Path(path)):
            merge(cfg, layer)
    apply_overrides(cfg, overrides or [])
    if task == "finetune" and cfg.finetune is None:
        cfg.finetune = FinetuneConfig()
    if task is not None:
        check_task(cfg, task, f" ({path})" if path is not None else "")
    validate(cfg)
    return cfg


def check_task(cfg: Config, task: str, source: str = "") -> None:
    """The config describes ``task`` (pretrain: no finetune section; finetune: one); other task names pass."""
    if task == "pretrain" and cfg.finetune is not None:
        given = _given(cfg.finetune, FinetuneConfig(), "finetune.")
        what = ", ".join(given) if given else "a finetune section"
        raise ConfigError(
            f"pre-training was given fine-tuning settings{source}: {what}; only cavmae finetune reads the "
            "finetune section (run cavmae finetune, or start from a pre-training recipe)"
        )
    if task == "finetune" and cfg.finetune is None:
        raise ConfigError("fine-tuning needs a finetune section (cfg.finetune = FinetuneConfig() for the defaults)")


def recipe_path(name: str) -> Path:
    """The shipped recipe ``NAME.yaml`` (``tiny``, ``pretrain_base``, ...): the package's own ``configs/`` (an
    installed wheel), else the ``configs/`` of the checkout the package sits in."""
    package = Path(__file__).resolve().parents[1]
    folders = (package / "configs", package.parent / "configs")
    for folder in folders:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    shipped = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})
    raise ConfigError(
        f"no shipped recipe {name!r}: {name}.yaml is in neither {folders[0]} nor {folders[1]}"
        + (f" (recipes there: {', '.join(shipped)})" if shipped else "")
    )


def _yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The YAML layers to apply, base files first. A recipe may say ``base: other.yaml`` (relative to itself)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    try:
        data = load_yaml(path.read_text()) or {}
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
    """A Config from its saved dict form (checkpoints, run directories); strict like YAML loading. The saved form
    of earlier versions (``train.task``, ``train.ft_*``, removed options at their remaining value) is upgraded."""
    cfg = Config()
    merge(cfg, upgrade_saved(data))
    validate(cfg)
    return cfg


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config of an earlier version in today's layout: ``train.task`` says whether the fine-tuning fields
    (then in train / optim / eval) form the finetune section; ``train.resume`` and options removed at the value
    that remains are dropped. Today's form comes back unchanged."""
    if not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    train = data.get("train")
    if isinstance(train, dict) and "task" in train:
        task = train.pop("task")
        train.pop("resume", None)
        finetune: dict[str, Any] = {}
        for old, new in MOVED.items():
            section, key = old.split(".")
            if isinstance(data.get(section), dict) and key in data[section]:
                finetune[new.split(".")[1]] = data[section].pop(key)
        first, last = train.pop("avg_weights_from", 0), train.pop("avg_weights_to", 0)
        if first:
            finetune["average_epochs"] = [first, last or train.get("epochs", TrainConfig.epochs)]
        data["finetune"] = finetune if task == "finetune" else None
    if isinstance(data.get("eval"), dict):
        data["eval"].pop("retrieval_chunk", None)
    model = data.get("model")
    if isinstance(model, dict) and "contrast_input" in model:  # became model.contrast_mask_ratio
        how = model.pop("contrast_input")
        if how not in ("masked", "unmasked"):
            raise ConfigError(f"model.contrast_input: {how!r} is neither 'masked' nor 'unmasked'")
        ratio_a = model.get("mask_ratio_a", ModelConfig.mask_ratio_a)
        ratio_v = model.get("mask_ratio_v", ModelConfig.mask_ratio_v)
        if how == "masked" and ratio_a != ratio_v:
            raise ConfigError(
                f"model.contrast_input='masked' with model.mask_ratio_a={ratio_a} != model.mask_ratio_v={ratio_v} "
                "has no single model.contrast_mask_ratio"
            )
        model["contrast_mask_ratio"] = 0.0 if how == "unmasked" else ratio_a
    for dotted, value in REMOVED_DEFAULTS.items():
        *path, key = dotted.split(".")
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and node[key] == value and dotted not in all_keys():
            del node[key]
    return data


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
    _validate_sync(m)
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
    if d.num_frames < 1:
        raise ConfigError(f"data.num_frames must be at least 1 (frames per clip in the shards), got {d.num_frames}")
    if d.audio_window < 0 or (d.audio_window and d.audio_window != m.audio_length):
        raise ConfigError(
            f"data.audio_window ({d.audio_window}) must be 0 (the whole clip) or equal model.audio_length "
            f"({m.audio_length}): the model's audio input is the window"
        )
    if d.audio_window and d.clip_fbank_frames < d.audio_window:
        raise ConfigError(
            f"data.clip_fbank_frames ({d.clip_fbank_frames}) must be at least data.audio_window ({d.audio_window}): "
            "the windows are cut from the clip's fbank frames"
        )
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
    if t.probe_every and not (d.probe_shards or (d.synthetic and d.synthetic_val_size > 0)):
        raise ConfigError("train.probe_every needs held-out clips: set data.probe_shards")
    if cfg.eval.probe_clips < 2 or cfg.eval.knn_k < 1:
        raise ConfigError("eval.probe_clips must be at least 2 and eval.knn_k at least 1")
    o = cfg.optim
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {o.lr}")
    if o.warmup_steps < 0 or o.lr_decay_every < 1 or o.lr_decay_start < 0:
        raise ConfigError("optim.warmup_steps and optim.lr_decay_start must be >= 0, optim.lr_decay_every >= 1")
    if o.grad_clip < 0 or o.weight_decay < 0:
        raise ConfigError("optim.grad_clip and optim.weight_decay must be >= 0")
    if cfg.finetune is None:
        if d.class_balanced and d.balance_mode == "weights":
            raise ConfigError(
                "data.balance_mode='weights' weights the fine-tuning loss per clip; pre-training has no per-clip "
                "loss to weight: use data.balance_mode='resample' or data.class_balanced=false"
            )
    else:
        _validate_finetune(cfg)
    _refuse_settings_without_effect(cfg)


def _validate_sync(m: ModelConfig) -> None:
    """The contrastive mask ratio and the CAV-MAE Sync options (global tokens, registers, heads)."""
    if not 0.0 <= m.contrast_mask_ratio < 1.0:
        raise ConfigError(f"model.contrast_mask_ratio must be in [0, 1), got {m.contrast_mask_ratio}")
    if m.registers < 0:
        raise ConfigError(f"model.registers must be >= 0, got {m.registers}")
    if m.registers and m.modality_depth < 1:
        raise ConfigError(
            f"model.registers={m.registers} needs modality-specific blocks to carry them (they are dropped after "
            f"blocks_a / blocks_v), but model.modality_depth={m.modality_depth}"
        )
    if m.global_tokens and m.modality_depth < 1:
        raise ConfigError(
            "model.global_tokens=true needs modality-specific blocks (the token is prepended before blocks_a / "
            f"blocks_v and dropped before the joint pass), but model.modality_depth={m.modality_depth}"
        )
    if m.contrastive_heads and m.contrast_weight == 0:
        raise ConfigError(
            "model.contrastive_heads=true with model.contrast_weight=0: only the contrastive loss trains the heads, "
            "which the embeddings then pass through untrained; set model.contrast_weight > 0 or turn the heads off"
        )


def _validate_finetune(cfg: Config) -> None:
    f, t = cfg.finetune, cfg.train
    pretraining_only = _given(t, TrainConfig(), "train.", "contrast_group", "probe_every", "global_contrast")
    if pretraining_only:
        raise ConfigError(
            f"{', '.join(pretraining_only)}: pre-training settings, which fine-tuning does not read; remove them"
        )
    if f.head == "attention" and f.inputs != "audiovisual":
        raise ConfigError(
            f"finetune.head='attention' classifies per-frame audio||video features: it needs "
            f"finetune.inputs='audiovisual', got {f.inputs!r}"
        )
    if f.head == "attention" and cfg.data.audio_window == 0:
        raise ConfigError(
            "finetune.head='attention' classifies every frame with its own audio window: set data.audio_window to "
            f"model.audio_length ({cfg.model.audio_length}); a window as long as the padded clip (1024 fbank "
            "frames) gives every frame the whole clip, as CAV-MAE sees it"
        )
    if f.head_lr_mult <= 0 or not 0 < f.layer_decay <= 1:
        raise ConfigError("finetune.head_lr_mult must be > 0 and finetune.layer_decay in (0, 1]")
    if f.average_epochs is not None:
        first, last = f.average_epochs
        if not 1 <= first <= last <= t.epochs:
            raise ConfigError(
                f"finetune.average_epochs={list(f.average_epochs)} must be [FIRST, LAST] with 1 <= FIRST <= LAST <= "
                f"train.epochs={t.epochs} (epochs count from 1); null averages nothing"
            )


def _refuse_settings_without_effect(cfg: Config) -> None:
    """A setting whose switch is off would do nothing: an error naming both (the first such setting), so that a
    recipe is never trusted to do what it cannot."""
    d, t, o, f = cfg.data, cfg.train, cfg.optim, cfg.finetune
    dd, td, od = DataConfig(), TrainConfig(), OptimConfig()
    idle = [  # (the settings given, why they would do nothing: empty where they do something)
        (_given(d, dd, "data.", "balance_mode"), "data.class_balanced is false" if not d.class_balanced else ""),
        (_given(d, dd, "data.", "mixup_alpha"), "data.mixup is 0 (no clip is mixed)" if not d.mixup else ""),
        (_given(d, dd, "data.", "label_smoothing"), "pre-training reads no labels" if f is None else ""),
        (
            _given(t, td, "train.", "wandb_project", "wandb_name"),
            "train.wandb_mode is 'disabled'" if t.wandb_mode == "disabled" else "",
        ),
        (
            _given(cfg.eval, EvalConfig(), "eval.", "probe_clips", "knn_k") + _given(d, dd, "data.", "probe_shards"),
            "train.probe_every is 0 (no probes)" if not t.probe_every else "",
        ),
        (
            _given(t, td, "train.", "global_contrast"),
            "with train.contrast_group the groups choose the negatives" if t.contrast_group else "",
        ),
        (
            _given(o, od, "optim.", "lr_decay_start", "lr_decay_every", "lr_decay_factor"),
            f"optim.schedule is {o.schedule!r}, not 'step'" if o.schedule != "step" else "",
        ),
        (_given(o, od, "optim.", "min_lr"), "optim.schedule is 'constant'" if o.schedule == "constant" else ""),
    ]
    if f is not None:
        idle.append(
            (
                _given(d, dd, "data.", "frame_mode"),
                "finetune.head='attention' reads every frame of a clip" if f.head == "attention" else "",
            )
        )
        idle.append(
            (
                _given(f, FinetuneConfig(), "finetune.", "layer_decay"),
                "finetune.freeze_base trains the head alone" if f.freeze_base else "",
            )
        )
    for settings, why in idle:
        if settings and why:
            raise ConfigError(f"{', '.join(settings)} would do nothing: {why}; remove it or turn on what it needs")


def _given(obj: Any, default: Any, prefix: str, *names: str) -> list[str]:
    """``prefix.name=value`` of the fields `names` (default: all) of `obj` that differ from `default`'s."""
    names = names or tuple(f.name for f in dataclasses.fields(obj))
    return [f"{prefix}{n}={getattr(obj, n)!r}" for n in names if getattr(obj, n) != getattr(default, n)]
