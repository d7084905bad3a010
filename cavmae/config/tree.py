"""The config tree: dataclasses whose defaults are the reference model and recipe (loading: ``loading``).

Defaults follow the CAV-MAE paper (arXiv 2210.07839) and its public code: CAV-MAE base (ViT-B, 11 + 11 + 1
blocks, decoder 8 x 512), masking 75 %, k_rec = 1, k_c = 0.01, temperature 0.05, Adam (0.95, 0.999), wd 5e-7,
batch 48, lr 5e-5. The resolved config is written beside every run (``config.yaml``) and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class MambaConfig:
    """Bidirectional Mamba block settings (Vision Mamba style: the two directions' gated outputs added); used when a
    stack's backbone is ``mamba``."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 -> ceil(dim / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
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
    # pre-training objective
    mask_ratio_a: float = 0.75
    mask_ratio_v: float = 0.75
    mask_mode: Literal["unstructured", "time", "freq", "tf"] = "unstructured"
    # Mask ratio of the input the contrastive embeddings are pooled from. Equal to mask_ratio_a and mask_ratio_v
    # (CAV-MAE, 0.75): the modality streams of the reconstruction pass's kept tokens, no extra pass. 0: the whole
    # input (one more encoder pass over every token: the embeddings retrieval uses). Anything else (TG-DP: 0.5): a
    # separate masked pass of its own. Replaces contrast_input ("masked" = the mask ratio, "unmasked" = 0).
    contrast_mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    rec_weight: float = 1.0
    contrast_weight: float = 0.01
    temperature: float = 0.05
    symmetric_contrast: bool = False
    # CAV-MAE Sync (design.md section 5; public attribute names cls_token_a/_v, register_tokens,
    # constrative_head_audio/_visual). global_tokens: one learnable token per modality, prepended before the
    # modality stacks, dropped before the joint pass; its modality-stream output (norm_a / norm_v) is the
    # contrastive and retrieval embedding instead of the mean over tokens.
    global_tokens: bool = False
    # registers: R learnable tokens per modality ([2R, D] parameter, audio rows first), appended after the tokens
    # and dropped after the modality-specific stacks (the released Sync model: 8).
    registers: int = 0
    # contrastive_heads: two blocks per modality (run with the joint norms, as the public code does) between the
    # shared block's modality pass and norm_a / norm_v; feed only the contrastive embeddings (off in released Sync).
    contrastive_heads: bool = False
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
    # the training frame: "random" (the paper) or "middle". Training uses one frame per clip; per-epoch validation
    # uses the middle one, and the ten-frame ensemble is part of fine-tuning's final evaluation (finetune.ten_frame).
    frame_mode: Literal["random", "middle"] = "random"
    # frames per clip the shards hold (cavmae prepare --frames; 16 for CAV-MAE Sync): a shard with another count is
    # an error naming it
    num_frames: int = 10
    # CAV-MAE Sync: L fbank frames of audio centred on the drawn frame (cavmae/data/windows.py; evaluation gives
    # every frame its own window); must equal model.audio_length. 0 = the whole clip, as CAV-MAE
    audio_window: int = 0
    # CAV-MAE Sync: fbank frames S the clip is padded or cut to before its windows are placed (pos = round(k * S /
    # num_frames)): the public loader's 1024 (10.24 s). Clips much shorter than that set their own length (the
    # demo's 2.6 s clips: 260), or most frames' windows would lie in the padding
    clip_fbank_frames: int = 1024
    # augmentation (pre-training)
    noise: bool = False  # uniform noise (scale U(0, 0.1)) on the normalised fbank
    # circular time shift of the fbank by U[-T, T) frames; the public scripts' noise=True means noise AND this roll
    time_roll: bool = False
    # augmentation (fine-tuning)
    freqm: int = 0  # SpecAugment frequency mask width (48 in the recipes)
    timem: int = 0  # SpecAugment time mask width (192 in the recipes)
    mixup: float = 0.0  # probability that a training sample is mixed with another of its batch (0.5 in the recipes)
    mixup_alpha: float = 10.0  # lambda ~ Beta(alpha, alpha) (with data.mixup > 0)
    label_smoothing: float = 0.0  # labels * (1 - ls) + ls / num_classes (0.1 in the recipes; fine-tuning only)
    # class-balanced sampling (AudioSet-2M / VGGSound fine-tuning): sample weight = sum over its labels of
    # 1 / label count (from the shard manifests), mean 1. "resample": each sample is repeated floor(w) or
    # floor(w) + 1 times in the stream (expected frequencies of CAV-MAE's weighted sampler); "weights": the stream is
    # left alone and batches carry "weights" [B]: fine-tuning weights each clip's loss by it (pre-training refuses it).
    class_balanced: bool = False
    balance_mode: Literal["resample", "weights"] = "resample"  # with data.class_balanced
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
    """Optimizer and learning-rate schedule (cavmae/train/optim.py); Adam (0.95, 0.999) as CAV-MAE by default."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 5e-5
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    schedule: Literal["step", "cosine", "constant"] = "step"
    warmup_steps: int = 0
    # CAV-MAE step schedule (schedule=step): multiply by `lr_decay_factor` every `lr_decay_every` epochs starting at
    # epoch `lr_decay_start`
    lr_decay_start: int = 10
    lr_decay_every: int = 5
    lr_decay_factor: float = 0.5
    min_lr: float = 0.0  # floor of the step and cosine schedules
    grad_clip: float = 0.0  # max global gradient norm (0 = off)


@dataclass
class TrainConfig:
    """The training run, pre-training and fine-tuning alike: length, precision, checkpoints, logging, validation.
    The task comes from the command (``cavmae pretrain`` / ``cavmae finetune``), resuming from ``--resume``."""

    epochs: int = 25
    max_steps: int = 0  # 0 = run all epochs
    grad_accum: int = 1  # micro-batches per optimizer step (the contrastive batch stays one micro-batch)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False  # recompute each block's activations in the backward (less memory)
    seed: int = 0  # initial weights, masks, data order; process r draws its masks from seed + r
    out_dir: str = "runs/cavmae"  # the run directory: config, logs, checkpoints, final model
    init: str = ""  # MAE ImageNet checkpoint, CAV-MAE checkpoint or our model directory
    init_format: Literal["auto", "mae", "cavmae"] = "auto"  # what train.init holds; auto: read off its keys
    ckpt_every: int = 1000  # steps between checkpoints (0 = only the final one)
    keep_last: int = 3  # complete checkpoints kept (0 = all)
    log_every: int = 10  # steps between logged training metrics
    image_every: int = 500  # pre-training: reconstruction figure every M steps (0 = off)
    max_bad_steps: int = 20  # non-finite losses in a row before the run stops (0 = never stop, only skip)
    # pre-training: gather negatives across ranks; False = per-device negatives (without contrast groups)
    global_contrast: bool = True
    # pre-training: InfoNCE within groups of N consecutive clips of the global batch (0 = one group: the whole
    # contrastive batch), as the paper's 4 DataParallel GPUs each took their negatives (N = 12 / 30 / 64 for base /
    # scale+ / scale++); the same objective on any number of devices. The group InfoNCEs are averaged, so the loss
    # has the scale of the ungrouped one (the paper summed its 4 GPUs' losses: the same Adam steps up to eps and the
    # coupled weight decay; see configs/pretrain_base.yaml).
    contrast_group: int = 0
    # pre-training probes every N epochs (0 = off): retrieval R@1/5/10 both ways and k-NN accuracy of the frozen
    # embeddings of eval.probe_clips held-out clips (data.probe_shards)
    probe_every: int = 0
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "cavmae"
    wandb_name: str = ""  # run name shown in W&B; empty = the out_dir's name
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; bitwise-repeatable GPU runs)
    val_every: int = 0  # steps between validations besides the one at every epoch end (0 = epoch ends only)
    val_at_start: bool = False  # validate the initial model too (a baseline for the curves)
    val_batches: int = 0  # validation batches per process (0 = the whole validation split)
    progress_bar: bool = True  # tqdm bar on the main process


@dataclass
class FinetuneConfig:
    """What only fine-tuning reads (``cavmae finetune``; cavmae/train/finetune.py). A config holds this section
    exactly when it describes fine-tuning: pre-training configs have ``finetune: null``."""

    inputs: Literal["audiovisual", "audio", "video"] = "audiovisual"  # what the classifier sees
    loss: Literal["bce", "ce"] = "bce"  # bce: multi-label (AudioSet, mAP); ce: single-label (VGGSound, top-1)
    freeze_base: bool = False  # probe: only the head trains (mlp_head, or the attention head), as --freeze_base
    # the classification head: "linear" (CAV-MAE: LayerNorm + Linear on mean-pooled tokens of one frame) or
    # "attention" (CAV-MAE Sync's probe: per-frame audio||video global tokens [B, N, 2D] through 2 transformer
    # blocks with their own CLS, then LayerNorm + Linear; audiovisual inputs, batches with every frame and its
    # audio window: data.audio_window > 0)
    head: Literal["linear", "attention"] = "linear"
    head_lr_mult: float = 1.0  # learning-rate multiplier of the classification head
    layer_decay: float = 1.0  # layer-wise lr decay: each layer at layer_decay x the lr of the one above (1 = off)
    # the final model is the average of the weights after epochs [first, last] (1-based, inclusive); null = the
    # last weights
    average_epochs: tuple[int, int] | None = None
    # the final evaluation also scores the ten-frame ensemble (per-frame probabilities averaged); training and
    # per-epoch validation use one frame either way
    ten_frame: bool = True


@dataclass
class EvalConfig:
    """Evaluation during training: validation batches and the pre-training probes (train.probe_every)."""

    batch_size: int = 32
    probe_clips: int = 256  # clips of the pre-training probe set (the first ones of data.probe_shards)
    knn_k: int = 10  # neighbours of the probe's k-NN classifier (leave-one-out within the probe set)
    # retrieval scores (retrieve, evaluate, embed/index, the probes; cavmae/eval/scoring.py): "clip" = one embedding
    # per clip (CAV-MAE); per-frame strategies combine the cosines of a clip's N frame pairs: "diagonal_mean"
    # (Sync's default), "diagonal_max", "mean" / "max" over all N x N pairs; "auto" = diagonal_mean for a model
    # with global tokens on per-frame data (data.audio_window > 0), clip otherwise
    scoring: Literal["auto", "clip", "diagonal_mean", "diagonal_max", "mean", "max"] = "auto"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig | None = None  # present exactly in fine-tuning configs

    @property
    def task(self) -> Literal["pretrain", "finetune"]:
        """The training task this config describes: ``finetune`` when it holds a finetune section."""
        return "pretrain" if self.finetune is None else "finetune"

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def to_dict(obj: Any) -> Any:
    """Plain-Python (YAML/JSON-safe) form of a config dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
