"""Watching a run: metrics.jsonl, W&B (through Accelerate's trackers), a tqdm bar, and figures.

Only the main process writes. ``metrics.jsonl`` gets one JSON line per logged training step (``step``, ``epoch``,
the loss parts, ``lr``, ``grad_norm``, ``samples_per_s``, ``data_wait``, ``bad_steps``); ``val_metrics.jsonl`` one
line per validation (``step``, ``epoch``, ``val/<name>``). On resume both are cut back to the checkpoint's step,
so the files always read as one uninterrupted run.

W&B: the mode comes from ``train.wandb_mode`` (offline by default: no account or network; ``wandb sync`` later).
Every record carries ``train/step`` and the run plots against it (``define_metric``), so a resumed run, which
continues the same W&B run id, never logs a smaller internal step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from pathlib import Path

from cavmae.config import Config

log = logging.getLogger(__name__)


def _cut_jsonl(path: Path, keep) -> None:
    """Keep the lines for which keep(record) is true; drops a torn last line (a crash mid-write)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(rec):
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


class RunLogger:
    """Writes metrics / figures of a run; a no-op on processes other than the main one."""

    def __init__(
        self, accelerator, cfg: Config, out_dir: Path, total_steps: int, start_step: int, resumed: bool = False
    ):
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.out_dir = out_dir
        self.metrics_path = out_dir / "metrics.jsonl"
        self.val_path = out_dir / "val_metrics.jsonl"
        self.use_wandb = cfg.train.wandb_mode != "disabled"
        self.bar = None
        if not self.main:
            return
        # A resumed run redoes the steps after its checkpoint: forget what the killed run logged for them (a
        # checkpoint is written after its step's validation, so validations at start_step stay). A fresh run
        # forgets everything an earlier attempt without checkpoints wrote.
        for path in (self.metrics_path, self.val_path):
            _cut_jsonl(path, lambda r: resumed and r.get("step", 0) <= start_step)
        if self.use_wandb:
            self._init_wandb(cfg, start_step)
        if cfg.train.progress_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=cfg.task, dynamic_ncols=True)

    def _init_wandb(self, cfg: Config, start_step: int) -> None:
        # One W&B run id per run directory, kept across resumes.
        id_file = self.out_dir / "wandb_id.txt"
        if not id_file.is_file():
            id_file.write_text(secrets.token_hex(4))
        run_id = id_file.read_text().strip()
        wandb_dir = Path(os.environ.get("WANDB_DIR") or self.out_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.init_trackers(
            cfg.train.wandb_project,
            config=cfg.to_dict(),
            init_kwargs={
                "wandb": {
                    "dir": str(wandb_dir),
                    "id": run_id,
                    "resume": "allow",
                    "name": cfg.train.wandb_name or self.out_dir.name,
                }
            },
        )
        run = self.accelerator.get_tracker("wandb", unwrap=True)
        run.define_metric("train/step")
        run.define_metric("*", step_metric="train/step")
        log.info("W&B run %s (%s mode) in %s", run_id, cfg.train.wandb_mode, wandb_dir)

    def _write(self, path: Path, record: dict) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def train(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.main:
            return
        record = {"step": step, "epoch": epoch, **metrics}
        self._write(self.metrics_path, record)
        if self.use_wandb:
            self.accelerator.log({"train/step": step, **{f"train/{k}": v for k, v in metrics.items()}})

    def progress(self, step: int, metrics: dict[str, float], eta_note: str = "") -> None:
        """Advance the bar to ``step`` and show the latest numbers."""
        if self.bar is None:
            return
        short = {
            "loss": metrics.get("loss"),
            "rec": metrics.get("loss_rec"),
            "c": metrics.get("loss_c"),
            "acc": metrics.get("acc_c"),
            "lr": metrics.get("lr"),
            "sps": metrics.get("samples_per_s"),
            "wait": metrics.get("data_wait"),
        }
        post = {k: _fmt(v) for k, v in short.items() if v is not None}
        if metrics.get("bad_steps"):
            post["bad"] = str(int(metrics["bad_steps"]))
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(step - self.bar.n)

    def val(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.main:
            return
        record = {"step": step, "epoch": epoch, **{f"val/{k}": v for k, v in metrics.items()}}
        self._write(self.val_path, record)
        if self.use_wandb:
            self.accelerator.log({"train/step": step, **{f"val/{k}": v for k, v in metrics.items()}})
        summary = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        self.message(f"validation at step {step} (epoch {epoch}): {summary}")

    def probe(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Pre-training probe metrics: beside the validations (``probe/*`` in val_metrics.jsonl and W&B)."""
        if not self.main:
            return
        record = {"step": step, "epoch": epoch, **{f"probe/{k}": v for k, v in metrics.items()}}
        self._write(self.val_path, record)
        if self.use_wandb:
            self.accelerator.log({"train/step": step, **{f"probe/{k}": v for k, v in metrics.items()}})
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        self.message(f"probe at step {step} (epoch {epoch}): {shown}")

    def final(self, summary: dict[str, float], details: dict) -> None:
        """The run's final numbers: ``final_metrics.json`` (details and summary), the W&B run summary, one line."""
        if not self.main or not (summary or details):
            return
        path = self.out_dir / "final_metrics.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"summary": summary, **details}, indent=2))
        tmp.replace(path)
        if self.use_wandb:
            self.accelerator.get_tracker("wandb", unwrap=True).summary.update(summary)
        self.message("final: " + ", ".join(f"{k.removeprefix('final/')} {_fmt(v)}" for k, v in summary.items()))

    def image(self, step: int, path: Path) -> None:
        if not self.main or not self.use_wandb:
            return
        import wandb

        self.accelerator.log({"train/step": step, "train/reconstruction": wandb.Image(str(path))})

    def message(self, text: str) -> None:
        """Log a line without breaking the progress bar."""
        if not self.main:
            return
        if self.bar is not None:
            self.bar.clear()
        log.info("%s", text)
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt(v: float) -> str:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


class Throughput:
    """Samples/s and the fraction of wall time spent waiting for data, over the steps since the last read."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.samples = 0
        self.wait = 0.0

    def add(self, samples: int, wait: float) -> None:
        self.samples += samples
        self.wait += wait

    def read(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        out = self.samples / elapsed, self.wait / elapsed
        self.reset()
        return out
