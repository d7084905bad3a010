"""The CAV-MAE pre-training model: forward_encoder / forward_decoder / forward_loss, as in MAE's models_mae.py."""

from __future__ import annotations

import torch
from torch import nn

from cavmae.config import ModelConfig
from cavmae.models.blocks import create_block
from cavmae.models.embed import audio_to_image, init_linear_and_norm, patchify, sincos_2d
from cavmae.models.encoder import CAVMAEEncoder, reset_backbones
from cavmae.models.losses import grouped_info_nce, info_nce, reconstruction_loss
from cavmae.models.masking import Masked, random_masking


class CAVMAE(CAVMAEEncoder):
    """Contrastive audio-visual masked autoencoder.

    ``forward(audio [B, T, F], frames [B, 3, H, W])`` returns a dict of named losses and metrics:
    ``loss`` (= rec_weight * loss_rec + contrast_weight * loss_c), ``loss_rec`` (= loss_rec_a + loss_rec_v),
    ``loss_rec_a``, ``loss_rec_v``, ``loss_c`` (unweighted InfoNCE) and ``acc_c`` (in-batch retrieval accuracy).
    With contrast groups (training only) ``loss_c`` is the mean over the groups of the global batch of each group's
    InfoNCE (:func:`~cavmae.models.losses.grouped_info_nce`), so ``loss`` has the same form and scale as without
    groups; the paper's DataParallel sum over its 4 GPUs is 4 times this loss, the same Adam steps up to eps and
    weight decay (see :mod:`cavmae.models.losses`).
    """

    def __init__(self, cfg: ModelConfig | None = None):
        cfg = cfg or ModelConfig()
        super().__init__(cfg, trainable_pos=False)
        ddim = cfg.decoder_embed_dim
        self.gather_contrast = False  # set by the trainer: negatives from every rank
        # set by the trainer (train.contrast_group): InfoNCE within groups of N clips of the global batch, averaged
        # over the groups; 0 = off. Training forwards only.
        self.contrast_group = 0
        self.decoder_embed = nn.Linear(cfg.embed_dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, ddim))
        n_a, n_v = self.patch_embed_a.num_patches, self.patch_embed_v.num_patches
        self.decoder_pos_embed_a = nn.Parameter(torch.zeros(1, n_a, ddim), requires_grad=False)
        self.decoder_pos_embed_v = nn.Parameter(torch.zeros(1, n_v, ddim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            create_block(cfg.decoder_backbone, ddim, cfg.decoder_num_heads, cfg) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(ddim, eps=cfg.norm_eps)
        self.decoder_pred_a = nn.Linear(ddim, cfg.patch_size**2 * 1)
        self.decoder_pred_v = nn.Linear(ddim, cfg.patch_size**2 * 3)
        self.init_weights()

    def init_weights(self) -> None:
        self.init_encoder_weights()
        cfg = self.cfg
        self.decoder_pos_embed_a.data.copy_(sincos_2d(cfg.decoder_embed_dim, *cfg.audio_grid).unsqueeze(0))
        self.decoder_pos_embed_v.data.copy_(sincos_2d(cfg.decoder_embed_dim, *cfg.video_grid).unsqueeze(0))
        for p in (self.mask_token, self.decoder_modality_a, self.decoder_modality_v):
            nn.init.normal_(p, std=0.02)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred_a, self.decoder_pred_v):
            m.apply(init_linear_and_norm)
        reset_backbones(self.decoder_blocks)

    # MAE-style stages ---------------------------------------------------------------------------------------
    def forward_encoder(
        self, audio: torch.Tensor, frames: torch.Tensor, mask_ratio_a: float, mask_ratio_v: float, mask_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor, Masked, Masked]:
        """Mask, run the modality stacks over the kept tokens. Returns the audio [B, (1+)Ka, D] and video
        [B, (1+)Kv, D] tokens after blocks_a / blocks_v (global token first with model.global_tokens) and the two
        masks; the shared stack runs on them per stream, as each loss needs: :meth:`joint_stream` for the decoder,
        :meth:`audio_stream` / :meth:`video_stream` for contrastive embeddings of the masked input."""
        masked_a = random_masking(self.tokens_a(audio), mask_ratio_a, mask_mode, self.cfg.audio_grid)
        masked_v = random_masking(self.tokens_v(frames), mask_ratio_v)
        a = self.modality_stack(masked_a.tokens, "a")
        v = self.modality_stack(masked_v.tokens, "v")
        return a, v, masked_a, masked_v

    def _unshuffle(self, x: torch.Tensor, masked: Masked) -> torch.Tensor:
        """Visible decoder tokens [B, K, d] -> full sequence [B, L, d] with mask tokens in the masked places."""
        b, keep, d = x.shape
        length = masked.ids_restore.shape[1]
        full = torch.cat([x, self.mask_token.expand(b, length - keep, d)], dim=1)
        return torch.gather(full, 1, masked.ids_restore.unsqueeze(-1).expand(-1, -1, d))

    def forward_decoder(self, latent: torch.Tensor, masked_a: Masked, masked_v: Masked):
        """Joint latent of the kept tokens [B, Ka+Kv, D] -> predicted patches (audio [B, La, p*p], video
        [B, Lv, p*p*3])."""
        x = self.decoder_embed(latent)
        keep_a, n_a = masked_a.ids_keep.shape[1], masked_a.mask.shape[1]
        a, v = self._unshuffle(x[:, :keep_a], masked_a), self._unshuffle(x[:, keep_a:], masked_v)
        a = a + self.decoder_pos_embed_a + self.decoder_modality_a
        v = v + self.decoder_pos_embed_v + self.decoder_modality_v
        x = torch.cat([a, v], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred_a(x[:, :n_a]), self.decoder_pred_v(x[:, n_a:])

    def forward_loss(self, audio, frames, pred_a, pred_v, mask_a, mask_v) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.cfg.patch_size
        target_a = patchify(audio_to_image(audio), p)
        target_v = patchify(frames, p)
        return (
            reconstruction_loss(pred_a, target_a, mask_a, self.cfg.norm_pix_loss),
            reconstruction_loss(pred_v, target_v, mask_v, self.cfg.norm_pix_loss),
        )

    def forward(
        self,
        audio: torch.Tensor,
        frames: torch.Tensor,
        mask_ratio_a: float | None = None,
        mask_ratio_v: float | None = None,
        mask_mode: str | None = None,
        return_outputs: bool = False,
        return_embeddings: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The named losses (see the class). ``return_outputs``: also ``pred_a``, ``pred_v`` and the masks
        ``mask_a``, ``mask_v``. ``return_embeddings``: also ``emb_a``, ``emb_v`` [B, D], the retrieval embeddings
        of the unmasked input (what :meth:`embed` returns), from the pass the contrastive loss already ran when
        ``model.contrast_mask_ratio`` is 0. The contrastive embeddings come from the reconstruction pass's modality
        streams when ``model.contrast_mask_ratio`` equals both reconstruction mask ratios, else from a pass of their
        own at that ratio. Each stream runs only when a loss (or a requested output) needs it."""
        cfg = self.cfg
        ratio_a = cfg.mask_ratio_a if mask_ratio_a is None else mask_ratio_a
        ratio_v = cfg.mask_ratio_v if mask_ratio_v is None else mask_ratio_v
        mask_mode = mask_mode or cfg.mask_mode
        c_ratio = cfg.contrast_mask_ratio
        shared_pass = c_ratio == ratio_a and c_ratio == ratio_v
        contrast = cfg.contrast_weight != 0
        if cfg.rec_weight != 0 or (contrast and shared_pass):  # the reconstruction pass's masked streams
            a, v, masked_a, masked_v = self.forward_encoder(audio, frames, ratio_a, ratio_v, mask_mode)
        out: dict[str, torch.Tensor] = {}
        zero = audio.new_zeros(())
        rec_a = rec_v = loss_c = acc_c = zero
        if cfg.rec_weight != 0:  # reconstruction: the joint stream of the kept tokens
            pred_a, pred_v = self.forward_decoder(self.joint_stream(a, v), masked_a, masked_v)
            rec_a, rec_v = self.forward_loss(audio, frames, pred_a, pred_v, masked_a.mask, masked_v.mask)
            if return_outputs:
                out.update(pred_a=pred_a, pred_v=pred_v, mask_a=masked_a.mask, mask_v=masked_v.mask)
        unmasked = None  # (emb_a, emb_v) [B, D] each: the unmasked modality streams, pooled
        if return_embeddings or (contrast and c_ratio == 0 and not shared_pass):
            unmasked = (
                self.pool(self.audio_stream(self.encode_audio(audio))),
                self.pool(self.video_stream(self.encode_video(frames))),
            )  # a pass of their own over every token
            if return_embeddings:
                out.update(emb_a=unmasked[0], emb_v=unmasked[1])
        loss_rec = rec_a + rec_v
        loss = cfg.rec_weight * loss_rec
        if contrast:
            if shared_pass:  # the modality streams of the reconstruction pass's kept tokens
                emb_a, emb_v = self.pool(self.audio_stream(a)), self.pool(self.video_stream(v))
            elif c_ratio == 0:
                emb_a, emb_v = unmasked
            else:  # a masked pass of its own at the contrastive ratio (e.g. TG-DP's 0.5)
                ca = random_masking(self.tokens_a(audio), c_ratio, mask_mode, cfg.audio_grid).tokens
                cv = random_masking(self.tokens_v(frames), c_ratio).tokens
                emb_a = self.pool(self.audio_stream(self.modality_stack(ca, "a")))
                emb_v = self.pool(self.video_stream(self.modality_stack(cv, "v")))
            if self.contrast_group and self.training:
                loss_c, acc_c = grouped_info_nce(
                    emb_a, emb_v, self.contrast_group, cfg.temperature, cfg.symmetric_contrast, self.gather_contrast
                )
            else:
                loss_c, acc_c = info_nce(emb_a, emb_v, cfg.temperature, cfg.symmetric_contrast, self.gather_contrast)
            loss = loss + cfg.contrast_weight * loss_c
        out.update(
            loss=loss,
            loss_rec=loss_rec,
            loss_rec_a=rec_a,
            loss_rec_v=rec_v,
            loss_c=loss_c,
            acc_c=acc_c,
        )
        return out

    @torch.no_grad()
    def embed(self, audio: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieval features of the unmasked input, not L2-normalised, each [B, dim]: the global tokens' outputs
        (norm_a / norm_v) with model.global_tokens (the public Sync ``forward_feat``'s cls_a, cls_v), else the
        modality streams mean-pooled."""
        return self.embed_audio(audio), self.embed_video(frames)

    @torch.no_grad()
    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.pool(self.audio_stream(self.encode_audio(audio)))

    @torch.no_grad()
    def embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self.pool(self.video_stream(self.encode_video(frames)))
