"""Pieces of the training machinery: weight-decay groups, schedules, sampler, synthetic data, RNG states, init,
figures that leave the RNG alone, freezing what a task never uses."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_checkpoint import fake_mae
from torch import nn
from train_helpers import MaskingTask, micro_config, read_jsonl, recording_masking

from cavmae.config import ConfigError, OptimConfig, load_config
from cavmae.data.random_batches import synthetic_dataset
from cavmae.data.sampler import ShardedBatchSampler
from cavmae.models.weights import CheckpointError, save_official, save_pretrained
from cavmae.train import freeze_unused, initialise, make_batches, seed_everything, train
from cavmae.train.optim import build_optimizer, lr_multiplier, param_groups
from cavmae.train.state import capture_rng, restore_rng, rng_devices
from cavmae.train.tasks import PretrainTask, get_task


def test_weight_decay_skips_norms_biases_embeddings_tokens_and_marked_parameters(tmp_path):
    cfg = micro_config(tmp_path)
    model = PretrainTask().build_model(cfg)
    model.extra = nn.Parameter(torch.ones(4, 4))  # a matrix: decays unless marked
    model.marked = nn.Parameter(torch.ones(4, 4))
    model.marked._no_weight_decay = True  # e.g. a Mamba block's A_log
    groups = param_groups(model, weight_decay=0.05, lr=1e-3)
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    decay = {n for g in groups if g["weight_decay"] == 0.05 for n in g["names"]}
    assert {"marked", "modality_a", "decoder_modality_v", "mask_token", "norm.weight", "blocks_u.0.attn.qkv.bias"} <= (
        no_decay
    )
    assert {"extra", "blocks_a.0.attn.qkv.weight", "patch_embed_a.proj.weight", "decoder_pred_v.weight"} <= decay
    assert "pos_embed_a" not in no_decay | decay  # frozen sin-cos: not optimised at all
    opt = build_optimizer(model, OptimConfig(name="adam", lr=1e-3, betas=(0.95, 0.999), weight_decay=0.05))
    assert isinstance(opt, torch.optim.Adam) and all(g["betas"] == (0.95, 0.999) for g in opt.param_groups)


def test_lr_scale_makes_its_own_groups(tmp_path):
    model = PretrainTask().build_model(micro_config(tmp_path))
    groups = param_groups(model, 0.0, 1e-3, lambda n: 10.0 if n.startswith("decoder_pred") else 1.0)
    head = [g for g in groups if g["lr_scale"] == 10.0]
    assert head and all(n.startswith("decoder_pred") for g in head for n in g["names"])
    assert all(g["lr"] == pytest.approx(1e-2) for g in head)


def test_cavmae_step_schedule_halves_every_5_epochs_from_epoch_10():
    f = lr_multiplier(OptimConfig(schedule="step"), steps_per_epoch=10, total_steps=250)
    assert [f(s) for s in (0, 99)] == [1.0, 1.0]  # epochs 0..9
    assert [f(s) for s in (100, 149, 150, 200, 249)] == [0.5, 0.5, 0.25, 0.125, 0.125]


def test_warmup_then_cosine():
    f = lr_multiplier(OptimConfig(schedule="cosine", warmup_steps=10, lr=1e-3, min_lr=1e-4), 5, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5) and f(110) == pytest.approx(0.1)


def test_sampler_ranks_share_the_one_process_batches_and_resume_by_skipping():
    one = list(ShardedBatchSampler(37, 8, seed=3, epoch=1))
    ranks = [list(ShardedBatchSampler(37, 4, r, 2, seed=3, epoch=1)) for r in (0, 1)]
    assert len(one) == 4 and [a + b for a, b in zip(*ranks)] == one  # the last 5 clips are dropped
    assert list(ShardedBatchSampler(37, 4, 1, 2, seed=3, epoch=1, start=2)) == ranks[1][2:]
    assert list(ShardedBatchSampler(37, 8, seed=3, epoch=2)) != one
    evals = [list(ShardedBatchSampler(37, 8, r, 2, shuffle=False, drop_last=False)) for r in (0, 1)]
    assert sorted(i for batches in evals for b in batches for i in b) == list(range(37))


def test_synthetic_data_is_deterministic_and_ties_audio_to_video(tmp_path):
    cfg = micro_config(tmp_path, "model.audio_length=128", "model.num_mel_bins=64", "model.image_size=64")
    train, val = synthetic_dataset(cfg, "train"), synthetic_dataset(cfg, "val")
    assert train[0]["audio"].shape == (128, 64) and train[0]["frames"].shape == (3, 64, 64)
    assert train[0]["labels"].shape == (cfg.model.num_classes,) and train[0]["labels"].sum() == 1
    assert not torch.equal(train.audio[:16], val.audio)
    from cavmae.data.random_batches import SyntheticAV

    again = SyntheticAV(64, 128, 64, 64, cfg.model.num_classes, cfg.data.synthetic_classes, 0, "train", 0.3)
    assert torch.equal(again.audio, train.audio) and torch.equal(again.frames, train.frames)
    # the loudest mel bin (band centre) follows the blob's x position, which follows s1
    band = train.audio.mean(dim=1).argmax(dim=1).float()  # [N]
    blob_x = train.frames.abs().mean(dim=(1, 2)).argmax(dim=1).float()  # [N]
    assert np.corrcoef(band.numpy(), blob_x.numpy())[0, 1] > 0.8
    batch = next(iter(make_batches(cfg, "train")))
    assert batch["audio"].shape == (8, 128, 64) and len(batch["keys"]) == 8


def test_rng_states_round_trip_through_weights_only_files(tmp_path):
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_training_settings_are_validated():
    with pytest.raises(ConfigError, match="train.grad_accum"):
        load_config(None, ["train.grad_accum=0"])
    with pytest.raises(ConfigError, match="train.ckpt_every"):
        load_config(None, ["train.ckpt_every=-1"])
    with pytest.raises(ConfigError, match="data.synthetic_classes"):
        load_config(None, ["data.synthetic=true", "data.synthetic_classes=600"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=0"])


def test_init_from_a_cavmae_checkpoint_by_config(tmp_path):
    task = PretrainTask()
    torch.manual_seed(1)
    source = task.build_model(micro_config(tmp_path))
    save_pretrained(source, tmp_path / "source")
    save_official(source, tmp_path / "official.pth")
    for init in (tmp_path / "source", tmp_path / "official.pth"):
        torch.manual_seed(2)
        model = task.build_model(micro_config(tmp_path, f"train.init={init}", "train.init_format=auto"))
        initialise(model, micro_config(tmp_path, f"train.init={init}"))
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    # an ImageNet MAE checkpoint is recognised by its keys (init_format=auto) and mapped as design section 1 says
    mae_cfg = micro_config(tmp_path).model
    mae = fake_mae(mae_cfg, depth=mae_cfg.modality_depth + mae_cfg.shared_depth)
    torch.save(mae, tmp_path / "mae.pth")
    model = task.build_model(micro_config(tmp_path))
    initialise(model, micro_config(tmp_path, f"train.init={tmp_path / 'mae.pth'}"))
    w = mae["model"]["patch_embed.proj.weight"]
    assert torch.equal(model.patch_embed_a.proj.weight, w.sum(1, keepdim=True))
    with pytest.raises(CheckpointError, match="train.init.*does not exist"):  # a missing input: exit 1
        initialise(model, micro_config(tmp_path, f"train.init={tmp_path / 'missing.pth'}"))


# ---------------------------------------------------------------------------------------------------------------
# reconstruction figures leave the training RNG streams alone


def test_rng_devices_are_the_cuda_device_a_model_runs_on():
    assert rng_devices(torch.device("cuda", 3)) == [3]
    assert rng_devices(torch.device("cpu")) == []


def test_reconstruction_figure_forks_the_rng_of_the_models_device(tmp_path, monkeypatch):
    """On a GPU the masks are drawn from the device's generator: the figure must fork that one, as validation does
    (checked here on the CPU through the helper that names the devices to fork)."""
    import cavmae.train.figures as figures

    asked, forked = [], []
    real_fork = torch.random.fork_rng

    def fake_rng_devices(device):
        asked.append(device)
        return ["the model's device"]

    def recording_fork(devices=None, **kwargs):
        forked.append(devices)
        return real_fork(devices=[], **kwargs)

    monkeypatch.setattr(figures, "rng_devices", fake_rng_devices, raising=False)
    monkeypatch.setattr(torch.random, "fork_rng", recording_fork)
    cfg = micro_config(tmp_path)
    model = PretrainTask().build_model(cfg)
    batch = PretrainTask().example_batch(cfg, 1, torch.device("cpu"))
    figures.reconstruction_figure(model, batch["audio"], batch["frames"], tmp_path / "fig.png")
    assert asked == [torch.device("cpu")] and forked == [["the model's device"]]


def test_figures_do_not_change_the_training_masks_or_losses(tmp_path):
    """On a CUDA machine the run is on the GPU, where a figure that forked the wrong generator changed the masks."""
    masks, losses = {}, {}
    for every in (0, 1):
        out = tmp_path / f"image_every_{every}"
        masks[every] = []
        train(
            micro_config(out, "train.max_steps=3", f"train.image_every={every}"),
            MaskingTask(recording_masking(masks[every])),
        )
        losses[every] = [r["loss"] for r in read_jsonl(out / "metrics.jsonl")]
    assert len(list((tmp_path / "image_every_1" / "images").glob("*.png"))) == 3
    assert len(masks[0]) == len(masks[1]) == 6 and all(torch.equal(a, b) for a, b in zip(masks[0], masks[1]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# freezing what a task never uses

SYNC = ("model.global_tokens=true", "model.registers=2", "model.contrastive_heads=true")  # CAV-MAE Sync's parts


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("model.contrast_weight=0",),
        ("model.rec_weight=0",),
        ("model.backbone=mamba",),
        ("finetune.inputs=audiovisual",),
        ("finetune.inputs=audio",),
        ("finetune.inputs=video",),
        *[
            (*SYNC, *extra)
            for extra in [(), ("model.rec_weight=0",), ("finetune.inputs=audiovisual",), ("finetune.inputs=audio",)]
        ],
    ],
)
def test_freezing_leaves_every_trainable_parameter_a_gradient(tmp_path, extra):
    """What DDP without an unused-parameter search needs: after freezing, a step reaches every trainable
    parameter; and only parameters that a step does not reach are frozen."""
    cfg = micro_config(tmp_path, *extra)
    task = get_task(cfg.task)
    model = task.build_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = set(freeze_unused(model, task, cfg))
    task.step(model, task.example_batch(cfg, 2, torch.device("cpu")), cfg)["loss"].backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert frozen and frozen <= trainable
    assert reached == trainable - frozen


class ContrastEveryOtherStep(PretrainTask):
    """Pre-training whose contrastive term is left out of every other step (first included), as a schedule or a
    data-dependent weight may do: on such a step the audio / video stream norms get no gradient by chance."""

    def __init__(self):
        self.calls = 0

    def step(self, model, batch, cfg):
        out = super().step(model, batch, cfg)
        self.calls += 1
        if self.calls % 2:
            out["loss"] = cfg.model.rec_weight * out["loss_rec"]
        return out


def test_a_parameter_without_gradient_on_one_batch_by_chance_is_not_frozen(tmp_path):
    cfg = micro_config(tmp_path / "run", "train.max_steps=2")
    train(cfg, task=ContrastEveryOtherStep())
    seed_everything(cfg.train.seed)
    initial = PretrainTask().build_model(cfg).state_dict()  # the run's initial weights (same seed)
    final = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert not torch.equal(final["norm_a.weight"], initial["norm_a.weight"]), "norm_a was frozen"
    assert not torch.equal(final["blocks_u.0.norm1_v.weight"], initial["blocks_u.0.norm1_v.weight"])
    assert torch.equal(final["blocks_a.0.norm1_a.weight"], initial["blocks_a.0.norm1_a.weight"])  # really unused


def test_throughput_is_samples_and_data_wait_per_second_since_the_last_read(monkeypatch):
    import cavmae.train.logs as logs

    now = [100.0]
    monkeypatch.setattr(logs.time, "perf_counter", lambda: now[0])
    meter = logs.Throughput()
    meter.add(16, 0.5)
    meter.add(8, 0.25)
    now[0] += 4.0
    assert meter.read() == (6.0, 0.1875)  # 24 clips and 0.75 s of waiting in 4 s
    now[0] += 2.0
    meter.add(4, 0.0)
    assert meter.read() == (2.0, 0.0)  # counted from the last read
