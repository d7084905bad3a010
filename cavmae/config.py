"""The one config object: a tree of dataclasses whose defaults are the reference model and recipe.

Load order: defaults <- YAML file(s) <- dotted command-line overrides (``model.backbone=vit``). Unknown keys and
values of the wrong type raise :class:`ConfigError` naming the key and listing the valid ones. The resolved config
is written beside every run (``config.yaml``) and inside every checkpoint.

Defaults follow the CAV-MAE paper (arXiv 2210.07839) and its public code: CAV-MAE base (ViT-B, 11 + 11 + 1
blocks, decoder 8 x 512), masking 75 %, k_rec = 1, k_c = 0.01, temperature 0.05, Adam (0.95, 0.999), wd 5e-7,
batch 48, lr 5e-5.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A config key or value that does not fit the schema."""


@dataclass
class MambaConfig:
    """Bidirectional Mamba block settings (Vision Mamba style); used when a stack's backbone is ``mamba``."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 -> ceil(dim / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    # How the forward and backward scans are combined: "add" (Vision Mamba), "mean", or "concat" (both gated
    # outputs side by side into an out projection twice as wide: each direction keeps its own output weights).
    bidirectional_combine: Literal["add", "mean", "concat"] = "add"
    # With masking, scale each kept token's step dt by its distance to the previous token in its scan direction
    # (and its B by the inverse): the state decays over the masked gap. Off: kept tokens are treated as adjacent.
    gap_aware_dt: bool = False
    scan_impl: Literal["auto", "triton", "torch", "reference"] = "auto"


@dataclass
class ModelConfig:
    """Architecture and pre-training objective. Defaults: CAV-MAE base."""

    backbone: str = "vit"  # block registry key for the audio, video and shared encoder stacks
    decoder_backbone: str = "vit"  # block registry key for the decoder blocks
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    modality_depth: int = 11  # blocks in each of the audio-only and video-only stacks
    shared_depth: int = 1  # blocks in the shared stack (run three times per step)
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    patch_size: int = 16
    audio_length: int = 1024  # fbank frames (10 s at 10 ms shift); must be a multiple of patch_size
    num_mel_bins: int = 128
    image_size: int = 224
    drop_path: float = 0.0
    norm_eps: float = 1e-5
    attention: Literal["sdpa", "math"] = "sdpa"  # math = explicit softmax(QK^T)V, for benchmarks and checks
    # Order of the audio tokens through the encoder stacks: "freq_major" is the patch order f*(T/p) + t (a scan runs
    # along time within a band, then jumps to the next band); "time_major" scans all bands of one time step, then
    # the next. Only a scan backbone sees the difference (attention and the MLP do not care about order); the
    # parameters, the masks and the decoder's order are the same either way.
    audio_token_order: Literal["freq_major", "time_major"] = "freq_major"
    # pre-training objective
    mask_ratio_a: float = 0.75
    mask_ratio_v: float = 0.75
    mask_mode: Literal["unstructured", "time", "freq", "tf"] = "unstructured"
    norm_pix_loss: bool = True
    rec_weight: float = 1.0
    contrast_weight: float = 0.01
    temperature: float = 0.05
    symmetric_contrast: bool = False
    # fine-tuning
    num_classes: int = 527
    mamba: MambaConfig = field(default_factory=MambaConfig)

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(frequency, time) patch grid of the audio image, e.g. (8, 64)."""
        return self.num_mel_bins // self.patch_size, self.audio_length // self.patch_size

    @property
    def video_grid(self) -> tuple[int, int]:
        return self.image_size // self.patch_size, self.image_size // self.patch_size


@dataclass
class DataConfig:
    """Where samples come from and how they become tensors (cavmae.data.loader.build_loader; data/README.md)."""

    train_shards: list[str] = field(default_factory=list)  # brace patterns / paths; several sources allowed
    val_shards: list[str] = field(default_factory=list)
    # Learnable synthetic clips instead of shards (cavmae/data/random_batches.py): tests, demos, benchmarks.
    synthetic: bool = False
    synthetic_size: int = 64  # training clips
    synthetic_val_size: int = 64  # validation clips (a disjoint draw)
    synthetic_classes: int = 8  # classes with their own audio modulation and blob colour (<= model.num_classes)
    synthetic_noise: float = 0.3  # std of the Gaussian noise added to every value (the blob and band peak at 2)
    batch_size: int = 48  # per process
    num_workers: int = 4  # DataLoader worker processes per rank (each reads its own shards)
    shuffle_buffer: int = 1000  # samples per worker held for shuffling (training only; ~350 KB each: 10 s WAV + 1 JPEG)
    resampled: bool = False  # resampled shards (multi-node) instead of split_by_node / split_by_worker
    samples_per_epoch: int = 0  # needed when resampled; 0 = one pass over the shards (counted from the manifests)
    # the training frame: "random" (the paper) or "middle"; "all" is refused (training uses one frame per clip; the
    # ten-frame ensemble is an evaluation: eval.ten_frame). Per-epoch validation uses the middle frame.
    frame_mode: Literal["random", "middle", "all"] = "random"
    # augmentation (pre-training)
    noise: bool = False  # uniform noise (scale U(0, 0.1)) on the normalised fbank
    # circular time shift of the fbank by U[-T, T) frames; the public scripts' noise=True means noise AND this roll
    time_roll: bool = False
    # augmentation (fine-tuning)
    freqm: int = 0  # SpecAugment frequency mask width (48 in the recipes)
    timem: int = 0  # SpecAugment time mask width (192 in the recipes)
    mixup: float = 0.0  # probability that a training sample is mixed with another of its batch (0.5 in the recipes)
    mixup_alpha: float = 10.0  # lambda ~ Beta(alpha, alpha)
    label_smoothing: float = 0.0  # labels * (1 - ls) + ls / num_classes (0.1 in the recipes)
    # class-balanced sampling (AudioSet-2M / VGGSound fine-tuning): sample weight = sum over its labels of
    # 1 / label count (from the shard manifests), mean 1. "resample": each sample is repeated floor(w) or
    # floor(w) + 1 times in the stream (expected frequencies of CAV-MAE's weighted sampler); "weights": the stream is
    # left alone and batches carry "weights" [B]: fine-tuning weights each clip's loss by it (pre-training refuses it).
    class_balanced: bool = False
    balance_mode: Literal["resample", "weights"] = "resample"
    label_csv: str = ""  # label index CSV (index,mid,display_name) mapping sample labels by mid; empty = the shards'
    fbank_mean: float = -5.081  # fbank normalisation (AudioSet statistics, also used for VGGSound)
    fbank_std: float = 4.4849
    drop_last: bool = True  # training drops each worker's last partial batch; evaluation always keeps it
    # held-out clips for the pre-training probes (train.probe_every); empty with data.synthetic = the synthetic
    # validation split
    probe_shards: list[str] = field(default_factory=list)
    # audio decoded from raw .mp4 members (--store mp4): the first channel (CAV-MAE's preprocessing) or (L+R)/2
    audio_channel: Literal["first", "mean"] = "first"
    verify: bool = False  # check every shard's sha256 against its manifest before training (cavmae verify-shards)


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 5e-5
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    schedule: Literal["step", "cosine", "constant"] = "step"
    warmup_steps: int = 0
    # CAV-MAE step schedule: halve every `lr_decay_every` epochs starting at epoch `lr_decay_start`
    lr_decay_start: int = 10
    lr_decay_every: int = 5
    lr_decay_factor: float = 0.5
    min_lr: float = 0.0
    grad_clip: float = 0.0  # 0 = off
    head_lr_mult: float = 1.0  # fine-tuning: learning-rate multiplier of the classification head
    layer_decay: float = 1.0  # fine-tuning: layer-wise lr decay (1 = off)


@dataclass
class TrainConfig:
    task: Literal["pretrain", "finetune"] = "pretrain"
    epochs: int = 25
    max_steps: int = 0  # 0 = run all epochs
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compile: bool = False
    activation_checkpointing: bool = False
    seed: int = 0
    out_dir: str = "runs/cavmae"
    init: str = ""  # MAE ImageNet checkpoint, CAV-MAE checkpoint or our model directory
    init_format: Literal["auto", "mae", "cavmae"] = "auto"
    resume: str = ""  # "", "auto" or a checkpoint directory
    ckpt_every: int = 1000  # steps between checkpoints (0 = only the final one)
    keep_last: int = 3  # complete checkpoints kept (0 = all)
    log_every: int = 10
    image_every: int = 500  # reconstruction figure every M steps (0 = off)
    max_bad_steps: int = 20  # non-finite losses in a row before the run stops (0 = never stop, only skip)
    global_contrast: bool = True  # gather negatives across ranks; False = per-device negatives
    # InfoNCE within groups of N consecutive clips of the global batch (0 = one group: the whole contrastive batch),
    # the group losses summed as the paper's DataParallel did (with 4 GPUs, N = 12 / 30 / 64 for base / scale+ /
    # scale++); the same objective on any number of devices. With groups the whole pre-training loss is the sum
    # over groups (rec + k * InfoNCE of each group), i.e. (global batch / N) times the per-group mean.
    contrast_group: int = 0
    # pre-training probes every N epochs (0 = off): retrieval R@1/5/10 both ways and k-NN accuracy of the frozen
    # embeddings of eval.probe_clips held-out clips (data.probe_shards)
    probe_every: int = 0
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "cavmae"
    wandb_name: str = ""  # run name shown in W&B; empty = the out_dir's name
    deterministic: bool = False
    val_every: int = 0  # steps between validations besides the one at every epoch end (0 = epoch ends only)
    val_at_start: bool = False  # validate the initial model too (a baseline for the curves)
    val_batches: int = 0  # validation batches per process (0 = the whole validation split)
    progress_bar: bool = True  # tqdm bar on the main process
    # fine-tuning
    ft_mode: Literal["audiovisual", "audio", "video"] = "audiovisual"  # which inputs the classifier sees
    ft_loss: Literal["bce", "ce"] = "bce"  # bce: multi-label (AudioSet, mAP); ce: single-label (VGGSound, top-1)
    freeze_base: bool = False  # linear probe: only the head (mlp_head) trains, as the public --freeze_base
    # fine-tuning: the final model is the average of the weights after epochs [from, to] (1-based, inclusive);
    # avg_weights_from = 0 turns averaging off, avg_weights_to = 0 means the last epoch
    avg_weights_from: int = 0
    avg_weights_to: int = 0


@dataclass
class EvalConfig:
    batch_size: int = 32
    retrieval_chunk: int = 4096
    # the final evaluation of fine-tuning also scores the ten-frame ensemble (per-frame probabilities averaged);
    # training and per-epoch validation use one frame either way
    ten_frame: bool = True
    probe_clips: int = 256  # clips of the pre-training probe set (the first ones of data.probe_shards)
    knn_k: int = 10  # neighbours of the probe's k-NN classifier (leave-one-out within the probe set)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------------------------------------------------
# conversion between dicts / strings and the dataclass tree


def to_dict(obj: Any) -> Any:
    """Plain-Python (YAML/JSON-safe) form of a config dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


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
