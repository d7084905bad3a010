"""Fine-tuning for classification: the ``finetune`` task of the generic training loop (cavmae/train/loop.py).

- model: :class:`~cavmae.models.classifier.CAVMAEClassifier`, initialised from ``train.init`` (our pre-trained or
  fine-tuned models, or the public CAV-MAE checkpoints; the decoder is dropped and a head of another size keeps
  its fresh init); ``finetune.head`` = linear (one frame) or attention (every frame with its audio window: CAV-MAE
  Sync's probe); ``finetune.freeze_base`` trains the head alone (probe, the public ``--freeze_base``);
- inputs: ``finetune.inputs`` = audiovisual | audio | video; one frame per clip (random in training);
- loss: ``finetune.loss`` = bce (multi-label, AudioSet; metrics mAP / mAUC / d-prime) or ce (single-label,
  VGGSound; top-1 / top-5); labels may be soft (mixup, label smoothing are applied by the data pipeline); with
  ``data.balance_mode=weights`` each clip's loss is weighted by its class-balance weight;
- learning rates: the head (``mlp_head``) at ``finetune.head_lr_mult`` x lr; optional layer-wise decay
  ``finetune.layer_decay`` (block i of a modality stack and shared block j are layers i+1 and depth+1+j);
- per-epoch validation: the middle frame, predictions gathered from every process;
- weight averaging: the weights after each epoch of ``finetune.average_epochs`` [first, last] are kept in
  ``<out_dir>/epoch_weights/`` and averaged into the final model, as the paper does;
- the end (:meth:`FinetuneTask.final_evaluation`): the final (averaged) model is evaluated at the middle frame and,
  with ``finetune.ten_frame``, with the ten-frame ensemble (per-frame probabilities averaged); three numbers are
  reported: last epoch, averaged, averaged + ten frames (cavmae/eval/evaluate.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from cavmae.config import Config
from cavmae.eval.classify import AUDIO_ONLY_MODES, classify
from cavmae.eval.evaluate import Predictions, classification_report, middle_frame, predict
from cavmae.eval.metrics import main_metric
from cavmae.train.tasks import Task, register_task, sum_over_processes
from cavmae.train.unused import unused_parameters

log = logging.getLogger(__name__)

# the encoder stream (cavmae/train/unused.py) that each finetune.inputs classifies with
FT_MODE_STREAMS = {"audiovisual": "joint", "audio": "audio", "video": "video"}


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


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, kind: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE (multi-label, mean over classes) or cross-entropy (soft targets allowed) per clip, averaged over the
    batch; with ``weights`` [B] each clip's loss is multiplied by its weight first (class-balance weights of mean
    1, so the expected gradient is that of class-balanced resampling)."""
    logits, labels = logits.float(), labels.float()
    if kind == "ce":
        per_clip = F.cross_entropy(logits, labels, reduction="none")
    else:
        per_clip = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1)
    if weights is not None:
        per_clip = per_clip * weights.to(per_clip)
    return per_clip.mean()


def gather_predictions(accelerator, pred: Predictions) -> Predictions:
    """Every process's predictions, concatenated in process order (every process gets all of them)."""
    if accelerator.num_processes == 1:
        return pred
    from accelerate.utils import gather_object

    return Predictions.cat(gather_object([pred]))


@register_task("finetune")
class FinetuneTask(Task):
    def build_model(self, cfg: Config) -> nn.Module:
        from cavmae.models.classifier import CAVMAEClassifier

        model = CAVMAEClassifier(cfg.model, head=cfg.finetune.head)
        if cfg.finetune.freeze_base:  # probe: requires_grad survives train.init (load_state_dict keeps it)
            head = model.head_parameter_prefixes()
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(head))
        return model

    def unused_parameters(self, model: nn.Module, cfg: Config) -> list[str]:
        """The stream finetune.inputs classifies with is used (cavmae/models/classifier.py); the others, and the
        input branch of a modality the mode does not look at, are not. The attention head reads the modality
        stacks' outputs: the shared blocks, the contrastive heads (CAV-MAE Sync) and the final norms are unused."""
        if cfg.finetune.head == "attention":
            unused = unused_parameters(model, {"audio", "video"}, decoder=False)
            shared = ("blocks_u.", "norm.", "norm_a.", "norm_v.", "constrative_head_")
            return unused + [n for n, _ in model.named_parameters() if n.startswith(shared) and n not in unused]
        return unused_parameters(model, {FT_MODE_STREAMS[cfg.finetune.inputs]}, decoder=False)

    def lr_scale(self, name: str, cfg: Config) -> float:
        if name.startswith(("mlp_head.", "probe_cls", "probe_blocks.")):
            return cfg.finetune.head_lr_mult
        if cfg.finetune.layer_decay == 1.0:
            return 1.0
        m = cfg.model
        top = m.modality_depth + m.shared_depth + 1
        return cfg.finetune.layer_decay ** (top - layer_id(name, m.modality_depth, m.shared_depth))

    def step(self, model: nn.Module, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
        logits = classify(model, batch, cfg.finetune.inputs, cfg.finetune.head)
        loss = classification_loss(logits, batch["labels"], cfg.finetune.loss, batch.get("weights"))
        acc = (logits.argmax(1) == batch["labels"].argmax(1)).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[dict], accelerator, cfg: Config) -> dict[str, float]:
        """Loss and metrics of the middle frame over the whole split (every process gets the same dict)."""
        pred = predict(model, batches, cfg.finetune.inputs, head=cfg.finetune.head, windows=cfg.data.audio_window > 0)
        loss_sum = 0.0
        if len(pred):
            logits = pred.logits[:, middle_frame(pred.logits.shape[1])]
            loss_sum = float(classification_loss(logits, pred.labels, cfg.finetune.loss)) * len(pred)
        everything = gather_predictions(accelerator, pred)
        loss = sum_over_processes(accelerator, {"loss": loss_sum})["loss"] / max(len(everything), 1)
        report = classification_report(everything, multilabel=cfg.finetune.loss == "bce")
        return {"loss": loss, **report["single_frame"]}

    @torch.no_grad()
    def final_evaluation(
        self,
        model: nn.Module,
        val_batches: Callable[[str], Iterable[dict]],
        accelerator,
        cfg: Config,
        last_val: dict[str, float],
        averaged_epochs: list[int],
    ) -> tuple[dict[str, float], dict]:
        """The paper's three numbers: the last epoch's validation (middle frame), the final model (averaged when
        finetune.average_epochs is set) at the middle frame, and the same with the ten-frame ensemble.

        Returns (summary: flat ``final/...`` numbers for the W&B summary, details: everything, for JSON).
        """
        f = cfg.finetune
        multilabel = f.loss == "bce"
        metric = main_metric(multilabel)
        ten = f.ten_frame and f.inputs not in AUDIO_ONLY_MODES
        pred = gather_predictions(
            accelerator,
            predict(
                model, val_batches("all" if ten else "middle"), f.inputs, head=f.head, windows=cfg.data.audio_window > 0
            ),
        )
        report = classification_report(pred, multilabel)
        label = "averaged" if averaged_epochs else "last_epoch"
        details: dict = {
            "metric": metric,
            "averaged_epochs": averaged_epochs,
            "clips": report["clips"],
            "last_epoch": {k: v for k, v in last_val.items()},
            label: report["single_frame"],
        }
        summary = {f"final/{label}_{metric}": report["single_frame"][metric]}
        if metric in last_val:
            summary[f"final/last_epoch_{metric}"] = last_val[metric]
        ensemble = "ten_frame" if report["frames"] == 10 else f"{report['frames']}_frame"  # e.g. 16 for Sync shards
        if ensemble in report:
            details[f"{label}_{ensemble}"] = report[ensemble]
            summary[f"final/{label}_{ensemble}_{metric}"] = report[ensemble][metric]
        elif f.head == "attention":
            details["note"] = "the attention head classifies every frame at once: no per-frame ensemble"
        elif f.ten_frame:
            details["note"] = f"finetune.inputs={f.inputs} does not look at the frames: no ten-frame ensemble"
        return summary, details

    # weight averaging over epochs ------------------------------------------------------------------------------
    def _averaged_epochs(self, cfg: Config) -> range:
        if cfg.finetune.average_epochs is None:
            return range(0)
        first, last = cfg.finetune.average_epochs
        return range(first, last + 1)

    def end_of_epoch(self, model: nn.Module, epoch: int, out_dir: Path, cfg: Config) -> None:
        if epoch + 1 in self._averaged_epochs(cfg):
            folder = out_dir / "epoch_weights"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"epoch_{epoch + 1:03d}.safetensors.tmp"
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
            tmp.replace(folder / f"epoch_{epoch + 1:03d}.safetensors")

    def finish(self, model: nn.Module, out_dir: Path, cfg: Config) -> list[int]:
        """Average the kept epoch weights into `model`; returns the epochs averaged ([] = none: the last weights)."""
        epochs = self._averaged_epochs(cfg)
        files = [out_dir / "epoch_weights" / f"epoch_{e:03d}.safetensors" for e in epochs]
        files = [f for f in files if f.is_file()]
        if not files:
            if epochs:
                log.warning("no epoch weights in %s to average (finetune.average_epochs): keeping the last", out_dir)
            return []
        missing = len(epochs) - len(files)
        if missing:
            log.warning("averaging %d epoch snapshots; %d epochs of the range were not reached", len(files), missing)
        avg = weight_average([load_file(str(f)) for f in files])
        model.load_state_dict({k: v.to(p.dtype) for (k, v), p in zip(avg.items(), model.state_dict().values())})
        used = [int(f.name.split("_")[1].split(".")[0]) for f in files]
        log.info("final model = average of the weights after epochs %s", used)
        return used


def weight_average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts with the same keys (float64 accumulation)."""
    out = {}
    for k in states[0]:
        out[k] = (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype)
    return out
