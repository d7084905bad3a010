"""Two CPU processes (torchrun + gloo) against one process with the concatenated batch: the contrastive loss with
negatives gathered from every rank, its gradients, and the training loop end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from dist_worker import one_step
from train_helpers import REPO, content_masking, micro_config, read_jsonl

import cavmae.models.cavmae as cavmae_model
from cavmae.train import train


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One torchrun launch; its outputs are read by the tests below."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(REPO / "tests" / "dist_worker.py"), str(out)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


@pytest.fixture
def one_process(monkeypatch, tmp_path):
    monkeypatch.setattr(cavmae_model, "random_masking", content_masking)

    def run(batch_size: int, global_contrast: bool = True, skip: int = 0, group: int = 0) -> dict:
        cfg = micro_config(tmp_path / "run", f"data.batch_size={batch_size}", "train.max_steps=3")
        cfg.train.global_contrast = global_contrast
        cfg.train.contrast_group = group
        return one_step(cfg, skip)

    return run


def assert_grads_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and len(want) > 50
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_two_processes_match_one_process_with_the_whole_batch(two_processes, one_process):
    dist = torch.load(two_processes / "step-global.pt", weights_only=True)
    ref = one_process(8)  # the two processes hold 4 clips each of the same 8-clip global batch
    assert dist["keys"] == ref["keys"][:4]  # rank 0's share is the first half
    for k in ("loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c"):
        assert abs(dist["metrics"][k] - ref["metrics"][k]) < 1e-5, (k, dist["metrics"][k], ref["metrics"][k])
    assert_grads_close(dist["grads"], ref["grads"])


def test_per_device_negatives_reproduce_the_paper(two_processes, one_process):
    """global_contrast=false: each process takes its negatives among its own 4 clips, so loss and gradients are
    the mean over the two halves of the global batch, each on its own (and differ from the 8-clip batch's)."""
    dist = torch.load(two_processes / "step-local.pt", weights_only=True)
    halves = [one_process(4, skip=i) for i in (0, 1)]  # batch 4: global batches 0 and 1 = the two shares
    for k in ("loss", "loss_c", "loss_rec"):
        want = 0.5 * (halves[0]["metrics"][k] + halves[1]["metrics"][k])
        assert abs(dist["metrics"][k] - want) < 1e-5, (k, dist["metrics"][k], want)
    assert_grads_close(dist["grads"], {n: 0.5 * (g + halves[1]["grads"][n]) for n, g in halves[0]["grads"].items()})
    whole = one_process(8)["metrics"]["loss_c"]
    assert abs(dist["metrics"]["loss_c"] - whole) > 1e-3, "per-device negatives must differ from the global batch"


@pytest.mark.parametrize("group", [2, 8])
def test_contrast_groups_give_the_one_process_objective_on_two_processes(two_processes, one_process, group):
    """train.contrast_group: the same objective (mean over the groups of the global batch) and gradients on two
    processes as on one, whether the groups lie inside a process (2) or span both (8: gathered)."""
    dist = torch.load(two_processes / f"step-group{group}.pt", weights_only=True)
    ref = one_process(8, group=group)
    for k in ("loss", "loss_rec", "loss_c", "acc_c"):
        assert abs(dist["metrics"][k] - ref["metrics"][k]) < 1e-5, (k, dist["metrics"][k], ref["metrics"][k])
    assert_grads_close(dist["grads"], ref["grads"])
    if group == 2:
        assert abs(ref["metrics"]["loss_c"] - one_process(8)["metrics"]["loss_c"]) > 1e-3


def test_training_loop_on_two_processes_logs_the_one_process_losses(two_processes, monkeypatch, tmp_path):
    monkeypatch.setattr(cavmae_model, "random_masking", content_masking)
    cfg = micro_config(tmp_path / "single", "data.batch_size=8", "train.max_steps=3")
    train(cfg)
    single = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    double = read_jsonl(two_processes / "run" / "metrics.jsonl")
    assert [r["step"] for r in double] == [1, 2, 3]
    for a, b in zip(single, double):
        for k in ("loss", "loss_rec", "loss_c"):
            assert abs(a[k] - b[k]) < 1e-4, (a["step"], k, a[k], b[k])
    ckpt = two_processes / "run" / "checkpoints" / "ckpt-00000003"
    assert (ckpt / "rng-0.pt").is_file() and (ckpt / "rng-1.pt").is_file()
