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
