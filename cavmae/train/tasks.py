"""Tasks: what the generic training loop (cavmae/train/loop.py) needs to know about a job.

A task builds the model, turns a batch into named losses, evaluates, and draws a figure; the loop does the rest
(devices, precision, accumulation, clipping, checkpoints, logging). Fine-tuning registers its own task::

    @register_task("finetune")
    class FinetuneTask(Task):
        def build_model(self, cfg): ...            # CAVMAEClassifier, initialised from cfg.train.init
        def lr_scale(self, name, cfg): ...         # e.g. cfg.finetune.head_lr_mult for "mlp_head.*"
        def step(self, model, batch, cfg): ...     # {"loss": bce, "acc": ...}
        def evaluate(self, model, batches, accelerator, cfg): ...   # gather predictions, mAP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from cavmae.config import Config, ConfigError
from cavmae.train.unused import unused_parameters

_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        _TASKS[name] = cls
        cls.name = name
        return cls

    return deco


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise ConfigError(f"no training task {name!r}; registered: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]()


class Task:
    """The task interface. ``model`` arguments of :meth:`step` are the prepared (possibly DDP-wrapped, compiled)
    model; those of :meth:`evaluate` and :meth:`figure` the unwrapped module, which must run no collectives."""

    name = "task"

    def build_model(self, cfg: Config) -> nn.Module:
        """A freshly initialised model for ``cfg`` (the loop then applies train.init, freezing and checkpoints)."""
        raise NotImplementedError

    def lr_scale(self, name: str, cfg: Config) -> float:
        """Learning-rate multiplier of the parameter called ``name`` (1 everywhere by default)."""
        return 1.0

    def step(self, model: nn.Module, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
        """Forward one micro-batch. Returns scalar tensors: ``loss`` (what is back-propagated) and any other
        named losses / metrics to log (detached or not; the loop only reads their values)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, batches: Iterable[dict], accelerator, cfg: Config) -> dict[str, float]:
        """Validation metrics over this process's share of the split, combined over processes (every process
        gets the same dict)."""
        raise NotImplementedError

    def unused_parameters(self, model: nn.Module, cfg: Config) -> list[str]:
        """Names of the parameters of ``model`` that no :meth:`step` under ``cfg`` uses, derived from the model's
        structure and the config (never from one batch's gradients); the loop freezes them, so DDP needs no
        unused-parameter search. A task that leaves parameters unused must name them here."""
        return []

    def example_batch(self, cfg: Config, batch_size: int, device: torch.device) -> dict:
        """A batch of the right shapes (benchmarks)."""
        m = cfg.model
        return {
            "audio": torch.randn(batch_size, m.audio_length, m.num_mel_bins, device=device),
            "frames": torch.randn(batch_size, 3, m.image_size, m.image_size, device=device),
            "labels": torch.zeros(batch_size, m.num_classes, device=device),
            "keys": [f"example-{i}" for i in range(batch_size)],
        }

    def figure(self, model: nn.Module, batch: dict, path: Path, cfg: Config) -> Path | None:
        """Draw a figure of ``batch`` into ``path`` (PNG); None when the task has none."""
        return None

    def end_of_epoch(self, model: nn.Module, epoch: int, out_dir: Path, cfg: Config) -> None:
        """Called on the main process after training epoch ``epoch`` (0-based) finished (e.g. weight snapshots)."""

    def finish(self, model: nn.Module, out_dir: Path, cfg: Config) -> list[int]:
        """Called on the main process after the last step, before the final model is saved (e.g. averaging).
        Returns the epochs whose weights were averaged into `model` ([] = the model is the last weights)."""
        return []

    def final_evaluation(
        self,
        model: nn.Module,
        val_batches: Callable[[str], Iterable[dict]],
        accelerator,
        cfg: Config,
        last_val: dict[str, float],
        averaged_epochs: list[int],
    ) -> tuple[dict[str, float], dict]:
        """Called on every process after :meth:`finish` (every process holds the final weights); ``val_batches``
        (frame_mode) gives this process's validation batches. Returns (numbers for the run summary, details
        written to ``final_metrics.json``); ({}, {}) = nothing to report."""
        return {}, {}


def sum_over_processes(accelerator, sums: dict[str, float]) -> dict[str, float]:
    """All-reduce (sum) a dict of floats; every process must call it with the same keys."""
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum")
    return dict(zip(keys, t.tolist()))


@contextlib.contextmanager
def local_contrast(model: nn.Module) -> Iterator[None]:
    """Negatives from this process only, for forwards that not every process runs (evaluation, figures):
    the cross-rank all-gather is a collective and would wait forever for the other ranks."""
    before = getattr(model, "gather_contrast", False)
    model.gather_contrast = False
    try:
        yield
    finally:
        model.gather_contrast = before


@register_task("pretrain")
class PretrainTask(Task):
    """CAV-MAE pre-training: masked reconstruction + InfoNCE (the model returns its named losses)."""

    def build_model(self, cfg: Config) -> nn.Module:
        from cavmae.models.cavmae import CAVMAE

        model = CAVMAE(cfg.model)
        # negatives from every rank (autograd all-gather); with contrast groups the gather is used only where a
        # group spans processes
        model.gather_contrast = cfg.train.global_contrast or cfg.train.contrast_group > 0
        model.contrast_group = cfg.train.contrast_group
        return model

    def unused_parameters(self, model: nn.Module, cfg: Config) -> list[str]:
        """The joint stream feeds the decoder (reconstruction), the audio and video streams the contrastive loss;
        a term weighted 0 is not computed, so its streams are unused."""
        streams = ({"joint"} if cfg.model.rec_weight != 0 else set()) | (
            {"audio", "video"} if cfg.model.contrast_weight != 0 else set()
        )
        return unused_parameters(model, streams, decoder=cfg.model.rec_weight != 0)

    def step(self, model: nn.Module, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
        out = model(batch["audio"], batch["frames"])
        return {k: out[k] for k in ("loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c")}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[dict], accelerator, cfg: Config) -> dict[str, float]:
        """Masked losses (as in training) and in-batch retrieval top-1 of the unmasked embeddings, both directions.

        Retrieval is within each evaluation batch of this process (eval.batch_size clips; chance = 1 / batch).
        """
        sums = dict.fromkeys(("loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c"), 0.0)
        sums.update(r1_v2a=0.0, r1_a2v=0.0, clips=0.0)
        with local_contrast(model):
            for batch in batches:
                n = batch["audio"].shape[0]
                out = model(batch["audio"], batch["frames"], return_embeddings=True)  # one forward: losses, embeddings
                for k in ("loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c"):
                    sums[k] += float(out[k]) * n
                emb_a, emb_v = out["emb_a"], out["emb_v"]  # [n, D] each: the unmasked streams, as embed() gives
                sim = nn.functional.normalize(emb_v, dim=-1) @ nn.functional.normalize(emb_a, dim=-1).t()
                target = torch.arange(n, device=sim.device)
                sums["r1_v2a"] += float((sim.argmax(dim=1) == target).sum())
                sums["r1_a2v"] += float((sim.argmax(dim=0) == target).sum())
                sums["clips"] += n
        total = sum_over_processes(accelerator, sums)
        clips = max(total.pop("clips"), 1.0)
        return {k: v / clips for k, v in total.items()}

    def figure(self, model: nn.Module, batch: dict, path: Path, cfg: Config) -> Path | None:
        from cavmae.train.figures import reconstruction_figure

        with local_contrast(model):
            return reconstruction_figure(model, batch["audio"][:1], batch["frames"][:1], path)
