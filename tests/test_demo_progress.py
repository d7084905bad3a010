"""``cavmae demo`` is never silent for long: its long phases (pre-training, embedding, fine-tuning) log a line at
least every ``PROGRESS_EVERY_S`` seconds, also from replicas that run in processes of their own."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor

import torch

from cavmae.demo import progress
from cavmae.demo.pipeline import QUICK, make_data, run_seed

# A replica of a few steps on micro inputs: every phase runs, in seconds.
MICRO = dataclasses.replace(
    QUICK,
    num_clips=30,
    num_classes=2,
    duration=1.0,
    frame_size=32,
    audio_length=64,
    num_mel_bins=32,
    pretrain_steps=6,
    pretrain_batch=4,
    finetune_steps=3,
    finetune_batch=4,
    finetune_eval_every=3,
    samples_per_shard=16,
    workers=0,
)


def test_every_long_phase_of_a_replica_logs_its_progress(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.02)  # the demo's 30 s, scaled to a run of seconds
    data = make_data(tmp_path, MICRO, seed=0)
    threads = torch.get_num_threads()
    with caplog.at_level(logging.INFO):
        run_seed(tmp_path, MICRO, data, "vit", seed=0, progress=False)
    # the replica's thread count is its own: the caller's comes back (it changes the caller's float results)
    assert torch.get_num_threads() == threads
    lines = [r.getMessage() for r in caplog.records if r.name == "cavmae.demo.progress"]
    phases = {
        "seed 0: pre-training": 6,
        "seed 0: embedding the held-out clips for retrieval": None,
        "seed 0: fine-tuning the pre-trained model": 3,
        "seed 0: fine-tuning from scratch": 3,
    }
    for name, steps in phases.items():
        assert any(re.fullmatch(rf"{re.escape(name)}: done in \d+ s", line) for line in lines), (name, lines)
        during = [line for line in lines if line.startswith(f"{name}: ") and "done in" not in line]
        assert during, (name, lines)  # lines while the phase runs, not only when it ends
        if steps is not None:  # training phases say the step reached, of how many
            reached = [int(m[1]) for line in during if (m := re.search(rf"step (\d+) of {steps}\b", line))]
            assert reached and reached == sorted(reached) and max(reached) <= steps, (name, during)


def test_a_replica_in_its_own_process_logs_through_the_parent(caplog):
    """Replicas run spawned (no handlers of their own): their records reach this process's handlers."""
    context = multiprocessing.get_context("spawn")
    records = context.Queue()
    with caplog.at_level(logging.INFO):
        listener = progress.listen(records)
        try:
            with ProcessPoolExecutor(
                1, mp_context=context, initializer=progress.forward_logs, initargs=(records, logging.INFO)
            ) as pool:
                pool.submit(logging.log, logging.INFO, "seed %d: pre-training: step %d of %d", 7, 3, 9).result()
                pool.submit(logging.log, logging.DEBUG, "below the parent's level").result()
        finally:
            listener.stop()
    assert "seed 7: pre-training: step 3 of 9" in caplog.messages
    assert "below the parent's level" not in caplog.messages


def test_last_record_reads_the_end_of_a_growing_file(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    assert progress.last_record(metrics) is None
    metrics.write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, 400)) + '{"step": 4')
    assert progress.last_record(metrics) == {"step": 399, "loss": 1.0 / 399}  # the torn last line is skipped
