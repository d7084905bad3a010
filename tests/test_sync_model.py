"""CAV-MAE Sync model options (design section 5): global tokens, registers, contrastive heads, the contrastive
mask ratio, public-checkpoint inference and equivalence (tests/fixtures/sync_public_small.pt, built by
scripts/make_sync_fixture.py from the public code), conversion and the named config errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from test_checkpoint import spec_state_dict
from test_models import TINY, _kept_and_whole, _record_passes, batch, tiny_cfg

import cavmae
from cavmae.cli import main as cli_main
from cavmae.config import ConfigError, ModelConfig, from_dict, load_config
from cavmae.models.weights import CheckpointError, init_from_cavmae, load_model, save_pretrained

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sync_public_small.pt"
R = 3  # registers per modality in the tiny Sync models


def sync_cfg(**overrides) -> ModelConfig:
    return tiny_cfg(global_tokens=True, registers=R, **overrides)


@pytest.mark.parametrize("backbone", ["vit", "mamba"])
def test_global_tokens_and_registers_ride_the_modality_stacks_only(backbone):
    cfg = sync_cfg(backbone=backbone, decoder_backbone=backbone)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    assert model.cls_token_a.shape == (1, 1, cfg.embed_dim) and model.register_tokens.shape == (2 * R, cfg.embed_dim)
    passes = _record_passes(model)
    out = model(*batch(cfg))
    ka, _, kv, _ = _kept_and_whole(cfg)
    # modality stacks: global token + kept tokens + registers; joint pass: kept tokens only; modality passes of
    # the shared block: global token + kept tokens (registers dropped)
    assert passes == Counter(
        {
            ("blocks_a", None, 1 + ka + R): 1,
            ("blocks_v", None, 1 + kv + R): 1,
            ("blocks_u", None, ka + kv): 1,
            ("blocks_u", "a", 1 + ka): 1,
            ("blocks_u", "v", 1 + kv): 1,
        }
    )
    out["loss"].backward()
    for name in ("cls_token_a", "cls_token_v", "register_tokens"):
        grad = getattr(model, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    grad_r = model.register_tokens.grad
    assert grad_r[:R].abs().sum() > 0 and grad_r[R:].abs().sum() > 0  # audio rows and video rows both used


def test_embed_is_the_global_tokens_output_and_depends_on_the_registers():
    cfg = sync_cfg()
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).eval()
    audio, frames = batch(cfg)
    emb_a, emb_v = model.embed(audio, frames)
    stream = model.audio_stream(model.encode_audio(audio))  # [B, 1 + La, D]
    assert stream.shape[1] == 1 + cfg.audio_grid[0] * cfg.audio_grid[1]
    assert torch.equal(emb_a, stream[:, 0]) and not torch.allclose(emb_a, stream.mean(1))
    with torch.no_grad():
        model.register_tokens[:R] += 1.0  # audio registers: the audio embedding moves, the video one does not
    emb_a2, emb_v2 = model.embed(audio, frames)
    assert not torch.allclose(emb_a, emb_a2) and torch.equal(emb_v, emb_v2)


def test_contrastive_heads_run_after_the_shared_block_with_the_joint_norms():
    cfg = sync_cfg(contrastive_heads=True)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    calls: list = []
    for name in ("constrative_head_audio", "constrative_head_visual"):
        assert len(getattr(model, name)) == 2
        for i, blk in enumerate(getattr(model, name)):
            blk.register_forward_pre_hook(lambda m, args, n=name, i=i: calls.append((n, i, args[1], args[0].shape[1])))
    model(*batch(cfg))
    ka, _, kv, _ = _kept_and_whole(cfg)
    assert calls == [
        ("constrative_head_audio", 0, None, 1 + ka),
        ("constrative_head_audio", 1, None, 1 + ka),
        ("constrative_head_visual", 0, None, 1 + kv),
        ("constrative_head_visual", 1, None, 1 + kv),
    ]


def test_a_contrastive_pass_at_its_own_mask_ratio_runs_separately():
    cfg = tiny_cfg(contrast_mask_ratio=0.5)
    torch.manual_seed(0)
    model = cavmae.create_model(cfg).train()
    passes = _record_passes(model)
    model(*batch(cfg))
    ka, na, kv, nv = _kept_and_whole(cfg)
    ca, cv = int(na * 0.5), int(nv * 0.5)
    want = Counter({("blocks_a", None, ka): 1, ("blocks_v", None, kv): 1, ("blocks_u", None, ka + kv): 1})
    want.update({("blocks_a", None, ca): 1, ("blocks_v", None, cv): 1, ("blocks_u", "a", ca): 1})
    want.update({("blocks_u", "v", cv): 1})
    assert passes == want
    cfg = tiny_cfg(contrast_mask_ratio=0.5, rec_weight=0.0)  # no reconstruction: only the contrastive pass runs
    model = cavmae.create_model(cfg).train()
    passes = _record_passes(model)
    model(*batch(cfg))
    assert passes == Counter({k: 1 for k in want if k[2] in (ca, cv)})


def test_saved_contrast_input_upgrades_to_the_mask_ratio():
    saved = load_config(TINY)
    data = {"model": {"contrast_input": "unmasked"}}
    assert from_dict(data).model.contrast_mask_ratio == 0.0
    assert (
        from_dict(
            {"model": {"contrast_input": "masked", "mask_ratio_a": 0.6, "mask_ratio_v": 0.6}}
        ).model.contrast_mask_ratio
        == 0.6
    )
    assert from_dict({"model": {"contrast_input": "masked"}}).model.contrast_mask_ratio == saved.model.mask_ratio_a
    with pytest.raises(ConfigError, match="mask_ratio_a=0.6 != model.mask_ratio_v=0.75"):
        from_dict({"model": {"contrast_input": "masked", "mask_ratio_a": 0.6}})
    with pytest.raises(ConfigError, match="contrast_mask_ratio"):
        load_config(TINY, ["model.contrast_input=unmasked"])


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["model.registers=2", "model.modality_depth=0"], ("model.registers=2", "model.modality_depth=0")),
        (["model.global_tokens=true", "model.modality_depth=0"], ("model.global_tokens=true", "modality_depth=0")),
        (["model.registers=-1"], ("model.registers",)),
        (["model.contrast_mask_ratio=1.0"], ("model.contrast_mask_ratio", "[0, 1)")),
        (["model.contrast_mask_ratio=-0.1"], ("model.contrast_mask_ratio",)),
        (["model.contrastive_heads=true", "model.contrast_weight=0"], ("contrastive_heads", "contrast_weight")),
    ],
)
def test_combinations_that_cannot_work_are_named(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, overrides)
    for name in names:
        assert name in str(err.value)


def _public_file(tmp_path: Path) -> tuple[Path, dict]:
    fixture = torch.load(FIXTURE, weights_only=True)
    path = tmp_path / "cav_mae_sync.pth"
    torch.save({"module." + k: v for k, v in fixture["state_dict"].items()}, path)
    return path, fixture


def _rel_err(ours: torch.Tensor, public: torch.Tensor) -> float:
    return ((ours - public).abs().max() / public.abs().max()).item()


def test_public_sync_forward_feat_equivalence(tmp_path, caplog):
    """Our embed of the public class's weights equals its forward_feat's (cls_a, cls_v) (random small model)."""
    path, fixture = _public_file(tmp_path)
    with caplog.at_level("INFO"):
        model = load_model(path, base=ModelConfig(num_heads=2), expect="sync")
    assert any("holds a CAV-MAE Sync model" in r.getMessage() for r in caplog.records)
    cfg = model.cfg
    assert (cfg.global_tokens, cfg.registers, cfg.contrastive_heads) == (True, 2, True)
    assert (cfg.audio_length, cfg.image_size, cfg.embed_dim, cfg.modality_depth, cfg.shared_depth) == (
        416,
        32,
        24,
        11,
        1,
    )
    audio, frames = fixture["audio"].float(), fixture["frames"].float()
    cls_a, cls_v = model.embed(audio, frames)
    assert _rel_err(cls_a, fixture["cls_a"]) < 1e-4 and _rel_err(cls_v, fixture["cls_v"]) < 1e-4
    with torch.no_grad():  # the check can fail: registers and the heads' norms matter to the outputs
        model.register_tokens.zero_()
    assert _rel_err(model.embed(audio, frames)[0], fixture["cls_a"]) > 1e-3
    model = load_model(path, base=ModelConfig(num_heads=2))
    with torch.no_grad():
        model.constrative_head_audio[0].norm1.weight.copy_(model.constrative_head_audio[0].norm1_a.weight)
    assert _rel_err(model.embed(audio, frames)[0], fixture["cls_a"]) > 1e-3


def test_the_loader_says_which_kind_a_file_holds(tmp_path):
    cfg = tiny_cfg()
    torch.save(spec_state_dict(cfg, "pretrain"), tmp_path / "claims_sync.pth")
    with pytest.raises(CheckpointError, match="expected to be a CAV-MAE Sync checkpoint but holds a plain CAV-MAE"):
        load_model(tmp_path / "claims_sync.pth", expect="sync")
    assert not load_model(tmp_path / "claims_sync.pth").cfg.global_tokens  # without expect: loads as CAV-MAE
    path, fixture = _public_file(tmp_path)
    state = {k: v for k, v in torch.load(path, weights_only=True).items()}
    bad = dict(state)
    bad["module.register_tokens"] = bad["module.register_tokens"][:3]
    torch.save(bad, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"register_tokens is \[3, 24\], expected \[2R, 24\]"):
        load_model(tmp_path / "odd.pth")
    half = {k: v for k, v in state.items() if k != "module.cls_token_v"}
    torch.save(half, tmp_path / "half.pth")
    with pytest.raises(CheckpointError, match="cls_token_v is missing"):
        load_model(tmp_path / "half.pth")
    heads = {k: v for k, v in state.items() if not k.startswith("module.constrative_head_visual.1.")}
    torch.save(heads, tmp_path / "heads.pth")
    with pytest.raises(CheckpointError, match="constrative_head_visual 1 blocks"):
        load_model(tmp_path / "heads.pth")


def test_cli_convert_sync_roundtrip(tmp_path):
    path, fixture = _public_file(tmp_path)
    assert cli_main(["convert", str(path), str(tmp_path / "ours"), "--to", "cavmae"]) == 0
    ours = load_model(tmp_path / "ours")
    assert (ours.cfg.global_tokens, ours.cfg.registers, ours.cfg.contrastive_heads) == (True, 2, True)
    assert cli_main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth"), "--to", "official"]) == 0
    a, b = torch.load(path, weights_only=True), torch.load(tmp_path / "back.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k]) for k in a)


def test_a_sync_model_initialised_from_a_sync_run_keeps_its_global_tokens(tmp_path):
    cfg = sync_cfg()
    torch.manual_seed(0)
    pre = cavmae.create_model(cfg)
    save_pretrained(pre, tmp_path / "pre")
    torch.manual_seed(1)
    other = cavmae.create_model(cfg)
    kept = init_from_cavmae(other, tmp_path / "pre")
    assert "cls_token_a" not in kept and torch.equal(other.cls_token_a, pre.cls_token_a)
    assert torch.equal(other.register_tokens, pre.register_tokens)


def test_the_mamba_sync_recipe_trains(tmp_path):
    """The Mamba twin's model options (configs/pretrain_sync_mamba.yaml: Sync's tokens on the Mamba backbone with an
    unmasked contrastive pass) at the tiny size: pre-training runs and lowers the loss."""
    from train_helpers import micro_overrides, read_jsonl

    from cavmae.train import train

    mamba = load_config(cavmae.config.recipe_path("pretrain_sync_mamba")).model
    extra = [f"model.{k}={getattr(mamba, k)}" for k in ("backbone", "contrast_mask_ratio", "global_tokens")]
    cfg = load_config(
        cavmae.config.recipe_path("tiny_sync"),
        micro_overrides(
            tmp_path, "train.max_steps=8", "optim.lr=1e-3", "train.ckpt_every=0", "model.mamba.scan_impl=torch", *extra
        ),
    )
    assert cfg.model.backbone == "mamba" and cfg.model.global_tokens and cfg.model.registers > 0
    train(cfg)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3])
