"""Checkpoints: our format, the public CAV-MAE layout (keys written from the spec), MAE init, bad files."""

from __future__ import annotations

import pickle

import pytest
import torch
from test_models import batch, tiny_cfg

import cavmae
import cavmae.models.weights
from cavmae.cli import main as cli_main
from cavmae.models.weights import CheckpointError, init_from_cavmae, init_from_mae, load_official, to_official

BLOCK_PARAMS = {  # one block of width d, from design section 1 / the public key names
    **{f"norm{i}{s}.{p}": lambda d: (d,) for i in (1, 2) for s in ("", "_a", "_v") for p in ("weight", "bias")},
    "attn.qkv.weight": lambda d: (3 * d, d),
    "attn.qkv.bias": lambda d: (3 * d,),
    "attn.proj.weight": lambda d: (d, d),
    "attn.proj.bias": lambda d: (d,),
    "mlp.fc1.weight": lambda d: (4 * d, d),
    "mlp.fc1.bias": lambda d: (4 * d,),
    "mlp.fc2.weight": lambda d: (d, 4 * d),
    "mlp.fc2.bias": lambda d: (d,),
}


def spec_state_dict(cfg, kind: str) -> dict[str, torch.Tensor]:
    """A public-layout state dict with `module.` prefix, built from the spec alone (not from our model)."""
    d, p = cfg.embed_dim, cfg.patch_size
    n_a = (cfg.num_mel_bins // p) * (cfg.audio_length // p)
    n_v = (cfg.image_size // p) ** 2
    shapes = {
        "patch_embed_a.proj.weight": (d, 1, p, p),
        "patch_embed_a.proj.bias": (d,),
        "patch_embed_v.proj.weight": (d, 3, p, p),
        "patch_embed_v.proj.bias": (d,),
        "modality_a": (1, 1, d),
        "modality_v": (1, 1, d),
        "pos_embed_a": (1, n_a, d),
        "pos_embed_v": (1, n_v, d),
    }
    for stack, depth in (
        ("blocks_a", cfg.modality_depth),
        ("blocks_v", cfg.modality_depth),
        ("blocks_u", cfg.shared_depth),
    ):
        for i in range(depth):
            shapes.update({f"{stack}.{i}.{k}": f(d) for k, f in BLOCK_PARAMS.items()})
    for n in ("norm_a", "norm_v", "norm"):
        shapes.update({f"{n}.weight": (d,), f"{n}.bias": (d,)})
    if kind == "classifier":
        shapes.update({"mlp_head.0.weight": (d,), "mlp_head.0.bias": (d,), "mlp_head.1.weight": (cfg.num_classes, d)})
        shapes["mlp_head.1.bias"] = (cfg.num_classes,)
    else:
        dd = cfg.decoder_embed_dim
        shapes.update({"decoder_embed.weight": (dd, d), "decoder_embed.bias": (dd,), "mask_token": (1, 1, dd)})
        shapes.update({"decoder_modality_a": (1, 1, dd), "decoder_modality_v": (1, 1, dd)})
        shapes.update({"decoder_pos_embed_a": (1, n_a, dd), "decoder_pos_embed_v": (1, n_v, dd)})
        for i in range(cfg.decoder_depth):
            shapes.update({f"decoder_blocks.{i}.{k}": f(dd) for k, f in BLOCK_PARAMS.items()})
        shapes.update({"decoder_norm.weight": (dd,), "decoder_norm.bias": (dd,)})
        shapes.update({"decoder_pred_a.weight": (p * p, dd), "decoder_pred_a.bias": (p * p,)})
        shapes.update({"decoder_pred_v.weight": (3 * p * p, dd), "decoder_pred_v.bias": (3 * p * p,)})
    g = torch.Generator().manual_seed(0)
    return {"module." + k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def test_spec_layout_matches_base_model_keys():
    base = cavmae.ModelConfig()
    spec = spec_state_dict(base, "pretrain")
    assert len(spec) == 647
    model = cavmae.create_model(base)
    assert {k: tuple(v.shape) for k, v in to_official(model).items()} == {k: tuple(v.shape) for k, v in spec.items()}


@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
@pytest.mark.parametrize("prefix", [True, False])
def test_public_layout_loads_and_converts_back(tmp_path, kind, prefix):
    cfg = tiny_cfg(num_classes=11)
    spec = spec_state_dict(cfg, kind)
    if not prefix:
        spec = {k[len("module.") :]: v for k, v in spec.items()}
    path = tmp_path / "public.pth"
    torch.save(spec, path)
    model, inferred = load_official(path, base=cfg)  # strict: raises on missing / unexpected keys
    assert cavmae.models.weights.model_kind(model) == kind
    assert (inferred.embed_dim, inferred.modality_depth, inferred.audio_length) == (64, 2, 512)
    back = to_official(model, prefix="module." if prefix else "")
    assert back.keys() == spec.keys()
    assert all(torch.equal(back[k], spec[k]) for k in spec)


def test_load_model_gives_same_outputs_both_formats(tmp_path):
    cfg = tiny_cfg(num_classes=5)
    audio, frames = batch(cfg)
    for kind in ("pretrain", "classifier"):
        torch.manual_seed(3)
        model = cavmae.create_model(cfg, kind=kind).eval()
        ours = tmp_path / f"ours_{kind}"
        cavmae.save_pretrained(model, ours)
        torch.save(to_official(model), tmp_path / f"{kind}.pth")
        for path in (ours, ours / "model.safetensors", tmp_path / f"{kind}.pth"):
            loaded = cavmae.load_model(path, base=cfg)
            assert not loaded.training
            if kind == "pretrain":
                for x, y in zip(model.embed(audio, frames), loaded.embed(audio, frames)):
                    assert torch.equal(x, y)
            else:
                with torch.no_grad():
                    assert torch.equal(model(audio, frames), loaded(audio, frames))


def test_saved_config_travels_with_the_model(tmp_path):
    cfg = cavmae.load_config(
        None,
        [
            "model.embed_dim=64",
            "model.num_heads=2",
            "model.modality_depth=1",
            "model.decoder_embed_dim=32",
            "model.decoder_depth=1",
            "optim.lr=0.123",
        ],
    )
    model = cavmae.create_model(cfg.model)
    cavmae.save_pretrained(model, tmp_path / "m", cfg)
    loaded, cfg2 = cavmae.from_pretrained(tmp_path / "m")
    assert cfg2 == cfg and loaded.blocks_a[0].attn.num_heads == 2


def test_bad_checkpoints_are_named(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        cavmae.load_model(junk)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))  # torch.save's protocol: no "protocol 4" warning
    with pytest.raises(CheckpointError, match="refuse to unpickle"):
        cavmae.load_model(evil)
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="not a CAV-MAE state dict"):
        cavmae.load_model(wrong)
    cfg = tiny_cfg()
    spec = spec_state_dict(cfg, "pretrain")
    del spec["module.blocks_u.0.attn.qkv.weight"]
    torch.save(spec, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing keys .*blocks_u.0.attn.qkv.weight"):
        cavmae.load_model(tmp_path / "partial.pth", base=cfg)
    with pytest.raises(CheckpointError, match="does not exist"):
        cavmae.load_model(tmp_path / "nope.pth")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        cavmae.load_model(tmp_path / "dir")
    model = cavmae.create_model(cfg)
    cavmae.save_pretrained(model, tmp_path / "trunc")
    data = (tmp_path / "trunc" / "model.safetensors").read_bytes()
    (tmp_path / "trunc" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        cavmae.load_model(tmp_path / "trunc")


def fake_mae(cfg, depth: int, decoder: bool = True) -> dict:
    d, dd, p = cfg.embed_dim, cfg.decoder_embed_dim, cfg.patch_size
    g = torch.Generator().manual_seed(1)
    st = {"cls_token": torch.randn(1, 1, d), "pos_embed": torch.randn(1, 50, d)}
    st["patch_embed.proj.weight"] = torch.randn(d, 3, p, p, generator=g)
    st["patch_embed.proj.bias"] = torch.randn(d, generator=g)
    mae_block = {k: f for k, f in BLOCK_PARAMS.items() if k[:6] not in ("norm1_", "norm2_")}
    for i in range(depth):
        st.update({f"blocks.{i}.{k}": torch.randn(f(d), generator=g) for k, f in mae_block.items()})
    st.update({"norm.weight": torch.randn(d, generator=g), "norm.bias": torch.randn(d, generator=g)})
    if decoder:
        st.update({"mask_token": torch.randn(1, 1, dd), "decoder_embed.weight": torch.randn(dd, d)})
        st["decoder_embed.bias"] = torch.randn(dd)
        for i in range(cfg.decoder_depth):
            st.update({f"decoder_blocks.{i}.{k}": torch.randn(f(dd), generator=g) for k, f in mae_block.items()})
        st.update({"decoder_norm.weight": torch.randn(dd), "decoder_norm.bias": torch.randn(dd)})
        st.update({"decoder_pred.weight": torch.randn(3 * p * p, dd), "decoder_pred.bias": torch.randn(3 * p * p)})
    return {"model": st}


def test_init_from_mae(tmp_path):
    cfg = tiny_cfg()
    mae = fake_mae(cfg, depth=cfg.modality_depth + cfg.shared_depth)
    torch.save(mae, tmp_path / "mae.pth")
    model = cavmae.create_model(cfg)
    kept = init_from_mae(model, tmp_path / "mae.pth")
    st, m = model.state_dict(), mae["model"]
    assert torch.equal(st["patch_embed_a.proj.weight"], m["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.equal(st["patch_embed_v.proj.weight"], m["patch_embed.proj.weight"])
    last = cfg.modality_depth  # MAE block 2 -> shared block 0
    assert torch.equal(st["blocks_u.0.attn.qkv.weight"], m[f"blocks.{last}.attn.qkv.weight"])
    for s in ("", "_a", "_v"):
        assert torch.equal(st[f"blocks_u.0.norm1{s}.weight"], m[f"blocks.{last}.norm1.weight"])
    assert torch.equal(st["blocks_a.1.mlp.fc2.weight"], st["blocks_v.1.mlp.fc2.weight"])
    assert torch.equal(st["decoder_pred_a.weight"], m["decoder_pred.weight"][:256])
    assert torch.equal(st["norm_a.bias"], m["norm.bias"])
    assert set(kept) == {
        "modality_a",
        "modality_v",
        "pos_embed_a",
        "pos_embed_v",
        "decoder_modality_a",
        "decoder_modality_v",
        "decoder_pos_embed_a",
        "decoder_pos_embed_v",
    }
    torch.save(fake_mae(cfg, depth=2), tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="has 2 blocks, the model needs 3"):
        init_from_mae(cavmae.create_model(cfg), tmp_path / "short.pth")


def test_finetune_init_from_pretrained(tmp_path):
    cfg = tiny_cfg(num_classes=4)
    pre = cavmae.create_model(cfg)
    cavmae.save_pretrained(pre, tmp_path / "pre")
    clf = cavmae.create_model(cfg, kind="classifier")
    kept = init_from_cavmae(clf, tmp_path / "pre")
    assert set(kept) == {"mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias"}
    assert torch.equal(clf.blocks_u[0].attn.qkv.weight, pre.blocks_u[0].attn.qkv.weight)


def test_cli_convert_roundtrip(tmp_path):
    cfg = tiny_cfg()
    torch.save(spec_state_dict(cfg, "pretrain"), tmp_path / "pub.pth")
    assert cli_main(["convert", str(tmp_path / "pub.pth"), str(tmp_path / "ours"), "--to", "cavmae"]) == 0
    assert cli_main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth"), "--to", "official"]) == 0
    a, b = torch.load(tmp_path / "pub.pth"), torch.load(tmp_path / "back.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.save(fake_mae(cfg, depth=3), tmp_path / "mae.pth")
    assert (
        cli_main(
            [
                "convert",
                str(tmp_path / "mae.pth"),
                str(tmp_path / "init"),
                "--from",
                "mae",
                "--config",
                "configs/tiny.yaml",
            ]
        )
        == 0
    )
    assert cavmae.models.weights.model_kind(cavmae.load_model(tmp_path / "init")) == "pretrain"
    assert cli_main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x")]) == 1
