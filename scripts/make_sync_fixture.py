"""Build tests/fixtures/sync_public_small.pt from a fetched copy of the public CAV-MAE Sync code.

    python scripts/make_sync_fixture.py /path/to/cav-mae-sync [--out tests/fixtures/sync_public_small.pt]

The public class (src/models/cav_mae_sync.py) is built at small dimensions (width 24, 2 heads, 11 + 1 blocks, 2
registers per modality, global tokens, contrastive heads, audio window 416, 32 x 32 frames) with random weights:
every parameter, LayerNorms included, is perturbed, so a model that used the wrong norm pair would not match.
Its ``forward_feat`` runs on random inputs; the file holds tensors only (weights_only-loadable): the state dict,
the inputs and the public (cls_a, cls_v). Weights and inputs are stored in float16 (the file stays under 1 MB)
and the public outputs are computed from exactly those float16 values cast to float32.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from pathlib import Path

import torch

log = logging.getLogger("make_sync_fixture")
SETTINGS = dict(
    img_size=32,
    audio_length=416,
    embed_dim=24,
    num_heads=2,
    modality_specific_depth=11,  # the public class hard-codes 12 blocks: 1 shared
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
    num_register_tokens=2,
    cls_token=True,
    contrastive_heads=True,
)


def _timm_attention_without_qk_scale() -> None:
    """The public Block passes qk_scale to timm's Attention, which timm 1.x no longer takes (it was None there)."""
    import timm.models.vision_transformer as vt

    attention = vt.Attention
    if "qk_scale" in inspect.signature(attention.__init__).parameters:
        return

    class Attention(attention):
        def __init__(self, *args, qk_scale=None, **kwargs):
            if qk_scale is not None:
                raise ValueError("qk_scale is not supported")
            super().__init__(*args, **kwargs)

    vt.Attention = Attention


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("repo", help="a checkout of github.com/edsonroteia/cav-mae-sync (holds src/models/)")
    p.add_argument("--out", default="tests/fixtures/sync_public_small.pt")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _timm_attention_without_qk_scale()
    sys.path.insert(0, str(Path(args.repo).resolve()))
    from src.models.cav_mae_sync import CAVMAE  # the public class, from the given checkout

    torch.manual_seed(0)
    model = CAVMAE(**SETTINGS).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 1:  # LayerNorm scales
                param.copy_(1 + 0.2 * torch.randn_like(param))
            else:
                param.add_(0.05 * torch.randn_like(param))
            param.copy_(param.half().float())  # the values the fixture stores
        audio = torch.randn(2, SETTINGS["audio_length"], 128).half()
        frames = torch.randn(2, 3, SETTINGS["img_size"], SETTINGS["img_size"]).half()
        _, _, cls_a, cls_v = model.forward_feat(audio.float(), frames.float())
    state = {k: v.half() for k, v in model.state_dict().items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": state, "audio": audio, "frames": frames, "cls_a": cls_a, "cls_v": cls_v},
        str(out),
    )
    log.info("wrote %s (%d bytes, %d tensors in the state dict)", out, out.stat().st_size, len(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
