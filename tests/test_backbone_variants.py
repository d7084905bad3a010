"""Golden numbers of both backbones, the contrastive input option and the ablation script's table.

The golden numbers below were produced by the code before the (since removed) backbone variant options existed
(same seeds, same tiny model), so a change to the default path shows up here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import cavmae
from cavmae.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]

# (loss_rec_a, loss_rec_v, loss_c, |emb_a|_1, |emb_v|_1, |classifier logits|_1) of _small() before the options
GOLDEN = {
    "vit": [1.119266, 1.0321, 1.83566, 48.2107, 50.45183, 16.22652],
    "mamba": [1.113824, 1.038875, 2.893586, 39.83822, 46.07781, 14.15355],
}


def _small(backbone: str, **overrides) -> ModelConfig:
    cfg = ModelConfig(
        backbone=backbone,
        embed_dim=32,
        num_heads=4,
        modality_depth=1,
        shared_depth=1,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
        audio_length=64,  # audio grid (2, 4): 2 bands x 4 time steps
        num_mel_bins=32,
        image_size=32,
        num_classes=5,
    )
    for k, v in overrides.items():
        if k.startswith("mamba."):
            setattr(cfg.mamba, k.split(".", 1)[1], v)
        else:
            setattr(cfg, k, v)
    return cfg


def _numbers(cfg: ModelConfig) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded losses, retrieval embeddings and classifier logits of a fresh model."""
    torch.manual_seed(0)
    model = cavmae.create_model(cfg)
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(3, 64, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    torch.manual_seed(2)
    out = model(audio, frames, return_outputs=True)
    emb_a, emb_v = model.embed(audio, frames)
    torch.manual_seed(0)
    logits = cavmae.create_model(cfg, kind="classifier")(audio, frames)
    return out, emb_a, emb_v, logits


@pytest.mark.parametrize("backbone", ["vit", "mamba"])
def test_defaults_give_the_numbers_of_before(backbone):
    out, emb_a, emb_v, logits = _numbers(_small(backbone))
    got = [out[k].item() for k in ("loss_rec_a", "loss_rec_v", "loss_c")]
    got += [emb_a.abs().sum().item(), emb_v.abs().sum().item(), logits.abs().sum().item()]
    assert got == pytest.approx(GOLDEN[backbone], rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# scripts/ablate_backbones.py


@pytest.fixture(scope="module")
def ablate():
    spec = importlib.util.spec_from_file_location("ablate_backbones", ROOT / "scripts" / "ablate_backbones.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablate_backbones"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules["ablate_backbones"]


def test_every_ablation_row_is_buildable_and_equal_parameter(ablate):
    from cavmae.demo.settings import FULL

    matched = [n for n, v in ablate.VARIANTS.items() if v.matched]
    counts = ablate.check_sizes(FULL, matched)
    assert set(ablate.DEFAULT_VARIANTS) <= set(matched)
    assert list(ablate.DEFAULT_VARIANTS[:2]) == ["vit", "mamba"]
    for name in matched:
        assert abs(counts[name] / counts["vit"] - 1) <= 0.05, name


def test_the_recipe_row_is_the_demos_mamba_config(ablate, tmp_path):
    """The table's mamba_unmasked_c row runs exactly what `cavmae demo --backbone mamba` runs (both tasks)."""
    from dataclasses import asdict

    from cavmae.demo.heldout import DemoData
    from cavmae.demo.pipeline import demo_config
    from cavmae.demo.settings import FULL

    data = DemoData(tmp_path, "train.tar", "heldout.tar", 10, 2, ["a", "b"])
    for task in ("pretrain", "finetune"):
        row = ablate.configure(FULL, data, tmp_path, seed=1, variant=ablate.VARIANTS["mamba_unmasked_c"], task=task)
        demo = demo_config(FULL, data, tmp_path, seed=1, backbone="mamba", task=task)
        demo.train.progress_bar = False  # the ablation's only other setting
        if task == "finetune":  # a pre-training-only override in the row; the classifier has no contrastive loss
            assert (row.model.contrast_mask_ratio, demo.model.contrast_mask_ratio) == (0.75, 0.0)
            row.model.contrast_mask_ratio = demo.model.contrast_mask_ratio
        assert asdict(row) == asdict(demo), task
    bare = ablate.configure(FULL, data, tmp_path, seed=1, variant=ablate.VARIANTS["mamba"], task="pretrain")
    assert bare.model.contrast_mask_ratio == 0.75  # the CAV-MAE-objective row


def test_ablation_refuses_a_row_outside_the_tolerance(ablate):
    from cavmae.demo.settings import FULL

    with pytest.raises(SystemExit, match="mamba_wide"):
        ablate.VARIANTS["mamba_wide"] = ablate.Variant("mamba", ("model.mamba.expand=4",))
        try:
            ablate.check_sizes(FULL, ["mamba_wide"])
        finally:
            del ablate.VARIANTS["mamba_wide"]


def test_ablation_table_means_and_spread(ablate):
    runs = [
        {
            "variant": "vit",
            "seed": s,
            "R@5_v2a": 40.0 + 2 * s,
            "R@5_a2v": 30.0,
            "top1_pretrained": 90.0,
            "top1_scratch": 70.0 + 10 * s,
            "end_loss_rec_a": 0.5,
            "end_loss_rec_v": 0.4,
            "end_loss_c": 1.0,
            "total_s": 60.0,
        }
        for s in (0, 1)
    ]
    rows = ablate.aggregate(runs, ["vit", "mamba"], {"vit": 100, "mamba": 104})
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]
    assert rows[0]["R@5_v2a"]["mean"] == 41.0 and rows[0]["R@5_v2a"]["sd"] == pytest.approx(2**0.5)
    assert rows[0]["ft_gain"]["mean"] == 15.0
    protocol = {
        "reduced": True,
        "clips": 300,
        "classes": 8,
        "train_clips": 250,
        "heldout_clips": 50,
        "chance_R@5": 10.0,
        "pretrain_steps": 250,
        "pretrain_batch": 32,
        "finetune_steps": 30,
        "finetune_batch": 16,
        "seeds": [0, 1],
        "command": "python scripts/ablate_backbones.py --quick",
    }
    budget = {"wall_min": 2.0, "runs": 2, "machine": "2 CPU cores", "load_start": 1.0, "load_end": 1.0}
    text = ablate.markdown(rows, protocol, budget, {"vit": 100, "mamba": 104})
    assert "REDUCED PROTOCOL" in text and "41.0 ± 1.4" in text and "2.0 min wall" in text


@pytest.mark.slow
def test_ablation_end_to_end_at_a_tiny_size(ablate, tmp_path):
    """Data once, two variants, one seed: the JSON holds both runs and a rerun resumes without training."""
    import json

    args = ["--quick", "--clips", "48", "--steps", "2", "--finetune-steps", "1", "--seeds", "0"]
    args += ["--variants", "vit,mamba_dt", "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")]
    assert ablate.main(args) == 0
    table = json.loads((tmp_path / "r" / "ablate_backbones.json").read_text())
    assert [r["variant"] for r in table["runs"]] == ["vit", "mamba_dt"]
    assert table["params"]["mamba_dt"] != table["params"]["vit"]
    assert "REDUCED PROTOCOL" in (tmp_path / "r" / "ablate_backbones.md").read_text()
    assert ablate.main(args) == 0  # resumes: both runs are already there
    assert len(json.loads((tmp_path / "r" / "ablate_backbones.json").read_text())["runs"]) == 2


def test_pretraining_only_variants_share_the_scratch_run(ablate):
    v = ablate.VARIANTS
    assert ablate.scratch_key(v["mamba_lr"], 1) == ablate.scratch_key(v["mamba"], 1)
    assert ablate.scratch_key(v["mamba_unmasked_c"], 1) == ablate.scratch_key(v["mamba"], 1)
    assert ablate.scratch_key(v["mamba"], 1) != ablate.scratch_key(v["mamba"], 2)
    assert ablate.scratch_key(v["mamba_dt"], 1) != ablate.scratch_key(v["mamba"], 1)


@pytest.mark.parametrize("backbone", ["vit", "mamba"])
def test_unmasked_contrast_is_the_infonce_of_the_retrieval_embeddings(backbone):
    from cavmae.models.losses import info_nce

    torch.manual_seed(0)
    cfg = _small(backbone, contrast_mask_ratio=0.0)
    model = cavmae.create_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    audio, frames = torch.randn(3, 64, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    out = model(audio, frames)
    emb_a, emb_v = model.embed(audio, frames)
    want, _ = info_nce(emb_a, emb_v, cfg.temperature, cfg.symmetric_contrast, False)
    assert torch.allclose(out["loss_c"], want, atol=1e-6)
    torch.manual_seed(0)
    masked = cavmae.create_model(_small(backbone)).eval()
    assert not torch.allclose(masked(audio, frames)["loss_c"], want, atol=1e-4)  # the masked streams differ


def test_masked_view_retrieval_averages_the_seeded_views_each_pooled_over_its_tokens(ablate):
    """A stand-in model with hand-made tokens (3 clips, dim 3, e_i the unit vectors). Video i pools to e_i. Audio i:
    view 0 pools to e_{i+1} + 0.6 e_i, view 1 to e_{i+2} + 0.6 e_i, each from two tokens pooled +- 5 e_{i+2}. Each
    view alone ranks the true match second (e_{i+1} or e_{i+2} scores 1 > 0.6); their mean ranks it first (0.6 >
    0.5); a single token instead of the mean points at e_{i+2}."""
    eye = torch.eye(3)

    class Views:
        cfg = ModelConfig()

        def eval(self):
            return self

        def forward_encoder(self, audio, frames, mask_ratio_a, mask_ratio_v, mask_mode):
            view = torch.initial_seed() - 1000  # the function seeds view i with 1000 + i (an IndexError otherwise)
            clip = audio.long()  # [b]: the clips' indices stand for their audio
            pooled = eye[(clip + 1 + view) % 3] + 0.6 * eye[clip]  # [b, 3]
            spread = 5.0 * eye[(clip + 2) % 3]
            a = torch.stack([pooled + spread, pooled - spread], dim=1)  # [b, 2 tokens, 3]
            v = torch.stack([eye[clip] + spread, eye[clip] - spread], dim=1)
            return a, v, None, None

        def audio_stream(self, a):
            return a

        def video_stream(self, v):
            return v

    class Held:  # what the function reads of cavmae.demo.heldout.HeldOut: two batches, clips 0-1 and clip 2
        def batches(self):
            yield {"audio": torch.tensor([0.0, 1.0]), "frames": None}
            yield {"audio": torch.tensor([2.0]), "frames": None}

    both = ablate.masked_view_retrieval(Views(), Held(), views=2)
    first = ablate.masked_view_retrieval(Views(), Held(), views=1)
    for direction in ("video_to_audio", "audio_to_video"):
        assert (both[direction]["R@1"], both[direction]["mean_rank"]) == (100.0, 1.0), direction
        assert (first[direction]["R@1"], first[direction]["mean_rank"]) == (0.0, 2.0), direction
