"""``python tests/fault_run.py FAULT STEP COMMAND ARGS...``: run ``cavmae COMMAND ARGS`` with a fault injected by
patching the library here (the library itself carries no test hooks); tests/test_train_resume.py uses it.

FAULT: ``kill_after_step`` SIGKILLs the process once training step STEP has ended (its validation and checkpoint
included); ``kill_in_save`` once the model file of step STEP's checkpoint is written, before the rest of it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import cavmae.train.loop as loop
import cavmae.train.state as state
from cavmae.cli import main


def kill() -> None:
    logging.getLogger(__name__).warning("fault_run: killing this process")
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_step(step: int) -> None:
    end_of_step = loop.end_of_step

    def patched(run):
        epoch_done = end_of_step(run)
        if run.state.step == step:
            kill()
        return epoch_done

    loop.end_of_step = patched


def kill_in_save(step: int) -> None:
    save_file = state.save_file

    def patched(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        if metadata and metadata.get("step") == str(step):
            kill()

    state.save_file = patched


FAULTS = {"kill_after_step": kill_after_step, "kill_in_save": kill_in_save}

if __name__ == "__main__":
    fault, step, *argv = sys.argv[1:]
    FAULTS[fault](int(step))
    sys.exit(main(argv))
