"""Run by tests/test_train_dist.py under ``torchrun --nproc_per_node 2`` (ACCELERATE_USE_CPU=1, gloo).

``python dist_worker.py OUT_DIR`` writes, from rank 0, ``OUT_DIR/step-global.pt`` and ``step-local.pt`` (reduced
metrics and gradients of one step on this rank's share of the first global batch, with negatives gathered from
all ranks / kept per device), ``step-group{2,8}.pt`` (the same with train.contrast_group), then trains
a few steps with the real loop into ``OUT_DIR/run``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from train_helpers import content_masking, micro_config

import cavmae.models.cavmae as cavmae_model
from cavmae.config import Config
from cavmae.train import freeze_unused, make_batches, seed_everything, setup_accelerator, to_device, train
from cavmae.train.tasks import PretrainTask


def one_step(cfg: Config, skip: int = 0) -> dict:
    """Metrics (averaged over processes) and gradients of one step on global batch ``skip`` of epoch 0."""
    accelerator = setup_accelerator(cfg)
    seed_everything(cfg.train.seed)
    task = PretrainTask()
    model = task.build_model(cfg).to(accelerator.device)
    freeze_unused(model, task, cfg)
    model = accelerator.prepare(model)
    rank, world = accelerator.process_index, accelerator.num_processes
    batch = to_device(next(iter(make_batches(cfg, "train", 0, rank, world, skip=skip))), accelerator.device)
    out = task.step(model, batch, cfg)
    accelerator.backward(out["loss"])
    keys = sorted(out)
    reduced = accelerator.reduce(torch.stack([out[k].detach().float() for k in keys]), reduction="mean")
    grads = {
        n: p.grad.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters() if p.grad is not None
    }
    return {"metrics": dict(zip(keys, reduced.tolist())), "grads": grads, "keys": batch["keys"]}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    cavmae_model.random_masking = content_masking  # masks independent of how clips are spread over processes
    cfg = micro_config(out / "run", "data.batch_size=4", "train.max_steps=3")
    for name, global_contrast in (("global", True), ("local", False)):
        cfg.train.global_contrast = global_contrast
        result = one_step(cfg)
        if torch.distributed.get_rank() == 0:
            torch.save(result, out / f"step-{name}.pt")
    cfg.train.global_contrast = True
    for group in (2, 8):  # groups inside each process's 4 clips / one group spanning both processes
        cfg.train.contrast_group = group
        result = one_step(cfg)
        if torch.distributed.get_rank() == 0:
            torch.save(result, out / f"step-group{group}.pt")
    cfg.train.contrast_group = 0
    train(cfg)  # ends with destroy_process_group (without it the workers abort at exit)
