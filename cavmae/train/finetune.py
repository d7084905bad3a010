"""Fine-tuning for classification: the ``finetune`` task of the generic training loop (cavmae/train/loop.py).

- model: :class:`~cavmae.models.classifier.CAVMAEClassifier`, initialised from ``train.init`` (our pre-trained or
  fine-tuned models, or the public CAV-MAE checkpoints; the decoder is dropped and a head of another size keeps
  its fresh init);
- inputs: ``train.ft_mode`` = audiovisual | audio | video;
- loss: ``train.ft_loss`` = bce (multi-label, AudioSet; metrics mAP / mAUC) or ce (single-label, VGGSound; top-1 /
  top-5); labels may be soft (mixup, label smoothing are applied by the data pipeline);
- learning rates: the head (``mlp_head``) at ``optim.head_lr_mult`` x lr; optional layer-wise decay
  ``optim.layer_decay`` (block i of a modality stack and shared block j are layers i+1 and depth+1+j);
- evaluation: logits gathered from every process; with frames [B, 10, 3, H, W] (data.frame_mode=all) the logits
  of the ten frames are averaged;
- weight averaging: the weights after each epoch in [train.avg_weights_from, train.avg_weights_to] are kept in
  ``<out_dir>/epoch_weights/`` and averaged into the final model, as the paper does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from cavmae.config import Config
from cavmae.eval.classify import classify
from cavmae.eval.metrics import classification_metrics
from cavmae.train.tasks import Task, register_task

log = logging.getLogger(__name__)


def layer_id(name: str, modality_depth: int, shared_depth: int) -> int:
    """Depth of parameter `name` for layer-wise lr decay: embeddings 0, blocks 1.., norms and head last."""
    if name.startswith(("patch_embed", "pos_embed", "modality_")):
        return 0
    for stack in ("blocks_a.", "blocks_v."):
        if name.startswith(stack):
            return int(name.split(".")[1]) + 1
    if name.startswith("blocks_u."):
        return modality_depth + 1 + int(name.split(".")[1])
    return modality_depth + shared_depth + 1


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(logits.float(), labels.float())  # soft targets allowed
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


@register_task("finetune")
class FinetuneTask(Task):
    def build_model(self, cfg: Config) -> nn.Module:
        from cavmae.models.classifier import CAVMAEClassifier

        return CAVMAEClassifier(cfg.model)

    def lr_scale(self, name: str, cfg: Config) -> float:
        if name.startswith("mlp_head."):
            return cfg.optim.head_lr_mult
        if cfg.optim.layer_decay == 1.0:
            return 1.0
        m = cfg.model
        top = m.modality_depth + m.shared_depth + 1
        return cfg.optim.layer_decay ** (top - layer_id(name, m.modality_depth, m.shared_depth))

    def step(self, model: nn.Module, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
        logits = classify(model, batch, cfg.train.ft_mode)
        loss = classification_loss(logits, batch["labels"], cfg.train.ft_loss)
        acc = (logits.argmax(1) == batch["labels"].argmax(1)).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[dict], accelerator, cfg: Config) -> dict[str, float]:
        from accelerate.utils import gather_object

        logits, labels, loss_sum = [], [], 0.0
        for batch in batches:
            out = classify(model, batch, cfg.train.ft_mode)
            loss_sum += float(classification_loss(out, batch["labels"], cfg.train.ft_loss)) * out.shape[0]
            logits.append(out.float().cpu())
            labels.append(batch["labels"].float().cpu())
        local = (torch.cat(logits) if logits else torch.empty(0), torch.cat(labels) if labels else torch.empty(0))
        parts = gather_object([local]) if accelerator.num_processes > 1 else [local]
        all_logits = torch.cat([p[0] for p in parts if p[0].numel()])
        all_labels = torch.cat([p[1] for p in parts if p[1].numel()])
        from cavmae.train.tasks import sum_over_processes

        loss = sum_over_processes(accelerator, {"loss": loss_sum})["loss"] / max(len(all_logits), 1)
        metrics = classification_metrics(all_logits, all_labels, multilabel=cfg.train.ft_loss == "bce")
        return {"loss": loss, **metrics}

    # weight averaging over epochs ------------------------------------------------------------------------------
    def _averaged_epochs(self, cfg: Config) -> range:
        t = cfg.train
        if t.avg_weights_from <= 0:
            return range(0)
        return range(t.avg_weights_from, (t.avg_weights_to or t.epochs) + 1)

    def end_of_epoch(self, model: nn.Module, epoch: int, out_dir: Path, cfg: Config) -> None:
        if epoch + 1 in self._averaged_epochs(cfg):
            folder = out_dir / "epoch_weights"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"epoch_{epoch + 1:03d}.safetensors.tmp"
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
            tmp.replace(folder / f"epoch_{epoch + 1:03d}.safetensors")

    def finish(self, model: nn.Module, out_dir: Path, cfg: Config) -> None:
        epochs = self._averaged_epochs(cfg)
        files = [out_dir / "epoch_weights" / f"epoch_{e:03d}.safetensors" for e in epochs]
        files = [f for f in files if f.is_file()]
        if not files:
            if epochs:
                log.warning("no epoch weights in %s to average (train.avg_weights_*): keeping the last", out_dir)
            return
        missing = len(epochs) - len(files)
        if missing:
            log.warning("averaging %d epoch snapshots; %d epochs of the range were not reached", len(files), missing)
        avg = weight_average([load_file(str(f)) for f in files])
        model.load_state_dict({k: v.to(p.dtype) for (k, v), p in zip(avg.items(), model.state_dict().values())})
        log.info("final model = average of the weights after epochs %s", [int(f.stem.split("_")[1]) for f in files])


def weight_average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts with the same keys (float64 accumulation)."""
    out = {}
    for k in states[0]:
        out[k] = (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype)
    return out
