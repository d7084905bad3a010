"""Setting up a run: the Accelerator, seeds, the initial weights (``train.init``) and freezing the parameters a
task never trains."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from cavmae.config import Config, ConfigError
from cavmae.models.weights import (
    CheckpointError,
    init_from_cavmae,
    init_from_mae,
    is_cavmae_layout,
    read_torch_file,
    strip_prefix,
)
from cavmae.train.tasks import Task

log = logging.getLogger(__name__)


def setup_accelerator(cfg: Config):
    """An Accelerator for this config. Under torchrun / accelerate launch it joins the process group (gloo on
    CPU with ACCELERATE_USE_CPU=1, NCCL on GPUs)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, TorchDynamoPlugin

    os.environ["WANDB_MODE"] = cfg.train.wandb_mode
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision=fp16 needs a CUDA device; use bf16 or no on the CPU")
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with="wandb" if cfg.train.wandb_mode != "disabled" else None,
        project_dir=cfg.train.out_dir,
        # Parameters that never receive a gradient are frozen before wrapping (freeze_unused), so DDP can skip
        # its per-step search for unused parameters.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        # Static shapes: every training batch has the same size (drop_last), and the masking code draws random
        # numbers with shapes that dynamic-shape tracing cannot handle.
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if cfg.train.compile else "no", dynamic=False),
        step_scheduler_with_optimizer=False,
    )


def release_accelerator(accelerator) -> None:
    """Finish trackers, destroy the process group (without it torchrun workers abort at exit) and forget
    Accelerate's process-wide state, so ``train`` can run again in the same process."""
    from accelerate.state import AcceleratorState, GradientState

    accelerator.end_training()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)  # python, numpy, torch, cuda
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def initialise(model: nn.Module, cfg: Config) -> None:
    """Load ``train.init`` (ImageNet MAE or any CAV-MAE checkpoint / model directory) into a fresh model."""
    path, fmt = cfg.train.init, cfg.train.init_format
    if not path:
        return
    if not Path(path).exists():
        raise CheckpointError(f"train.init={path!r} does not exist")
    try:
        if fmt == "auto":
            if Path(path).is_dir() or Path(path).suffix == ".safetensors":
                fmt = "cavmae"
            else:
                state = read_torch_file(path)
                state = strip_prefix(state.get("model", state))
                fmt = "cavmae" if is_cavmae_layout(state) or "patch_embed.proj.weight" not in state else "mae"
            log.info("train.init_format=auto: %s looks like a %s checkpoint", path, fmt)
        if fmt == "mae":
            init_from_mae(model, path)
        else:
            init_from_cavmae(model, path)
    except CheckpointError as e:
        raise CheckpointError(f"train.init: {e}") from e


def freeze_unused(model: nn.Module, task: Task, cfg: Config) -> list[str]:
    """Freeze the parameters that no step of ``task`` uses under ``cfg`` (:meth:`Task.unused_parameters`, derived
    from the model's structure and the config, e.g. the audio / video norm pairs of the modality-specific and
    decoder blocks), so DDP needs no unused-parameter search. Returns the names frozen."""
    unused = [n for n in task.unused_parameters(model, cfg) if model.get_parameter(n).requires_grad]
    for n in unused:
        model.get_parameter(n).requires_grad_(False)
    if unused:
        log.info("%d parameter tensors are unused by %s and are frozen (e.g. %s)", len(unused), task.name, unused[0])
    return unused
