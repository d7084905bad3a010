"""cavmae embed: one embedding shard per input shard, equal to retrieve's embeddings, resumable."""

from __future__ import annotations

import json

import pytest
import torch

import cavmae
from cavmae.cli import main
from cavmae.config import Config
from cavmae.eval.embed import load_embeddings
from cavmae.eval.retrieval import embed_shards


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = cavmae.ModelConfig(
        embed_dim=64,
        num_heads=2,
        modality_depth=1,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        audio_length=256,
        num_mel_bins=64,
        image_size=64,
    )
    out = tmp_path_factory.mktemp("embed_model") / "model"
    cavmae.save_pretrained(cavmae.create_model(cfg), out)
    return out


def test_embed_writes_shards_equal_to_retrieve_and_resumes(small_model_dir, tiny_shards, tmp_path):
    out = tmp_path / "emb"
    args = ["embed", "--model", str(small_model_dir), "--shards", tiny_shards.pattern, "--out", str(out)]
    assert main([*args, "--num-workers", "0", "--cpu"]) == 0
    manifest = json.loads((out / "embeddings.json").read_text())
    assert manifest["dtype"] == "fp16" and manifest["dim"] == 64 and manifest["num_clips"] == 8
    assert [s["source"] for s in manifest["shards"]] == tiny_shards.urls
    assert [s["count"] for s in manifest["shards"]] == [2, 2, 2, 2]

    got = load_embeddings(out)
    model = cavmae.load_model(small_model_dir)
    cfg = Config(model=model.cfg)
    cfg.data.num_workers = 0
    ref = embed_shards(model, tiny_shards.urls, cfg, progress=False)
    assert got.keys == ref.keys
    assert torch.allclose(got.audio, ref.audio, atol=2e-3) and torch.allclose(got.video, ref.video, atol=2e-3)

    # resume: a missing shard is embedded again, finished ones are kept as they are
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("emb-*.safetensors")}
    (out / "emb-000002.safetensors").unlink()
    (out / "embeddings.json").unlink()
    assert main([*args, "--num-workers", "0", "--cpu", "--dtype", "fp16"]) == 0
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("emb-*.safetensors")}
    assert set(again) == set(done)
    assert all(again[n] == done[n] for n in done if n != "emb-000002.safetensors")
    assert torch.equal(load_embeddings(out).audio, got.audio)
    # another dtype over the same folder is refused without --overwrite
    assert main([*args, "--num-workers", "0", "--cpu", "--dtype", "fp32"]) == 1


# ---------------------------------------------------------------------------------------------------------------
# --inputs audio: audio features of audio datasets (issue 25 item 1)


@pytest.fixture(scope="module")
def esc50_shards(tmp_path_factory) -> list[str]:
    """6 generated ESC-50-layout clips (audio only, 1 s, 16 kHz, 2 folds) prepared into 2 audio-only shards."""
    root = tmp_path_factory.mktemp("esc50_embed")
    assert main(["synth", "--layout", "esc50", "--out", str(root / "e"), "--clips", "6", "--duration", "1",
                 "--sample-rate", "16000", "--classes", "2", "--folds", "2"]) == 0  # fmt: skip
    assert main(["prepare", "--videos", str(root / "e" / "audio"), "--csv", str(root / "e" / "meta" / "esc50.csv"),
                 "--out", str(root / "s"), "--workers", "0"]) == 0  # fmt: skip
    manifest = json.loads((root / "s" / "data-manifest.json").read_text())
    assert [s["modalities"] for s in manifest["shards"]] == [["audio"], ["audio"]]
    return [str(root / "s" / s["file"]) for s in manifest["shards"]]


def test_embed_audio_inputs_on_audio_only_shards(small_model_dir, esc50_shards, tmp_path, caplog):
    from safetensors import safe_open

    from cavmae.data.loader import loader_for
    from cavmae.eval.embed import AudioOnlyEmbeddingsError

    out = tmp_path / "emb"
    args = ["embed", "--model", str(small_model_dir), "--shards", *esc50_shards, "--out", str(out)]
    args += ["--num-workers", "0", "--cpu", "--dtype", "fp32"]
    assert main([*args, "--inputs", "audio"]) == 0
    manifest = json.loads((out / "embeddings.json").read_text())
    assert manifest["modalities"] == ["audio"] and manifest["num_clips"] == 6 and manifest["scoring"] == "clip"
    for entry in manifest["shards"]:
        with safe_open(str(out / entry["file"]), framework="pt") as f:
            assert set(f.keys()) == {"audio"} and json.loads(f.metadata()["modalities"]) == ["audio"]

    got = load_embeddings(out)
    assert got.video is None and got.modalities == ["audio"] and got.audio.shape == (6, 64)
    model = cavmae.load_model(small_model_dir)
    cfg = Config(model=model.cfg)
    cfg.data.num_workers = 0
    batches = list(loader_for(cfg, esc50_shards, train=False, frame_mode="middle", frames=False))
    assert [k for b in batches for k in b["keys"]] == got.keys
    ref = torch.nn.functional.normalize(model.eval().embed_audio(torch.cat([b["audio"] for b in batches])), dim=-1)
    assert torch.allclose(got.audio, ref, atol=1e-5)

    # resume: finished shards are kept; an audio-visual run over the audio folder is refused without --overwrite
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("emb-*.safetensors")}
    (out / "embeddings.json").unlink()
    assert main([*args, "--inputs", "audio"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("emb-*.safetensors")} == done
    assert main([*args, "--inputs", "audiovisual"]) == 1

    # cross-modal retrieval needs video: index and retrieve name the file
    with pytest.raises(AudioOnlyEmbeddingsError, match="cross-modal retrieval needs video embeddings"):
        load_embeddings(out, need_video=True)
    caplog.clear()
    assert main(["index", "--embeddings", str(out), "--out", str(tmp_path / "index")]) == 1
    assert main(["retrieve", "--embeddings", str(out), "--query-key", got.keys[0]]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all(str(out) in e and "needs video embeddings" in e for e in errors)


def test_embed_inputs_on_mixed_and_audio_only_shards(small_model_dir, esc50_shards, tiny_shards, tmp_path):
    """--inputs audio reads audio-visual shards too (their audio as in an audio-visual run); per-frame scoring and
    --inputs audiovisual on audio-only shards are named errors."""
    from cavmae.data.loader import AudioOnlyShardsError
    from cavmae.eval.embed import embed_to_shards

    model = cavmae.load_model(small_model_dir)
    cfg = Config(model=model.cfg)
    cfg.data.num_workers = 0
    mixed = tiny_shards.urls + esc50_shards
    manifest = embed_to_shards(model, mixed, tmp_path / "a", cfg, dtype="fp32", inputs="audio", progress=False)
    assert manifest["num_clips"] == 8 + 6 and manifest["modalities"] == ["audio"]
    got = load_embeddings(tmp_path / "a")
    embed_to_shards(model, tiny_shards.urls, tmp_path / "av", cfg, dtype="fp32", progress=False)
    both = load_embeddings(tmp_path / "av")
    av_manifest = json.loads((tmp_path / "av" / "embeddings.json").read_text())
    assert both.video is not None and av_manifest["modalities"] == ["audio", "video"]
    assert got.keys[:8] == both.keys and torch.allclose(got.audio[:8], both.audio, atol=1e-5)

    with pytest.raises(AudioOnlyShardsError, match="shard.s. hold audio only") as err:  # today's error, per shard
        embed_to_shards(model, mixed, tmp_path / "b", cfg, progress=False)
    assert esc50_shards[0] in str(err.value)
    cfg.eval.scoring = "diagonal_mean"
    with pytest.raises(ValueError, match="--inputs audio embeds one audio vector per clip"):
        embed_to_shards(model, esc50_shards, tmp_path / "c", cfg, inputs="audio", progress=False)
