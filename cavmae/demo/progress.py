"""Progress lines of the demo's long phases: a log line at least every :data:`PROGRESS_EVERY_S` seconds while a
replica pre-trains, embeds the held-out clips or fine-tunes, so a demo is never silent for minutes (replicas that
run in processes of their own show no progress bars; their log records reach the parent's handlers).

The lines only read what the run writes anyway (the last line of its ``metrics.jsonl``), from a thread that draws
no random numbers and runs no torch op, so they cannot change the demo's results.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0


def last_record(metrics: Path) -> dict | None:
    """The last complete JSON line of a growing ``metrics.jsonl``, or None (not written yet)."""
    try:
        with metrics.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:  # a line being written, or cut by the 4 KB window
            continue
    return None


def _status(metrics: Path | None, total_steps: int | None, elapsed: float) -> str:
    record = last_record(metrics) if metrics is not None else None
    if record is None:
        return f"{elapsed:.0f} s so far"
    loss = f", loss {record['loss']:.3f}" if isinstance(record.get("loss"), (int, float)) else ""
    return f"step {record.get('step')} of {total_steps}{loss}, {elapsed:.0f} s so far"


@contextmanager
def phase(name: str, metrics: Path | None = None, total_steps: int | None = None) -> Iterator[None]:
    """Log `name` every :data:`PROGRESS_EVERY_S` seconds while the block runs (the step reached, read from the
    run's `metrics` file, when given), then once when it is done."""
    start = time.perf_counter()
    stop = threading.Event()
    every = PROGRESS_EVERY_S

    def watch() -> None:
        while not stop.wait(every):
            log.info("%s: %s", name, _status(metrics, total_steps, time.perf_counter() - start))

    thread = threading.Thread(target=watch, name="demo-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    log.info("%s: done in %.0f s", name, time.perf_counter() - start)


def forward_logs(queue, level: int) -> None:
    """Initializer of a replica's process: its log records go to `queue` (the parent logs them, see
    :func:`listen`) at the parent's level, instead of nowhere (a spawned process has no handlers)."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(level)


def listen(queue) -> logging.handlers.QueueListener:
    """A started listener handing the records that replicas put on `queue` to this process's root handlers."""
    listener = logging.handlers.QueueListener(queue, *logging.getLogger().handlers, respect_handler_level=True)
    listener.start()
    return listener
