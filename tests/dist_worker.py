"""Run by tests/test_train_dist.py under ``torchrun --nproc_per_node 2`` (ACCELERATE_USE_CPU=1, gloo).

``python dist_worker.py OUT_DIR`` writes, from every rank r, ``OUT_DIR/step-global-<r>.pt`` and ``step-local-<r>.pt``
(reduced metrics and gradients of one step on this rank's share of the first global batch, with negatives gathered
from all ranks / kept per device, and the masks this rank drew), ``step-group{2,8}-<r>.pt`` (the same with
train.contrast_group), then trains a few steps with the real loop into ``OUT_DIR/run`` and writes the masks of this
rank's training steps to ``OUT_DIR/train-masks-<r>.pt``. The masks are drawn by the real masking (recorded, not
replaced).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from train_helpers import MaskingTask, micro_config, recording_masking

from cavmae.config import Config
from cavmae.train import freeze_unused, make_batches, seed_everything, setup_accelerator, to_device, train


def one_step(cfg: Config, skip: int = 0, masking=None) -> dict:
    """Metrics (averaged over processes) and gradients of one step on global batch ``skip`` of epoch 0, seeded as
    the training loop seeds (cavmae/train/loop.py build_run), and the masks [B, L] drawn (audio, video). ``masking``
    replaces the real masking (default: the real one, recorded)."""
    masks: list[torch.Tensor] = []
    accelerator = setup_accelerator(cfg)
    seed_everything(cfg.train.seed)  # the same initial weights on every process
    task = MaskingTask(masking or recording_masking(masks))
    model = task.build_model(cfg).to(accelerator.device)
    freeze_unused(model, task, cfg)
    model = accelerator.prepare(model)
    rank, world = accelerator.process_index, accelerator.num_processes
    seed_everything(cfg.train.seed + rank)  # as the loop does: each process draws its own masks
    batch = to_device(next(iter(make_batches(cfg, "train", 0, rank, world, skip=skip))), accelerator.device)
    out = task.step(model, batch, cfg)
    accelerator.backward(out["loss"])
    keys = sorted(out)
    reduced = accelerator.reduce(torch.stack([out[k].detach().float() for k in keys]), reduction="mean")
    grads = {
        n: p.grad.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters() if p.grad is not None
    }
    return {"metrics": dict(zip(keys, reduced.tolist())), "grads": grads, "keys": batch["keys"], "masks": masks}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = micro_config(out / "run", "data.batch_size=4", "train.max_steps=3")
    rank = None
    for name, global_contrast, group in (
        ("global", True, 0),
        ("local", False, 0),
        ("group2", True, 2),
        ("group8", True, 8),
    ):
        # groups of 2 lie inside each process's 4 clips; one group of 8 spans both processes
        cfg.train.global_contrast, cfg.train.contrast_group = global_contrast, group
        result = one_step(cfg)
        rank = torch.distributed.get_rank()
        torch.save(result, out / f"step-{name}-{rank}.pt")
    cfg.train.global_contrast, cfg.train.contrast_group = True, 0
    masks: list[torch.Tensor] = []
    train(cfg, task=MaskingTask(recording_masking(masks)))  # ends with destroy_process_group (else workers abort)
    torch.save(masks, out / f"train-masks-{rank}.pt")
