"""Optimizer and learning-rate schedule.

Weight decay (CAV-MAE recipe: Adam, betas (0.95, 0.999), wd 5e-7) applies to matrices only: never to
norms and biases (1-D tensors), to position / modality embeddings, mask, cls or register tokens, nor to any
parameter that carries the marker ``param._no_weight_decay = True`` (a Mamba block marks A_log, D and the dt
bias that way).

Schedules are multipliers of the base lr as a function of the number of optimizer steps taken:
- ``step``: CAV-MAE's — constant, then halved every ``lr_decay_every`` epochs starting at epoch ``lr_decay_start``
  (0-based epoch 10, 15, 20 for the recipe: the public code's MultiStepLR(range(10, 1000, 5), 0.5));
- ``cosine``: linear warmup, then half a cosine down to ``min_lr``;
- ``constant``.
``warmup_steps`` (linear, from lr/warmup) applies to all of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from cavmae.config import ConfigError, OptimConfig

log = logging.getLogger(__name__)

# Parameter-name fragments that never take weight decay (embeddings and learned tokens, whatever their shape).
NO_DECAY_NAMES = ("pos_embed", "modality", "mask_token", "cls_token", "register_tokens")


def takes_weight_decay(name: str, param: nn.Parameter) -> bool:
    """False for norms / biases (ndim <= 1), embeddings and tokens, and parameters marked ``_no_weight_decay``."""
    if getattr(param, "_no_weight_decay", False) or param.ndim <= 1:
        return False
    leaf = name.rsplit(".", 1)[-1]
    return not any(tag in leaf for tag in NO_DECAY_NAMES)


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, lr_scale: Callable[[str], float] | None = None
) -> list[dict]:
    """Trainable parameters grouped by (takes decay, lr multiplier). Each group records its ``lr_scale`` and the
    parameter names (so a checkpoint's optimizer state says what it belongs to)."""
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = takes_weight_decay(name, p)
        scale = float(lr_scale(name)) if lr_scale else 1.0
        g = groups.setdefault(
            (decay, scale),
            {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
            },
        )
        g["params"].append(p)
        g["names"].append(name)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    return list(groups.values())


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr_scale: Callable[[str], float] | None = None
) -> torch.optim.Optimizer:
    """Adam (coupled L2 decay, as CAV-MAE) or AdamW (decoupled) over :func:`param_groups`."""
    groups = param_groups(model, cfg.weight_decay, cfg.lr, lr_scale)
    for g in groups:
        log.debug("param group: %d tensors, wd %g, lr x%g", len(g["params"]), g["weight_decay"], g["lr_scale"])
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_multiplier(cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """step (optimizer steps already taken) -> multiplier of every group's initial lr."""
    if steps_per_epoch < 1:
        raise ConfigError("an epoch has no optimizer steps: the data split is smaller than one global batch")
    min_ratio = cfg.min_lr / cfg.lr

    def multiplier(step: int) -> float:
        warm = min((step + 1) / cfg.warmup_steps, 1.0) if cfg.warmup_steps > 0 else 1.0
        if cfg.schedule == "constant":
            return warm
        if cfg.schedule == "step":
            epoch = step // steps_per_epoch
            halvings = (epoch - cfg.lr_decay_start) // cfg.lr_decay_every + 1 if epoch >= cfg.lr_decay_start else 0
            return warm * max(cfg.lr_decay_factor**halvings, min_ratio)
        # cosine after warmup
        if step < cfg.warmup_steps:
            return warm
        progress = min((step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int
) -> LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state_dict holds only numbers (weights_only-loadable)."""
    return LambdaLR(optimizer, lr_multiplier(cfg, steps_per_epoch, total_steps))
