"""Which parameters of a CAV-MAE model a task never uses, read off the model's structure (not off one batch's
gradients, which may miss a parameter by chance).

The encoder's streams (cavmae/models/encoder.py): ``joint`` runs audio tokens through ``blocks_a`` and video tokens
through ``blocks_v``, both into ``blocks_u`` with the joint norm pairs, then ``norm``; ``audio`` runs ``blocks_a``,
then ``blocks_u`` with the audio norm pairs, then ``norm_a``; ``video`` likewise with ``blocks_v`` and ``norm_v``.
The modality stacks and the decoder's blocks run with the joint norm pairs only. The decoder is every parameter
named ``decoder_*`` plus ``mask_token``. CAV-MAE Sync's global tokens ride their modality stack (dropped before the
joint pass, they still reach it through attention in ``blocks_a`` / ``blocks_v``), its registers ride both, and its
contrastive heads (``constrative_head_audio`` / ``_visual``, the public spelling) serve the audio / video streams.
"""

from __future__ import annotations

from torch import nn

from cavmae.models.blocks import ModalityBlock

STREAMS = ("joint", "audio", "video")
# the norm pair a ModalityBlock uses for each stream
_NORM_PAIRS = {"joint": ("norm1", "norm2"), "audio": ("norm1_a", "norm2_a"), "video": ("norm1_v", "norm2_v")}
_FINAL_NORMS = {"joint": "norm", "audio": "norm_a", "video": "norm_v"}


def unused_parameters(model: nn.Module, streams: set[str], decoder: bool) -> list[str]:
    """Names of the parameters of ``model`` (a CAVMAEEncoder, with or without a decoder) that a loss computed from
    the encoder ``streams`` (a subset of :data:`STREAMS`) and, when ``decoder``, the decoder never reaches."""
    unknown = set(streams) - set(STREAMS)
    if unknown:
        raise ValueError(f"unknown streams {sorted(unknown)}; expected a subset of {STREAMS}")
    audio = bool(streams & {"joint", "audio"})
    video = bool(streams & {"joint", "video"})
    skipped_parts = set()  # top-level names (first component of a parameter name) that are unused whole
    if not audio:
        skipped_parts |= {"patch_embed_a", "pos_embed_a", "modality_a", "blocks_a", "cls_token_a"}
    if not video:
        skipped_parts |= {"patch_embed_v", "pos_embed_v", "modality_v", "blocks_v", "cls_token_v"}
    if not (audio or video):
        skipped_parts.add("register_tokens")  # one [2R, D] tensor: audio rows, then video rows
    # CAV-MAE Sync's contrastive heads run on the audio-only / video-only streams only
    if "audio" not in streams:
        skipped_parts.add("constrative_head_audio")
    if "video" not in streams:
        skipped_parts.add("constrative_head_visual")
    if not streams:
        skipped_parts.add("blocks_u")
    skipped_parts |= {norm for stream, norm in _FINAL_NORMS.items() if stream not in streams}
    # norm pairs in use, per stack of blocks
    pairs = {"blocks_u": {p for s in streams for p in _NORM_PAIRS[s]}}
    unused_norms = set()
    for name, module in model.named_modules():
        if not isinstance(module, ModalityBlock):
            continue
        used = pairs.get(name.split(".")[0], set(_NORM_PAIRS["joint"]))
        unused_norms |= {f"{name}.{pair}." for s in STREAMS for pair in _NORM_PAIRS[s] if pair not in used}
    out = []
    for name, _ in model.named_parameters():
        top = name.split(".")[0]
        if (
            top in skipped_parts
            or (not decoder and (top.startswith("decoder_") or top == "mask_token"))
            or any(name.startswith(prefix) for prefix in unused_norms)
        ):
            out.append(name)
    return out
