"""CAV-MAE Sync end to end through the CLI (issue 24): synthetic media -> 16-frame shards -> a tiny Sync
pre-training run (with its probe) -> retrieve / evaluate / embed + index scored per frame (diagonal_mean, each frame
with its own audio window) -> the attention probe and full fine-tuning through the training loop. Plus the unit
checks of the pieces that had to meet: the probe head's features, the linear head of a Sync model, the
pre-training probe on synthetic data, and the config combinations that cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cavmae.cli import main
from cavmae.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WINDOW = 96  # model.audio_length = data.audio_window: 6 x 2 audio patches of 16
# a tiny Sync model: global tokens and 2 registers per modality (tiny_sync.yaml), at test sizes
MODEL = ["model.embed_dim=32", "model.num_heads=2", "model.modality_depth=1", f"model.audio_length={WINDOW}",
         "model.image_size=32", "model.num_classes=3", "model.global_tokens=true", "model.registers=2"]  # fmt: skip
DATA = [f"data.audio_window={WINDOW}", "data.num_frames=16", "data.synthetic=false", "data.batch_size=4",
        "data.num_workers=0", "data.shuffle_buffer=4", "eval.batch_size=12"]  # fmt: skip
RUN = ["train.epochs=1", "train.image_every=0", "train.val_at_start=false", "train.progress_bar=false"]


@pytest.fixture(scope="module")
def sync_run(tmp_path_factory):
    """12 synthetic 3 s clips (3 classes) as 16-frame shards, and a 3-step tiny Sync pre-training run on them with
    the pre-training probe on (per-frame scoring of the shards)."""
    root = tmp_path_factory.mktemp("sync_e2e")
    assert main(["synth", "--out", str(root / "synth"), "--clips", "12", "--classes", "3", "--duration", "3",
                 "--size", "32"]) == 0  # fmt: skip
    synth = root / "synth"
    assert main(["prepare", "--videos", str(synth / "videos"), "--csv", str(synth / "audioset.csv"), "--label-csv",
                 str(synth / "class_labels_indices.csv"), "--out", str(root / "shards"), "--name", "s",
                 "--workers", "0", "--samples-per-shard", "4", "--frames", "16"]) == 0  # fmt: skip
    shards = str(root / "shards" / "s-{000000..000002}.tar")
    pre = root / "pre"
    args = ["pretrain", "--config", str(CONFIGS / "tiny_sync.yaml"), *MODEL, *DATA, *RUN,
            "model.decoder_embed_dim=16", "model.decoder_depth=1", "model.decoder_num_heads=2",
            f"data.train_shards=[{shards}]", f"data.probe_shards=[{shards}]", "train.probe_every=1",
            "eval.probe_clips=12", "eval.knn_k=3", f"train.out_dir={pre}"]  # fmt: skip
    assert main(args) == 0
    return root, shards, pre


def _finetune(root: Path, shards: str, pre: Path, name: str, *extra: str) -> Path:
    out = root / name
    args = ["finetune", "--config", str(CONFIGS / "tiny_finetune.yaml"), *MODEL, *DATA, *RUN,
            f"data.train_shards=[{shards}]", f"data.val_shards=[{shards}]", "train.max_steps=2",
            "finetune.average_epochs=null", "finetune.loss=bce", f"train.init={pre / 'model'}",
            f"train.out_dir={out}", *extra]  # fmt: skip
    assert main(args) == 0
    return out


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model" / "model.safetensors"))


def test_pretraining_runs_its_probe_per_frame(sync_run):
    _, _, pre = sync_run
    probes = [json.loads(line) for line in (pre / "val_metrics.jsonl").read_text().splitlines()]
    probes = [p for p in probes if "probe/v2a_R@1" in p]
    assert probes and probes[-1]["probe/clips"] == 12.0


def test_retrieve_evaluate_embed_and_index_score_a_sync_model_per_frame(sync_run, tmp_path, capsys, caplog):
    # before: retrieve / embed refused 16-frame shards (data.num_frames stayed at 10 for a bare model)
    from cavmae.eval.embed import load_embeddings
    from cavmae.eval.retrieval import EmbeddingSet
    from cavmae.eval.scoring import retrieval_metrics_scored

    _, shards, pre = sync_run
    model = str(pre / "model")
    common = ["--model", model, "--shards", shards, "--num-workers", "0", "--device", "cpu"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "ev.json")]) == 0
    assert main(["retrieve", *common, "--out", str(tmp_path / "ret.safetensors")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    saved = EmbeddingSet.load(tmp_path / "ret.safetensors")
    # scored the Sync way by default: 16 per-frame embeddings per clip, diagonal_mean
    assert ev["scoring"] == saved.scoring == "diagonal_mean"
    assert saved.audio.shape == saved.video.shape == (12, 16, 32)
    # each frame has its own audio window: the first and last windows of a clip embed differently
    assert not torch.allclose(saved.audio[:, 0], saved.audio[:, 15], atol=1e-4)
    want = retrieval_metrics_scored(saved.audio, saved.video, "diagonal_mean")
    for direction in ("video_to_audio", "audio_to_video"):
        assert ev[direction] == pytest.approx(want[direction])
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert main(["embed", "--model", model, "--shards", shards, "--out", str(emb), "--num-workers", "0", "--cpu",
                 "--dtype", "fp32"]) == 0  # fmt: skip
    stored = load_embeddings(emb)
    assert stored.scoring == "diagonal_mean" and stored.keys == saved.keys
    assert torch.allclose(stored.audio, saved.audio, atol=1e-5) and torch.allclose(stored.video, saved.video, atol=1e-5)
    assert main(["index", "--embeddings", str(emb), "--out", str(idx)]) == 0
    assert json.loads((idx / "index.json").read_text())["scoring"] == "diagonal_mean"
    capsys.readouterr()
    assert main(["retrieve", "--index", str(idx)]) == 0  # an exact index: its R@k printed as JSON
    via_index = json.loads(capsys.readouterr().out)
    for direction in ("video_to_audio", "audio_to_video"):
        assert via_index[direction]["R@1"] == pytest.approx(want[direction]["R@1"])
    # a media file gives one embedding: against an index of per-frame clips a named error (before: AssertionError)
    video = sorted((sync_run[0] / "synth" / "videos").iterdir())[0]
    assert main(["retrieve", "--index", str(idx), "--model", model, "--query", str(video), "--device", "cpu"]) == 1
    assert "the gallery is scored per frame (diagonal_mean)" in caplog.text


def test_attention_probe_trains_through_the_loop_with_every_frame_and_its_window(sync_run, capsys):
    # before: the training batches held one frame and the first step failed
    root, shards, pre = sync_run
    out = _finetune(root, shards, pre, "probe", "finetune.head=attention", "finetune.freeze_base=true")
    final = json.loads((out / "final_metrics.json").read_text())
    assert "final/last_epoch_mAP" in final["summary"]
    before, after = _weights(pre), _weights(out)
    for name in ("blocks_a.0.attn.qkv.weight", "cls_token_a", "register_tokens", "patch_embed_v.proj.weight"):
        assert torch.equal(before[name], after[name]), name  # the frozen encoder
    assert "probe_cls" in after and "probe_blocks.0.attn.qkv.weight" in after
    # the saved probe evaluates on whole clips whatever --frames says
    assert main(["evaluate", "--model", str(out / "model"), "--shards", shards, "--num-workers", "0",
                 "--device", "cpu", "--frames", "middle"]) == 0  # fmt: skip
    _predict(root, out, [], capsys)  # a media file: its 16 frames, each with its window (before: refused, exit 1)


def _predict(root: Path, run: Path, extra: list[str], capsys) -> None:
    video = sorted((root / "synth" / "videos").iterdir())[0]
    capsys.readouterr()
    assert main(["predict", "--model", str(run / "model"), str(video), "--json", "--device", "cpu", *extra]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["mode"] == "audiovisual" and all(0.0 <= t["score"] <= 1.0 for t in answer["top"])


def test_full_finetuning_of_a_sync_model_scores_the_16_frame_ensemble(sync_run, capsys):
    # the linear head, one frame and its window per clip in training; the final evaluation classifies each of the
    # 16 frames with its own window (before: the whole [B, 16, L, F] audio went to every frame and failed)
    root, shards, pre = sync_run
    out = _finetune(root, shards, pre, "full")
    final = json.loads((out / "final_metrics.json").read_text())
    assert "final/last_epoch_16_frame_mAP" in final["summary"]
    before, after = _weights(pre), _weights(out)
    assert not torch.equal(before["blocks_a.0.attn.qkv.weight"], after["blocks_a.0.attn.qkv.weight"])
    _predict(root, out, ["--ten-frames"], capsys)  # every frame with its window (before: refused, exit 1)


# ---------------------------------------------------------------------------------------------------------------
# the pieces


def _sync_cfg(*extra: str):
    return load_config(CONFIGS / "tiny_finetune.yaml", [*MODEL, "data.synthetic_classes=3", *extra])


def test_attention_features_are_the_global_tokens_of_the_modality_stacks_without_registers():
    from cavmae.models.classifier import CAVMAEClassifier

    torch.manual_seed(0)
    model = CAVMAEClassifier(_sync_cfg().model, head="attention").eval()
    audio, frames = torch.randn(2, 3, WINDOW, 128), torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        got = model.frame_features(audio, frames)  # [2, 3, 64]
        # by hand, as the public probe: [global, tokens, registers] through blocks_a; token 0 of the output
        x = model.tokens_a(audio[:, 1])
        x = torch.cat([model.cls_token_a.expand(2, -1, -1), x, model.register_tokens[:2].expand(2, -1, -1)], 1)
        for blk in model.blocks_a:
            x = blk(x)
    assert torch.allclose(got[:, 1, :32], x[:, 0], atol=1e-6)


def test_attention_head_marks_what_it_never_runs_unused():
    # the contrastive heads run after the shared block, which the probe never reaches (before: left trainable
    # without a gradient, which distributed training refuses)
    from cavmae.train.finetune import FinetuneTask

    cfg = _sync_cfg(f"data.audio_window={WINDOW}", "finetune.head=attention", "model.contrastive_heads=true")
    task = FinetuneTask()
    model = task.build_model(cfg)
    audio, frames = torch.randn(2, 2, WINDOW, 128), torch.randn(2, 2, 3, 32, 32)
    model(audio, frames).sum().backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    unused = set(task.unused_parameters(model, cfg))
    assert {n for n, _ in model.named_parameters()} - reached == unused


@pytest.mark.parametrize("mode", ["audio", "video"])
def test_linear_head_of_a_sync_model_classifies_the_global_token(mode):
    from cavmae.models.classifier import CAVMAEClassifier

    torch.manual_seed(0)
    model = CAVMAEClassifier(_sync_cfg().model).eval()
    audio, frames = torch.randn(2, WINDOW, 128), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model.features(audio, frames, mode)
        stream = model.audio_stream(model.encode_audio(audio)) if mode == "audio" else None
        if stream is None:
            stream = model.video_stream(model.encode_video(frames))
        # the audiovisual and missing-modality modes pool the patch tokens (no global token in the joint pass)
        both = model.features(audio, frames, "missing_video")
    assert torch.allclose(got, stream[:, 0], atol=1e-6)
    assert both.shape == (2, 32) and torch.isfinite(both).all()


def test_pretraining_probe_on_synthetic_data_scores_per_frame():
    # before: synthetic probe batches held one frame and a per-frame scoring failed on them
    from cavmae.eval.probe import probe_metrics
    from cavmae.models.cavmae import CAVMAE
    from cavmae.train.loop import probe_batches

    overrides = [*MODEL, f"data.audio_window={WINDOW}", "data.synthetic_size=8", "data.synthetic_classes=3",
                 "data.synthetic_val_size=6", "train.probe_every=1", "eval.probe_clips=6", "eval.knn_k=1",
                 "model.decoder_embed_dim=16", "model.decoder_depth=1", "model.decoder_num_heads=2"]  # fmt: skip
    cfg = load_config(CONFIGS / "tiny_sync.yaml", overrides)
    batches = probe_batches(cfg)
    assert batches[0]["frames"].shape[1:3] == (10, 3) and batches[0]["audio"].shape[1:] == (10, WINDOW, 128)
    got = probe_metrics(CAVMAE(cfg.model), batches, k=1, scoring="diagonal_mean", windows=True)
    assert got["clips"] == 6.0 and 0.0 <= got["v2a_R@1"] <= 100.0


def test_attention_head_training_batches_hold_every_frame_on_synthetic_data():
    from cavmae.train.batches import make_batches

    cfg = _sync_cfg(f"data.audio_window={WINDOW}", "finetune.head=attention", "data.synthetic_size=4",
                    "data.batch_size=2")  # fmt: skip
    batch = next(iter(make_batches(cfg, "train")))
    assert batch["frames"].shape == (2, 10, 3, 32, 32) and batch["audio"].shape == (2, 10, WINDOW, 128)


def test_combinations_that_cannot_work_are_named_errors():
    with pytest.raises(ConfigError, match=r"finetune.head='attention'.*data.audio_window"):
        _sync_cfg("finetune.head=attention")
    with pytest.raises(ConfigError, match=r"data.frame_mode='middle' would do nothing: finetune.head='attention'"):
        _sync_cfg(f"data.audio_window={WINDOW}", "finetune.head=attention", "data.frame_mode=middle")
    # a CAV-MAE model takes the attention head with a window as long as its input (the whole clip)
    cavmae = load_config(CONFIGS / "tiny_finetune.yaml", ["data.audio_window=512", "finetune.head=attention"])
    assert cavmae.finetune.head == "attention" and not cavmae.model.global_tokens
