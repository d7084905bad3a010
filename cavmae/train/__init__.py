"""Training: the generic loop (``loop``) over a task (``tasks``: pre-training; ``finetune``: classification),
its data source (``batches``), set-up (``setup``; ``unused``: the parameters a task never uses), optimizer and
schedule (``optim``), the checkpoints of a run (``state``), its logs (``logs``) and reconstruction figures
(``figures``).

Importing the package registers the built-in tasks once; the task registry imports none of them.
"""

from cavmae.train import finetune as _finetune  # noqa: F401  (registers the "finetune" task)
from cavmae.train.batches import batches_per_epoch, make_batches, to_device
from cavmae.train.loop import TrainingStopped, train
from cavmae.train.setup import freeze_unused, initialise, seed_everything, setup_accelerator

__all__ = [
    "TrainingStopped",
    "batches_per_epoch",
    "freeze_unused",
    "initialise",
    "make_batches",
    "seed_everything",
    "setup_accelerator",
    "to_device",
    "train",
]
