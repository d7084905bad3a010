"""The HEAR API (cavmae.hear): shapes, timestamps, determinism, any input length, the pipeline's fbank."""

from __future__ import annotations

import pytest
import torch

from cavmae import hear
from cavmae.config import Config, ModelConfig
from cavmae.data.fbank import wav_to_fbank
from cavmae.models.cavmae import CAVMAE
from cavmae.models.weights import save_official, save_pretrained

# head counts follow ViT's 64 dims per head, so a public-layout copy of the model infers the same architecture
TINY = dict(
    embed_dim=64,
    num_heads=1,
    modality_depth=1,
    shared_depth=1,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=1,
    image_size=32,
    audio_length=96,
)  # a 0.96 s window: 6 patch columns


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(**TINY))
    cfg.data.fbank_mean, cfg.data.fbank_std = -4.0, 3.0
    return save_pretrained(CAVMAE(cfg.model), tmp_path_factory.mktemp("hear") / "model", cfg)


@pytest.fixture(scope="module")
def model(model_dir):
    return hear.load_model(str(model_dir))


def noise(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, int(seconds * 16000), generator=g) * 2 - 1


def test_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64
    assert all(isinstance(v, int) for v in (model.sample_rate, model.scene_embedding_size))
    assert (model.fbank_mean, model.fbank_std) == (-4.0, 3.0)  # the model directory's own normalisation


def test_empty_path_says_what_is_needed():
    with pytest.raises(ValueError, match="model directory .* or a public CAV-MAE .pth"):
        hear.load_model()


def test_public_checkpoint_loads(tmp_path, model):
    save_official(model.encoder, tmp_path / "public.pth")
    public = hear.load_model(str(tmp_path / "public.pth"))
    assert (public.fbank_mean, public.fbank_std) == (-5.081, 4.4849)
    audio = noise(2, 0.5)
    # same weights, another normalisation: the embeddings differ only through the fbank statistics
    public.fbank_mean, public.fbank_std = model.fbank_mean, model.fbank_std
    torch.testing.assert_close(hear.get_scene_embeddings(audio, public), hear.get_scene_embeddings(audio, model))


@pytest.mark.parametrize("seconds", [0.01, 0.5, 0.96, 2.0, 3.74])
def test_shapes_and_timestamps(model, seconds):
    audio = noise(3, seconds)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 64) and scene.dtype == torch.float32 and torch.isfinite(scene).all()
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    duration_ms = audio.shape[1] / 16.0
    steps = max(1, -(-duration_ms // 40))
    assert emb.shape == (3, steps, 64) and ts.shape == (3, steps) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    # centred, evenly spaced at 40 ms (a 160 ms patch column in 4), covering the clip
    assert model.hop_ms == 40.0 <= 50
    torch.testing.assert_close(ts[0], (torch.arange(steps) + 0.5) * 40.0)
    assert (ts == ts[:1]).all()
    assert ts[0, -1] - 20 < duration_ms <= ts[0, -1] + 20


def test_deterministic(model):
    audio = noise(2, 2.0)
    a, ta = hear.get_timestamp_embeddings(audio, model)
    b, tb = hear.get_timestamp_embeddings(audio.clone(), model)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert torch.equal(hear.get_scene_embeddings(audio, model), hear.get_scene_embeddings(audio, model))


def test_short_clip_is_the_pipeline_fbank_padded(model):
    audio = noise(2, 0.5)
    window = model.cfg.audio_length
    expected = torch.stack([wav_to_fbank(a, target_length=window, mean=-4.0, std=3.0) for a in audio])
    torch.testing.assert_close(model.fbank(audio, window), expected)
    # the columns are those of one window over the padded fbank (padded columns dropped: 0.5 s = 48 frames -> 3 columns)
    tokens = model.encoder.audio_stream(model.encoder.encode_audio(expected)).reshape(2, 8, 6, 64).mean(1)
    cols = model.column_embeddings(audio)
    assert cols.shape == (2, 3, 64)
    torch.testing.assert_close(cols, tokens[:, :3])


def test_long_clip_slides_windows(model):
    """Columns inside the first half window come from the first window alone; the timestamp embedding between
    two column centres is their linear interpolation."""
    audio = noise(1, 2.0)
    cols = model.column_embeddings(audio)  # 2 s = 198 frames -> 13 columns
    assert cols.shape == (1, 13, 64)
    first = model.fbank(audio, 96)
    alone = model.encoder.audio_stream(model.encoder.encode_audio(first)).reshape(1, 8, 6, 64).mean(1)
    torch.testing.assert_close(cols[:, :3], alone[:, :3])
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    # column j is centred at 160 j + 87.5 ms; timestamp 260 ms lies 172.5 / 160 columns after column 0's centre
    k = int((ts[0] == 260).nonzero())
    w = (260 - 87.5) / 160 - 1
    torch.testing.assert_close(emb[0, k], cols[0, 1] * (1 - w) + cols[0, 2] * w)
    torch.testing.assert_close(emb[0, 0], cols[0, 0])  # before the first centre: the first column


def test_bad_audio_is_named(model):
    with pytest.raises(ValueError, match=r"\[n, samples\]"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
