"""Clip scores from per-frame embeddings (cavmae/eval/scoring.py): the four Sync strategies against hand-computed
values, chunking, ranks, and the auto choice."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cavmae.eval.scoring import clip_scores, resolve_scoring, retrieval_metrics_scored, true_match_ranks_scored

S = math.sqrt(0.5)


def _tiny():
    """Two clips, two frames, D = 2: every cosine is 1, 0, -1 or +-sqrt(1/2), so scores are easy by hand."""
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[S, S], [-1.0, 0.0]]])  # [Q=2, N=2, D=2]
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [S, -S]]])  # [G=2, N=2, D=2]
    return a, v


def test_strategies_match_hand_computed_scores():
    a, v = _tiny()
    # cos(a[q, k], v[g, l]) by hand: q0 = (e1, e2), q1 = (s(1,1), -e1); g0 = (e1, e1), g1 = (e2, s(1,-1))
    # q0 g0: [[1, 1], [0, 0]]   q0 g1: [[0, S], [1, -S]]
    # q1 g0: [[S, S], [-1, -1]] q1 g1: [[S, 0], [0, -S]]
    expected = {
        "diagonal_mean": [[(1 + 0) / 2, (0 - S) / 2], [(S - 1) / 2, (S - S) / 2]],
        "diagonal_max": [[1, 0], [S, S]],
        "mean": [[2 / 4, 1 / 4], [(2 * S - 2) / 4, 0]],
        "max": [[1, 1], [S, S]],
    }
    for strategy, want in expected.items():
        got = clip_scores(a, v, strategy)
        assert torch.allclose(got, torch.tensor(want), atol=1e-6), strategy


def test_chunked_max_strategies_equal_one_block():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(7, 4, 8, generator=g), dim=-1)
    v = F.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)
    pairs = torch.einsum("qkd,gld->qgkl", a, v)
    assert torch.allclose(clip_scores(a, v, "max", chunk=2), pairs.flatten(2).amax(-1), atol=1e-6)
    diag = pairs.diagonal(dim1=2, dim2=3)  # [Q, G, N]
    assert torch.allclose(clip_scores(a, v, "diagonal_max", chunk=3), diag.amax(-1), atol=1e-6)
    assert torch.allclose(clip_scores(a, v, "diagonal_mean", chunk=3), diag.mean(-1), atol=1e-6)
    assert torch.allclose(clip_scores(a, v, "mean"), pairs.flatten(2).mean(-1), atol=1e-6)


def test_clip_scoring_is_a_cosine_of_clip_vectors_and_shapes_are_checked():
    a = F.normalize(torch.randn(3, 6), dim=-1)
    assert torch.allclose(clip_scores(a, a, "clip"), a @ a.t())
    with pytest.raises(ValueError, match=r"\[n, N, D\]"):
        clip_scores(a, a, "diagonal_mean")
    with pytest.raises(ValueError, match="unknown scoring"):
        clip_scores(a[:, None], a[:, None], "median")


def test_ranks_follow_the_strategy():
    # clip 1's gallery item beats clip 0's on the diagonal mean but not on the all-pairs max
    a, v = _tiny()
    # diagonal_mean: row 0 = [0.5, -0.354] -> rank 1; row 1 = [-0.146, 0] -> rank 1
    assert true_match_ranks_scored(a, v, "diagonal_mean").tolist() == [1, 1]
    # max: row 0 = [1, 1] tie broken by index -> 1; row 1 = [S, S] tie, gallery 0 has the lower index -> 2
    assert true_match_ranks_scored(a, v, "max").tolist() == [1, 2]
    m = retrieval_metrics_scored(a, v, "max", chunk=1)
    assert m["audio_to_video"]["R@1"] == pytest.approx(50.0)


def test_auto_scoring_needs_global_tokens_and_per_frame_windows():
    sync = SimpleNamespace(global_tokens=True)
    cavmae = SimpleNamespace(global_tokens=False)
    windows, whole = SimpleNamespace(audio_window=416), SimpleNamespace(audio_window=0)
    assert resolve_scoring("auto", sync, windows) == "diagonal_mean"
    assert resolve_scoring("auto", sync, whole) == "clip"
    assert resolve_scoring("auto", cavmae, windows) == "clip"
    assert resolve_scoring("max", cavmae, whole) == "max"
    with pytest.raises(ValueError, match="eval.scoring"):
        resolve_scoring("median", sync, windows)


def _tiny_model():
    from cavmae.config import ModelConfig
    from cavmae.models.cavmae import CAVMAE

    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=32, num_heads=2, modality_depth=1, decoder_embed_dim=16, decoder_depth=1,
                      decoder_num_heads=2, audio_length=64, image_size=32)  # fmt: skip
    return CAVMAE(cfg).eval()


def _per_frame_batch(clips: int, frames: int, windows: bool) -> dict:
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(clips, frames, 64, 128, generator=g) if windows else torch.randn(clips, 64, 128, generator=g)
    return {
        "audio": audio,
        "frames": torch.randn(clips, frames, 3, 32, 32, generator=g),
        "keys": [f"c{i}" for i in range(clips)],
        "labels": torch.eye(clips),
    }


@pytest.mark.parametrize("windows", [True, False])
def test_per_frame_embeddings_are_each_frames_own_embedding(windows, tmp_path):
    from cavmae.eval.retrieval import EmbeddingSet, embed_batches

    model = _tiny_model()
    batch = _per_frame_batch(3, 4, windows)
    emb = embed_batches(model, [batch], progress=False, scoring="diagonal_mean", windows=windows)
    assert emb.audio.shape == (3, 4, 32) and emb.video.shape == (3, 4, 32) and emb.scoring == "diagonal_mean"
    audio_k = batch["audio"][:, 2] if windows else batch["audio"]
    a, v = model.embed(audio_k, batch["frames"][:, 2])
    assert torch.allclose(emb.audio[:, 2], F.normalize(a, dim=-1), atol=1e-5)
    assert torch.allclose(emb.video[:, 2], F.normalize(v, dim=-1), atol=1e-5)
    back = EmbeddingSet.load(emb.save(tmp_path / "e.safetensors"))
    assert back.scoring == "diagonal_mean" and torch.equal(back.audio, emb.audio)


def test_search_space_and_probe_rank_by_the_strategy():
    from cavmae.eval.probe import probe_metrics
    from cavmae.eval.retrieval import embed_batches
    from cavmae.eval.search import SearchSpace

    model = _tiny_model()
    batch = _per_frame_batch(5, 3, True)
    emb = embed_batches(model, [batch], progress=False, scoring="max", windows=True)
    space = SearchSpace(emb)
    want = retrieval_metrics_scored(emb.audio, emb.video, "max")
    assert space.metrics() == want
    scores, rows = space.top_k(emb.audio[:2], "video", 5)
    assert torch.allclose(scores, clip_scores(emb.audio[:2], emb.video, "max").sort(1, descending=True).values)
    got = probe_metrics(model, [batch], k=1, scoring="max", windows=True)
    assert got["a2v_R@1"] == pytest.approx(want["audio_to_video"]["R@1"])


def _per_frame_set(clips: int = 40, frames: int = 4, dim: int = 8, seed: int = 0):
    from cavmae.eval.retrieval import EmbeddingSet

    g = torch.Generator().manual_seed(seed)
    audio = F.normalize(torch.randn(clips, frames, dim, generator=g), dim=-1)
    video = F.normalize(audio + 0.8 * torch.randn(clips, frames, dim, generator=g), dim=-1)
    return EmbeddingSet([f"k{i}" for i in range(clips)], audio, video, "diagonal_mean")


def test_flat_index_of_per_frame_clips_scores_the_diagonal_mean_exactly(tmp_path):
    pytest.importorskip("faiss")
    from cavmae.eval.index import RetrievalIndex, build_index
    from cavmae.eval.search import SearchSpace

    emb = _per_frame_set()
    info = build_index(emb, tmp_path / "idx", "flat")
    assert info["scoring"] == "diagonal_mean" and info["dim"] == 4 * 8
    index = RetrievalIndex.load(tmp_path / "idx")
    scores, rows = SearchSpace(emb, index).top_k(emb.audio[:3], "video", 5)
    want = torch.sort(clip_scores(emb.audio[:3], emb.video, "diagonal_mean"), dim=1, descending=True, stable=True)
    assert torch.allclose(scores, want.values[:, :5], atol=1e-5) and torch.equal(rows, want.indices[:, :5])
    assert SearchSpace(None, index).metrics() == retrieval_metrics_scored(emb.audio, emb.video, "diagonal_mean")
    emb.scoring = "max"
    with pytest.raises(ValueError, match="'max', which an inner-product index cannot compute"):
        build_index(emb, tmp_path / "idx2", "flat")
    with pytest.raises(ValueError, match="scored by 'max', the index by 'diagonal_mean'"):
        SearchSpace(emb, index)


def test_embed_command_stores_every_frame_per_clip(tiny_shards, tmp_path, caplog):
    import cavmae
    from cavmae.cli import main
    from cavmae.eval.embed import load_embeddings

    model = _tiny_model()
    model_dir = tmp_path / "model"
    cavmae.save_pretrained(model, model_dir)
    out = tmp_path / "emb"
    args = ["embed", "--model", str(model_dir), "--shards", tiny_shards.pattern, "--out", str(out)]
    assert main([*args, "--num-workers", "0", "--cpu", "--dtype", "fp32", "--scoring", "diagonal_mean"]) == 0
    got = load_embeddings(out)
    assert got.scoring == "diagonal_mean" and got.audio.shape[1:] == (10, 32) and got.video.shape == got.audio.shape
    # the whole clip's audio serves every frame (data.audio_window = 0): one audio vector repeated
    assert torch.allclose(got.audio[:, 0], got.audio[:, 9])
    assert not torch.allclose(got.video[:, 0], got.video[:, 9])
    assert main([*args, "--num-workers", "0", "--cpu", "--dtype", "fp32", "--scoring", "clip"]) == 1
    assert "holds 'diagonal_mean' embeddings; pass --overwrite" in caplog.text


def test_pretraining_probe_set_holds_every_frame_for_a_per_frame_scoring(tiny_shards):
    from cavmae.config import load_config
    from cavmae.eval.probe import probe_metrics
    from cavmae.train.loop import probe_batches

    model = _tiny_model()
    m = model.cfg
    overrides = [f"data.probe_shards=[{','.join(tiny_shards.urls)}]", "train.probe_every=1", "eval.probe_clips=6",
                 "data.num_workers=0", "data.synthetic=false",
                 f"model.audio_length={m.audio_length}", f"model.image_size={m.image_size}"]  # fmt: skip
    clip_set = probe_batches(load_config(None, overrides))
    frame_set = probe_batches(load_config(None, [*overrides, "eval.scoring=diagonal_mean"]))
    assert clip_set[0]["frames"].dim() == 4 and frame_set[0]["frames"].shape[1:3] == (10, 3)
    got = probe_metrics(model, frame_set, k=1, scoring="diagonal_mean")
    assert got["clips"] == 6 and 0.0 <= got["a2v_R@1"] <= 100.0


def test_scoring_and_head_values_are_checked_by_name():
    from cavmae.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="eval.scoring"):
        load_config(None, ["eval.scoring=median"])
    with pytest.raises(ConfigError, match="finetune.head"):
        load_config(None, ["finetune.head=mlp"])


def test_evaluate_and_retrieve_score_with_the_scoring_flag(tiny_shards, tmp_path, capsys):
    import json

    import cavmae
    from cavmae.cli import main
    from cavmae.eval.retrieval import EmbeddingSet

    model_dir = tmp_path / "pre"
    cavmae.save_pretrained(_tiny_model(), model_dir)
    common = ["--model", str(model_dir), "--shards", tiny_shards.pattern, "--num-workers", "0", "--scoring", "max"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "ev.json")]) == 0
    assert main(["retrieve", *common, "--out", str(tmp_path / "ret.safetensors")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    ret = json.loads((tmp_path / "ret.json").read_text())
    assert ev["scoring"] == "max" and ev["clips"] == ret["clips"] == 8
    saved = EmbeddingSet.load(tmp_path / "ret.safetensors")
    assert saved.scoring == "max" and saved.audio.shape == (8, 10, 32)
    want = retrieval_metrics_scored(saved.audio, saved.video, "max")
    for direction in ("video_to_audio", "audio_to_video"):
        assert ev[direction] == ret[direction] == pytest.approx(want[direction])
    capsys.readouterr()
    key = saved.keys[3]
    assert (
        main(["retrieve", "--embeddings", str(tmp_path / "ret.safetensors"), "--query-key", key, "--top-k", "2"]) == 0
    )
    best = torch.sort(clip_scores(saved.audio[3:4], saved.video, "max"), dim=1, descending=True, stable=True)
    assert f"1. {saved.keys[int(best.indices[0, 0])]}  {float(best.values[0, 0]):.4f}" in capsys.readouterr().out


def test_a_bare_sync_model_is_scored_the_sync_way_by_default():
    from cavmae.config import Config, ModelConfig
    from cavmae.eval.scoring import windows_for_model

    sync = Config(model=ModelConfig(global_tokens=True, audio_length=416))
    windows_for_model(sync)
    assert sync.data.audio_window == 416
    assert resolve_scoring(sync.eval.scoring, sync.model, sync.data) == "diagonal_mean"
    plain = Config()
    windows_for_model(plain)
    assert plain.data.audio_window == 0 and resolve_scoring("auto", plain.model, plain.data) == "clip"
