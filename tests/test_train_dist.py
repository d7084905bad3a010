"""Two CPU processes (torchrun + gloo) against one process with the concatenated batch: the contrastive loss with
negatives gathered from every rank, its gradients, and the training loop end to end.

Both processes run the real masking. Each draws its masks from its own stream, seeded train.seed + rank (the
loop's build_run), so a one-process run, which draws the masks of all 8 clips from one stream, cannot draw the same
ones: the tests check that each process drew what its stream gives, then replay those masks in the one-process
run and compare losses and gradients.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from dist_worker import one_step
from train_helpers import REPO, MaskingTask, first_masks, micro_config, read_jsonl, replaying_masking

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


def ranks(out, name: str) -> list[dict]:
    """Both processes' results of one step."""
    return [torch.load(out / f"step-{name}-{rank}.pt", weights_only=True) for rank in (0, 1)]


def assert_each_process_drew_its_own_masks(results: list[list[torch.Tensor]], tmp_path) -> None:
    """results[rank]: the masks [4, L] (audio, video) a process drew first: those of stream train.seed + rank."""
    cfg = micro_config(tmp_path)
    for rank, masks in enumerate(results):
        want = first_masks(cfg, cfg.train.seed + rank, 4)
        assert all(torch.equal(got, w) for got, w in zip(masks, want, strict=True)), f"process {rank}"
    assert not torch.equal(results[0][0], results[1][0]), "both processes drew the same audio masks"


def whole_batch(results: list[dict]) -> list[torch.Tensor]:
    """The masks of the 8-clip batch: process 0's 4 clips, then process 1's (audio, then video)."""
    return [torch.cat([a, b]) for a, b in zip(results[0]["masks"], results[1]["masks"], strict=True)]


@pytest.fixture
def one_process(tmp_path):
    def run(batch_size: int, masks: list[torch.Tensor], global_contrast: bool = True, skip: int = 0, group: int = 0):
        cfg = micro_config(tmp_path / "run", f"data.batch_size={batch_size}", "train.max_steps=3")
        cfg.train.global_contrast = global_contrast
        cfg.train.contrast_group = group
        return one_step(cfg, skip, masking=replaying_masking(masks))

    return run


def assert_grads_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and len(want) > 50
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_two_processes_match_one_process_with_the_whole_batch(two_processes, one_process, tmp_path):
    dist = ranks(two_processes, "global")
    assert_each_process_drew_its_own_masks([r["masks"] for r in dist], tmp_path)
    ref = one_process(8, whole_batch(dist))  # the two processes hold 4 clips each of the same 8-clip global batch
    assert dist[0]["keys"] == ref["keys"][:4] and dist[1]["keys"] == ref["keys"][4:]
    for k in ("loss", "loss_rec", "loss_rec_a", "loss_rec_v", "loss_c", "acc_c"):
        assert abs(dist[0]["metrics"][k] - ref["metrics"][k]) < 1e-5, (k, dist[0]["metrics"][k], ref["metrics"][k])
    assert_grads_close(dist[0]["grads"], ref["grads"])
    assert_grads_close(dist[1]["grads"], ref["grads"])


def test_per_device_negatives_reproduce_the_paper(two_processes, one_process):
    """global_contrast=false: each process takes its negatives among its own 4 clips, so loss and gradients are
    the mean over the two halves of the global batch, each on its own (and differ from the 8-clip batch's)."""
    dist = ranks(two_processes, "local")
    halves = [one_process(4, dist[i]["masks"], skip=i) for i in (0, 1)]  # batch 4: global batches 0, 1 = the shares
    for k in ("loss", "loss_c", "loss_rec"):
        want = 0.5 * (halves[0]["metrics"][k] + halves[1]["metrics"][k])
        assert abs(dist[0]["metrics"][k] - want) < 1e-5, (k, dist[0]["metrics"][k], want)
    assert_grads_close(dist[0]["grads"], {n: 0.5 * (g + halves[1]["grads"][n]) for n, g in halves[0]["grads"].items()})
    whole = one_process(8, whole_batch(dist))["metrics"]["loss_c"]
    assert abs(dist[0]["metrics"]["loss_c"] - whole) > 1e-3, "per-device negatives must differ from the global batch"


@pytest.mark.parametrize("group", [2, 8])
def test_contrast_groups_give_the_one_process_objective_on_two_processes(two_processes, one_process, group):
    """train.contrast_group: the same objective (mean over the groups of the global batch) and gradients on two
    processes as on one, whether the groups lie inside a process (2) or span both (8: gathered)."""
    dist = ranks(two_processes, f"group{group}")
    ref = one_process(8, whole_batch(dist), group=group)
    for k in ("loss", "loss_rec", "loss_c", "acc_c"):
        assert abs(dist[0]["metrics"][k] - ref["metrics"][k]) < 1e-5, (k, dist[0]["metrics"][k], ref["metrics"][k])
    assert_grads_close(dist[0]["grads"], ref["grads"])
    if group == 2:
        ungrouped = one_process(8, whole_batch(dist))["metrics"]["loss_c"]
        assert abs(ref["metrics"]["loss_c"] - ungrouped) > 1e-3


def test_training_loop_on_two_processes_logs_the_one_process_losses(two_processes, tmp_path):
    drawn = [torch.load(two_processes / f"train-masks-{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [len(masks) for masks in drawn] == [6, 6]  # audio and video masks of 3 steps on each process
    assert_each_process_drew_its_own_masks([masks[:2] for masks in drawn], tmp_path)
    cfg = micro_config(tmp_path / "single", "data.batch_size=8", "train.max_steps=3")
    train(cfg, task=MaskingTask(replaying_masking([torch.cat(pair) for pair in zip(*drawn, strict=True)])))
    single = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    double = read_jsonl(two_processes / "run" / "metrics.jsonl")
    assert [r["step"] for r in double] == [1, 2, 3]
    for a, b in zip(single, double, strict=True):
        for k in ("loss", "loss_rec", "loss_c"):
            assert abs(a[k] - b[k]) < 1e-4, (a["step"], k, a[k], b[k])
    ckpt = two_processes / "run" / "checkpoints" / "ckpt-00000003"
    assert (ckpt / "rng-0.pt").is_file() and (ckpt / "rng-1.pt").is_file()
